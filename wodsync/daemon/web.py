"""The daemon's own endpoints, served by the session API's application.

- `POST /hooks/git`: GitHub's push event, signed with `X-Hub-Signature-256` (HMAC-SHA256 with
  `WODSYNC_WEBHOOK_SECRET`, compared in constant time). A missing or bad signature is a 401 and
  nothing is fetched; `ping` is a 200; a push to the followed branch fetches at once (202).
- `POST /api/v1/reconcile` (the API token): fetch and reconcile every host now (`manual`).
- `/readyz`: the store answers and a revision is deployed (200), else 503 with the reason.
- `/metrics`: Prometheus exposition.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from wodsync.daemon.loop import Daemon
from wodsync.daemon.metrics import CONTENT_TYPE
from wodsync.source.webhook import (
    EVENT_HEADER,
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    WebhookError,
    parse_event,
    verify_signature,
)
from wodsync.store import Trigger

BODY_LIMITS = {"/hooks/": MAX_BODY_BYTES}


def daemon_router(daemon: Daemon, webhook_secret: Callable[[], str | None],
                  branch: str, auth: Callable[..., None]) -> APIRouter:
    router = APIRouter(tags=["daemon"])

    @router.post("/api/v1/reconcile", status_code=202, dependencies=[Depends(auth)])
    def reconcile_now() -> dict[str, str]:
        """Fetch and reconcile every host now (trigger `manual`)."""
        daemon.poke(Trigger.MANUAL)
        return {"detail": "reconciling every host"}

    @router.post("/hooks/git", status_code=202)
    async def git_hook(request: Request) -> JSONResponse:
        secret = webhook_secret()
        body = await request.body()
        if not secret or not verify_signature(secret.encode(), body,
                                              request.headers.get(SIGNATURE_HEADER)):
            return JSONResponse({"detail": "missing or bad X-Hub-Signature-256"}, 401)
        try:
            event = parse_event(request.headers.get(EVENT_HEADER), body)
        except WebhookError as exc:
            return JSONResponse({"detail": str(exc)}, 400)
        if event.kind == "ping":
            return JSONResponse({"detail": "pong"}, 200)
        if event.kind == "push" and event.moves(branch):
            daemon.poke(Trigger.WEBHOOK)
            return JSONResponse({"detail": f"fetching {branch}"}, 202)
        return JSONResponse({"detail": "ignored: not a push to the followed branch"}, 202)

    @router.get("/readyz", tags=["probes"])
    def readyz() -> JSONResponse:
        try:
            with daemon.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any database failure means not ready
            return JSONResponse({"ready": False, "reason": f"store: {type(exc).__name__}"}, 503)
        if daemon.deployed is None:
            return JSONResponse({"ready": False, "reason": "no valid revision deployed yet"},
                                503)
        return JSONResponse({"ready": True, "revision": daemon.deployed.sha})

    @router.get("/metrics", tags=["probes"])
    def metrics() -> Response:
        return Response(daemon.metrics.exposition(), media_type=CONTENT_TYPE)

    return router
