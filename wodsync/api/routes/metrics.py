"""`/metrics`: the daemon's Prometheus exposition (`wodsync.daemon.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from wodsync.api.deps import DaemonDep
from wodsync.daemon.metrics import CONTENT_TYPE

router = APIRouter(tags=["probes"])


@router.get("/metrics")
def metrics(daemon: DaemonDep) -> Response:
    return Response(daemon.metrics.exposition(), media_type=CONTENT_TYPE)
