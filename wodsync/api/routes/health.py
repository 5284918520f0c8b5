"""Probes: `/healthz` (the process answers) and, for the daemon, `/readyz` (the store answers,
the daemon is the writer and a revision is deployed; else 503 with the reason)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from wodsync.api.deps import DaemonDep, StoreDep
from wodsync.api.errors import NotReady

router = APIRouter(tags=["probes"])
readiness = APIRouter(tags=["probes"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@readiness.get("/readyz")
def readyz(store: StoreDep, daemon: DaemonDep) -> dict[str, Any]:
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means not ready
        raise NotReady(f"store: {type(exc).__name__}") from None
    if daemon.role is not None and not daemon.role.writing:
        raise NotReady(f"standby: {daemon.role.reason}")
    deployed = daemon.current.peek()
    if deployed is None:
        raise NotReady("no valid revision deployed yet")
    return {"ready": True, "revision": deployed.revision}
