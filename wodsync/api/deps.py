"""What routes depend on, as FastAPI dependencies: the store, the session service, the daemon,
and the bearer tokens that guard them.

Why dependencies: a route names what it needs (`store: StoreDep`, `Depends(api_token)`) and
never where it comes from; the application carries one `Context` (`app.state.context`), built
by `wodsync serve`, the daemon's wiring or a test. Tokens are read when a request comes (a
rotated secret applies at once) and compared in constant time; a route whose token is not
configured is unavailable (503), never open.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from wodsync.api.errors import NotConfigured, Unauthorized
from wodsync.daemon.loop import Daemon
from wodsync.daemon.views import API_TOKEN, FACTS_TOKEN
from wodsync.sessions.service import SessionService
from wodsync.source.webhook import Deliveries
from wodsync.store import Store

WEBHOOK_SECRET = "WODSYNC_WEBHOOK_SECRET"

Token = Callable[[], str | None]


def from_environment(variable: str) -> Token:
    """A token read from the process environment at each request."""
    return lambda: os.environ.get(variable)


@dataclass
class Context:
    """Everything the routes may need. `sessions` is there for the session API (`serve`, the
    daemon), `daemon` for the daemon's own endpoints; `known_secrets` gives the secret values
    published facts are checked against; `deliveries` the webhook deliveries seen."""

    store: Store
    sessions: SessionService | None = None
    daemon: Daemon | None = None
    api_token: Token = field(default_factory=lambda: from_environment(API_TOKEN))
    facts_token: Token = field(default_factory=lambda: from_environment(FACTS_TOKEN))
    webhook_secret: Token = field(default_factory=lambda: from_environment(WEBHOOK_SECRET))
    known_secrets: Callable[[], Iterable[str]] = tuple
    deliveries: Deliveries = field(default_factory=Deliveries)


def context(request: Request) -> Context:
    found: Context = request.app.state.context
    return found


def store(request: Request) -> Store:
    return context(request).store


def sessions(request: Request) -> SessionService:
    service = context(request).sessions
    assert service is not None, "session routes are mounted only with a session service"
    return service


def daemon(request: Request) -> Daemon:
    found = context(request).daemon
    assert found is not None, "daemon routes are mounted only with a daemon"
    return found


def daemon_if_any(request: Request) -> Daemon | None:
    """The daemon, for a route that also serves without one (status from the store alone)."""
    return context(request).daemon


ContextDep = Annotated[Context, Depends(context)]
StoreDep = Annotated[Store, Depends(store)]
SessionsDep = Annotated[SessionService, Depends(sessions)]
DaemonDep = Annotated[Daemon, Depends(daemon)]
MaybeDaemonDep = Annotated["Daemon | None", Depends(daemon_if_any)]


def _bearer(request: Request, expected: str) -> None:
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("a valid bearer token is needed")


def api_token(request: Request) -> None:
    """`Authorization: Bearer <WODSYNC_API_TOKEN>`: sessions, status, a manual reconcile."""
    expected = context(request).api_token()
    if not expected:
        raise NotConfigured(f"no API token is configured ({API_TOKEN})")
    _bearer(request, expected)


def facts_token(request: Request) -> None:
    """`Authorization: Bearer <WODSYNC_FACTS_TOKEN>`: the read-only facts CI previews use."""
    expected = context(request).facts_token()
    if not expected:
        raise NotConfigured(f"no token is configured ({FACTS_TOKEN})")
    _bearer(request, expected)


class AuthFirst(APIRoute):
    """A route that checks the API token before FastAPI reads and validates the body: an
    unauthenticated client gets a 401 whatever it sent, never a 422 about its JSON. The
    refusal is raised, so the exception handlers answer it like any other."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            api_token(request)
            answer: Response = await handler(request)
            return answer

        return guarded
