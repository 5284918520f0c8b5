"""The daemon's own endpoints, served by the session API's application.

- `POST /hooks/git`: GitHub's push event, signed with `X-Hub-Signature-256` (HMAC-SHA256 with
  `WODSYNC_WEBHOOK_SECRET`, compared in constant time). A missing or bad signature is a 401 and
  nothing is fetched; `ping` is a 200; a push to the followed branch fetches at once (202). A
  delivery accepted before (same `X-GitHub-Delivery` or same body) is a 200 that fetches
  nothing, and so is, with 202, a delivery naming another repository (`names_followed`).
- `POST /api/v1/reconcile` (the API token): fetch and reconcile every host now (`manual`).
- `/readyz`: the store answers and a revision is deployed (200), else 503 with the reason.
- `/metrics`: Prometheus exposition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from wodsync.daemon.loop import Daemon
from wodsync.daemon.metrics import CONTENT_TYPE
from wodsync.source.git import redact
from wodsync.source.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    Deliveries,
    WebhookError,
    WebhookEvent,
    named_repository,
    names_followed,
    parse_event,
    verify_signature,
)
from wodsync.store import Trigger

BODY_LIMITS = {"/hooks/": MAX_BODY_BYTES}
log = logging.getLogger("wodsync.daemon")


def _duplicate(delivery: str | None, earlier: str) -> str:
    """`duplicate delivery <id> ignored`, saying which delivery it repeats when not its own."""
    this = (delivery or "").strip()[:200]
    if this and this == earlier:
        return f"duplicate delivery {this} ignored"
    first = f"delivery {earlier}" if earlier else "a delivery without an id"
    return f"duplicate delivery {this or '(no id)'} ignored: the same signed body as {first}"


def _answer(event: WebhookEvent, branch: str, followed: str) -> tuple[str, int, bool]:
    """What a new, signed, readable delivery gets: (detail, status, fetch now?)."""
    if event.type == "ping":  # set-up: say at once when the hook's repository is not followed
        if not event.names or names_followed(event, followed):
            return "pong", 200, False
        return (f"pong; but this daemon follows {redact(followed)}: pushes to "
                f"{named_repository(event)} will be ignored"), 200, False
    if event.type != "push":
        return "ignored: not a push to the followed branch", 202, False
    if not names_followed(event, followed):
        named = named_repository(event)
        detail = (f"ignored: a delivery {f'for {named}' if named else 'naming no repository'}"
                  f", not for the followed repository {redact(followed)}")
        log.warning("webhook: signed push %s", detail)
        return detail, 202, False
    if event.moves(branch):
        return f"fetching {branch}", 202, True
    return "ignored: not a push to the followed branch", 202, False


def daemon_router(daemon: Daemon, webhook_secret: Callable[[], str | None],
                  branch: str, auth: Callable[..., None]) -> APIRouter:
    router = APIRouter(tags=["daemon"])
    deliveries = Deliveries()
    followed = daemon.source.url

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
        delivery = request.headers.get(DELIVERY_HEADER)
        earlier = deliveries.repeat_of(delivery, body)
        if earlier is not None:
            log.info("webhook: %s", _duplicate(delivery, earlier))
            return JSONResponse({"detail": _duplicate(delivery, earlier)}, 200)
        detail, status, fetch = _answer(event, branch, followed)
        if fetch:
            daemon.poke(Trigger.WEBHOOK)
        return JSONResponse({"detail": detail}, status)

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
