"""`POST /hooks/git`: GitHub's push event makes the daemon fetch at once.

Signed with `X-Hub-Signature-256` (HMAC-SHA256 with `WODSYNC_WEBHOOK_SECRET`, compared in
constant time): a missing or bad signature is a 401 and nothing is fetched; an unreadable
signed body a 400; `ping` is a 200; a push to the followed branch fetches at once (202). A
delivery accepted before (same `X-GitHub-Delivery` or same body) is a 200 that fetches nothing,
and so is, with 202, a delivery naming another repository (`names_followed`). The body is
capped at `MAX_BODY_BYTES` before it is read (`BODY_LIMITS`, for the application's middleware).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from wodsync.api.deps import ContextDep, DaemonDep
from wodsync.api.errors import BadSignature
from wodsync.source.git import redact
from wodsync.source.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    WebhookEvent,
    named_repository,
    names_followed,
    parse_event,
    verify_signature,
)
from wodsync.store import Trigger

BODY_LIMITS = {"/hooks/": MAX_BODY_BYTES}
log = logging.getLogger("wodsync.daemon")
router = APIRouter(tags=["daemon"])


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


@router.post("/hooks/git", status_code=202)
async def git_hook(request: Request, response: Response, ctx: ContextDep,
                   daemon: DaemonDep) -> dict[str, str]:
    secret = ctx.webhook_secret()
    body = await request.body()
    if not secret or not verify_signature(secret.encode(), body,
                                          request.headers.get(SIGNATURE_HEADER)):
        raise BadSignature(f"missing or bad {SIGNATURE_HEADER}")
    event = parse_event(request.headers.get(EVENT_HEADER), body)
    delivery = request.headers.get(DELIVERY_HEADER)
    earlier = ctx.deliveries.repeat_of(delivery, body)
    if earlier is not None:
        detail = _duplicate(delivery, earlier)
        log.info("webhook: %s", detail)
        response.status_code = 200
        return {"detail": detail}
    detail, status, fetch = _answer(event, daemon.source.branch, daemon.source.url)
    if fetch:
        daemon.poke(Trigger.WEBHOOK)
    response.status_code = status
    return {"detail": detail}
