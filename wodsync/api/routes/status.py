"""`GET /api/v1/status` (an operator token): the source's and every host's condition, the releases
pending and the last reconciliations — `wodsync.daemon.views.status_view`, as `wodsync status`
prints it from the store."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from wodsync.api.deps import MaybeDaemonDep, StoreDep, api_token
from wodsync.daemon.views import HISTORY_MAX, status_view
from wodsync.store.status import HISTORY_KEPT

router = APIRouter(prefix="/api/v1", tags=["daemon"], dependencies=[Depends(api_token)])


@router.get("/status")
def get_status(store: StoreDep, daemon: MaybeDaemonDep, host: str | None = None,
               limit: int = Query(HISTORY_KEPT, ge=1, le=HISTORY_MAX)) -> dict[str, Any]:
    """The repository, each host's condition, and the last reconciliations; `writer`: this
    daemon's role (`writer` or `standby`, since when, why) when a daemon serves it."""
    view = status_view(store, host, limit)
    if daemon is not None and daemon.role is not None:
        view["writer"] = daemon.role.to_json()
    return view
