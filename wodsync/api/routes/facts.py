"""`GET /api/v1/facts` (a facts token, the one CI holds for previews, or an operator's): the facts
last observed on each host, checked against the daemon's own secret values."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from wodsync.api.deps import ContextDep, facts_token
from wodsync.daemon.views import facts_view

router = APIRouter(prefix="/api/v1", tags=["daemon"], dependencies=[Depends(facts_token)])


@router.get("/facts")
def get_facts(ctx: ContextDep) -> dict[str, Any]:
    """The facts last observed on each host, without anything secret."""
    return facts_view(ctx.store, ctx.known_secrets())
