"""What routes depend on, as FastAPI dependencies: the store, the session service, the daemon,
and the bearer tokens that guard them.

Why dependencies: a route names what it needs (`store: StoreDep`, `Depends(Allow(Role.PORTAL,
Role.OPERATOR, what=…))`) and never where it comes from; the application carries one `Context`
(`app.state.context`), built by `wodsync serve`, the daemon's wiring or a test. Each route
names the roles it accepts (`wodsync.tokens`); the tokens are the store's (several at once,
kept as digests, re-read every few seconds and on SIGHUP) and the legacy ones of the
environment or the secrets file, read when a request comes. A presented token is hashed and
compared in constant time; a route for which no token is configured is unavailable (503),
never open.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from wodsync.api.errors import Forbidden, NotConfigured, Unauthorized
from wodsync.daemon.loop import Daemon
from wodsync.daemon.views import API_TOKEN, FACTS_TOKEN
from wodsync.sessions.service import SessionService
from wodsync.source.webhook import Deliveries
from wodsync.store import Store
from wodsync.tokens import LEGACY, Caller, Known, Role, TokenBook, digest, match

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
    tokens: TokenBook | None = None  # default: the store's, re-read every few seconds

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = TokenBook(lambda: self.store.tokens.known())

    def token_book(self) -> TokenBook:
        assert self.tokens is not None, "set by __post_init__"
        return self.tokens


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


def _presented(request: Request) -> str:
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("a valid bearer token is needed")
    return given


def known_tokens(found: Context) -> list[Known]:
    """Every token valid now: the store's, then the legacy ones of the environment or the
    secrets file (`WODSYNC_API_TOKEN` as an operator, `WODSYNC_FACTS_TOKEN` as facts)."""
    legacy = [(API_TOKEN, found.api_token()), (FACTS_TOKEN, found.facts_token())]
    return [*found.token_book().known(), *(Known(name, LEGACY[name], digest(value))
                                     for name, value in legacy if value)]


class Allow:
    """A route's dependency naming the roles it accepts (`Depends(Allow(Role.PORTAL,
    Role.OPERATOR, what="create a session"))`): a request without a valid bearer token is a
    401, one whose token has another role a 403 naming the token, its role and the roles
    needed; no token of these roles configured at all is a 503 (the route is unavailable,
    never open). The caller (name and role, never the value) is kept on the request."""

    def __init__(self, *roles: Role, what: str) -> None:
        self.roles, self.what = frozenset(roles), what

    def __call__(self, request: Request) -> Caller:
        caller: Caller | None = getattr(request.state, "caller", None)
        if caller is None:
            known = known_tokens(context(request))
            if not any(k.role in self.roles for k in known):
                raise NotConfigured(f"no token may {self.what} here: make one with `wodsync "
                                    f"token new NAME --role {self._roles()}`"
                                    f"{self._legacy()}")
            caller = match(_presented(request), known)
            if caller is None:
                raise Unauthorized("a valid bearer token is needed")
            request.state.caller = caller
        if caller.role not in self.roles:
            raise Forbidden(f"token {caller.name!r} has the role {caller.role}, which may not "
                            f"{self.what}: that needs a token of the role {self._roles()}")
        return caller

    def _roles(self) -> str:
        return " or ".join(r.value for r in Role if r in self.roles)

    def _legacy(self) -> str:
        names = [name for name, role in LEGACY.items() if role in self.roles]
        return f" (or set {' or '.join(names)})" if names else ""


# The daemon's own endpoints (status, a manual reconcile) and the facts, as before the roles.
api_token = Allow(Role.OPERATOR, what="read the status or start a reconcile")
facts_token = Allow(Role.FACTS, Role.OPERATOR, what="read the facts")


class AuthFirst(APIRoute):
    """A route that checks its token (its `Allow` dependencies) before FastAPI reads and
    validates the body: an unauthenticated client gets a 401, a client of another role a 403,
    whatever it sent — never a 422 about its JSON. The refusal is raised, so the exception
    handlers answer it like any other."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        checks = [d.dependency for d in self.dependencies if isinstance(d.dependency, Allow)]
        assert checks, f"route {self.path} names no roles (an Allow dependency)"

        async def guarded(request: Request) -> Response:
            for check in checks:
                check(request)
            answer: Response = await handler(request)
            return answer

        return guarded
