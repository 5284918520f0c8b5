"""The HTTP application (FastAPI): one for `wodsync serve` and the daemon.

`create_app` mounts the routes (`wodsync.api.routes`) that a `Context` can serve — sessions and
the portal's feed with a session service, the daemon's endpoints with a daemon — installs the
exception handlers that answer every domain error (`wodsync.api.errors`), and two middlewares:
bodies are capped (`MAX_BODY`, larger for the webhook: a larger one is refused before it is
read), and no answer is kept by a cache (they may carry credentials). Who may call what is in
`wodsync.api.deps`; credentials travel only in answers to authenticated clients about that very
session, never in a refusal nor a log line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wodsync.api import errors
from wodsync.api.deps import Context
from wodsync.api.routes import (
    badges,
    facts,
    health,
    metrics,
    portal,
    reconcile,
    register,
    session_page,
    sessions,
    status,
    webhook,
    wodapi,
)
from wodsync.portal.mail import install_links

MAX_BODY = 64 * 1024


class BodyLimit:
    """ASGI middleware: a body over the path's limit is a 413, declared or streamed. `limits`
    gives larger limits to path prefixes (a git push event can be large)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY,
                 limits: dict[str, int] | None = None) -> None:
        self.app, self.default, self.limits = app, limit, limits or {}

    def _limit(self, path: str) -> int:
        return next((n for prefix, n in self.limits.items() if path.startswith(prefix)),
                    self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        seen, over, started = 0, False, False

        async def limited() -> Message:
            """Past the limit the app is told the client left: it stops reading."""
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a body it never fully got is replaced below
            started = True
            await send(message)

        await self.app(scope, limited, guarded)
        if over and not started:
            await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail": "request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class NoStore(BaseHTTPMiddleware):
    """Answers may carry credentials: no cache keeps them."""

    async def dispatch(self, request: Request, call_next: Callable[..., Any]) -> Any:
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        return response


def routes_for(context: Context) -> list[APIRouter]:
    """What `context` can serve: sessions, the feed, the participant's pages (whose mailed
    links the mail renderer then builds) and the badges' public pages with a session service;
    the webhook, a manual reconcile, readiness, metrics, status and facts with a daemon;
    always `/healthz`."""
    found = []
    if context.sessions is not None:
        found += [sessions.router, portal.router, register.router, session_page.router,
                  badges.router]
        install_links()
    if context.daemon is not None:
        found += [reconcile.router, webhook.router, health.readiness, metrics.router,
                  status.router, facts.router]
    if context.sessions is not None:
        found.append(wodapi.router)  # after the others: its paths start with any prefix
    return [*found, health.router]


def create_app(context: Context, routes: Sequence[APIRouter] | None = None) -> FastAPI:
    """The application for `context`, with `routes` (default: `routes_for(context)`)."""
    app = FastAPI(title="wodsync", version="1", docs_url="/docs", redoc_url=None,
                  description="Workshops-on-Demand sessions, the portal feed and the "
                              "reconciler's status.")
    app.state.context = context
    app.add_middleware(NoStore)
    app.add_middleware(BodyLimit, limits=webhook.BODY_LIMITS)
    errors.install(app)
    for router in routes_for(context) if routes is None else routes:
        app.include_router(router)
    return app
