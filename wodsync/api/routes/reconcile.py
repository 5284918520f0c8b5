"""`POST /api/v1/reconcile` (an operator token): fetch and reconcile every host now."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from wodsync.api.deps import DaemonDep, api_token
from wodsync.store import Trigger

router = APIRouter(tags=["daemon"])


@router.post("/api/v1/reconcile", status_code=202, dependencies=[Depends(api_token)])
def reconcile_now(daemon: DaemonDep) -> dict[str, str]:
    """Fetch and reconcile every host now (trigger `manual`)."""
    daemon.poke(Trigger.MANUAL)
    return {"detail": "reconciling every host"}
