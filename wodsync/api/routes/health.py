"""Probes: `/healthz` (the process answers) and, for the daemon, `/readyz` (the store answers,
the daemon is the writer, a revision is deployed and the source has not been Stalled longer
than `not_ready_after`; else 503 with the reason).

Why the source counts, past a threshold: a daemon that cannot fetch (the remote moved, a
credential expired) or deploy (a full disk) still serves the last good revision, so a short
episode is no reason to take it out of a load balancer — a long one means merged work is not
reaching the hosts, and someone must look."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy import text

from wodsync.api.deps import DaemonDep, StoreDep
from wodsync.api.errors import NotReady
from wodsync.authoring.scrub import scrub
from wodsync.store import Condition

if TYPE_CHECKING:
    from wodsync.daemon.loop import Daemon

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
    _source_not_stalled(daemon)
    return {"ready": True, "revision": deployed.revision}


def _source_not_stalled(daemon: Daemon) -> None:
    source = daemon.source_state()
    if source is None or source.condition != Condition.STALLED or source.since is None:
        return
    stalled = (datetime.now(UTC) - source.since).total_seconds()
    limit = daemon.settings.not_ready_after
    if stalled > limit:
        raise NotReady(f"the source has been Stalled for {stalled:.0f} s (over {limit:g} s): "
                       f"{source.reason}: {scrub(source.message)}")
