"""The HTTP API (FastAPI): sessions for the registration portal, and its public feed.

Writes and everything that shows a session need `Authorization: Bearer <WODSYNC_API_TOKEN>`
(compared in constant time, before the body is even parsed: a stranger learns nothing from a
malformed request); the workshop and replay feed is public and read-only. Bodies are capped
(`MAX_BODY`): a larger one is refused before it is read. Credentials travel only in answers to
authenticated clients about that very session, never in a refusal nor a log line. The daemon
serves its own endpoints (status, metrics, the git webhook) from this same application
(`extra` routers).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wodsync.api.models import (
    ExtendRequest,
    Problem,
    ReplayOut,
    SessionOut,
    SessionRef,
    SessionRequest,
    WorkshopOut,
)
from wodsync.sessions.service import SessionError, SessionService, hub_url
from wodsync.store import Participant, Session, SessionState, StoreError

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


def bearer(token: Callable[[], str | None]) -> Callable[..., None]:
    """A dependency checking `Authorization: Bearer <token>` in constant time."""
    def check(request: Request) -> None:
        expected = token()
        if not expected:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                "no API token is configured (WODSYNC_API_TOKEN)")
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(),
                                                                 expected.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is needed",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


def auth_first(check: Callable[[Request], None]) -> type[APIRoute]:
    """Routes that check the bearer token before FastAPI reads and validates the body: an
    unauthenticated client gets a 401 whatever it sent, never a 422 about its JSON."""

    class AuthFirst(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    check(request)
                except HTTPException as exc:
                    return JSONResponse({"detail": exc.detail}, exc.status_code,
                                        headers=exc.headers)
                return await handler(request)
            return guarded

    return AuthFirst


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 listing what is wrong — where and why, without echoing the input (it may be a
    password, or NaN, which JSON cannot even carry)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                     "type": e.get("type", "")} for e in errors]}, 422)


def _problem(exc: SessionError | StoreError) -> JSONResponse:
    code = getattr(exc, "status", 409)
    if type(exc).__name__ == "SessionNotFound":
        code = 404
    elif type(exc).__name__ in ("InvalidTransition", "ExtensionRefused"):
        code = 409
    session = getattr(exc, "session", None)
    body = Problem(detail=str(exc), session=SessionRef(id=session.id, state=session.state.value)
                   if session else None)
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


def _ended(service: SessionService, session: Session) -> JSONResponse:
    """200 with the session once its seat is released (or held for RESET); 202 while the
    release is pending on its host (queued: retried until the host has done it)."""
    code = 202 if session.state is SessionState.RELEASING else 200
    return JSONResponse(_out(service, session).model_dump(mode="json"), status_code=code)


def _out(service: SessionService, s: Session, credentials: bool = True,
         history: bool = False) -> SessionOut:
    catalog = service.deployment().catalog
    url = hub_url(catalog, s.host) if s.host in catalog.hosts else None
    events = service.store.sessions.events(s.id) if history else []
    return SessionOut.of(s, url, events, credentials)


def session_router(service: SessionService, auth: Callable[..., None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["sessions"], dependencies=[Depends(auth)],
                       route_class=auth_first(auth),
                       responses={401: {"model": Problem}, 404: {"model": Problem},
                                  409: {"model": Problem}})

    @router.post("/sessions", status_code=201, response_model=SessionOut)
    def create_session(body: SessionRequest) -> Any:
        """CREATE: a seat, its workshop, its password and a pre-started server."""
        p = body.participant
        try:
            created = service.create(body.workshop, Participant(p.name, p.email, p.company),
                                     body.location)
        except (SessionError, StoreError) as exc:
            return _problem(exc)
        out = _out(service, created.session)
        return JSONResponse(out.model_dump(mode="json"), status_code=201)

    @router.get("/sessions/{session_id}", response_model=SessionOut)
    def get_session(session_id: str) -> Any:
        try:
            return _out(service, service.store.sessions.get(session_id), history=True)
        except StoreError as exc:
            return _problem(exc)

    @router.delete("/sessions/{session_id}", response_model=SessionOut,
                   responses={202: {"model": SessionOut}})
    def cleanup_session(session_id: str) -> Any:
        """CLEANUP, as when the session's time is up: 200 once the host released the seat (or
        holds it for RESET), 202 when the release is pending and queued."""
        try:
            return _ended(service, service.cleanup(session_id))
        except (SessionError, StoreError) as exc:
            return _problem(exc)

    @router.post("/sessions/{session_id}/reset", response_model=SessionOut,
                 responses={202: {"model": SessionOut}})
    def reset_session(session_id: str) -> Any:
        """RESET of a held seat (a `reset: true` workshop); 202 when pending."""
        try:
            return _ended(service, service.reset(session_id))
        except (SessionError, StoreError) as exc:
            return _problem(exc)

    @router.post("/sessions/{session_id}/purge", response_model=SessionOut,
                 responses={202: {"model": SessionOut}})
    def purge_session(session_id: str) -> Any:
        """PURGE, the forced end from any state (no hook); 202 when pending."""
        try:
            return _ended(service, service.purge(session_id, "purged through the API"))
        except (SessionError, StoreError) as exc:
            return _problem(exc)

    @router.post("/sessions/{session_id}/extend", response_model=SessionOut)
    def extend_session(session_id: str, body: ExtendRequest) -> Any:
        try:
            return _out(service, service.extend(session_id, body.hours))
        except (SessionError, StoreError) as exc:
            return _problem(exc)

    return router


def feed_router(service: SessionService) -> APIRouter:
    """The portal's public, read-only feed."""
    router = APIRouter(prefix="/api/v1", tags=["portal"])

    @router.get("/workshops", response_model=list[WorkshopOut])
    def workshops() -> Any:
        catalog = service.deployment().catalog
        live = service.store.sessions.live_per_workshop()
        return [WorkshopOut(key=k, title=w.name, description=w.description,
                            category=list(w.category), duration=w.duration,
                            session_type=w.session_type, workshop_image=w.workshop_image,
                            badge_image=w.badge_image, presenter=w.presenter, role=w.role,
                            avatar=w.avatar, replay=w.replay, location=w.location,
                            alternate_locations=list(w.alternate_locations),
                            capacity=w.capacity,
                            seats_left=max(0, w.capacity - live.get(k, 0)))
                for k, w in sorted(catalog.workshops.items(), key=lambda kv: (
                    kv[1].priority, kv[0])) if w.active]

    @router.get("/replays", response_model=list[ReplayOut])
    def replays() -> Any:
        catalog = service.deployment().catalog
        return [ReplayOut(id=r.id, title=r.title, description=r.description,
                          presenter=r.presenter, role=r.role, avatar=r.avatar, video=r.video,
                          workshop=r.workshop) for r in catalog.replays if r.active]

    return router


def create_app(service: SessionService, token: Callable[[], str | None],
               extra: Sequence[APIRouter] = (), body_limits: dict[str, int] | None = None,
               ) -> FastAPI:
    app = FastAPI(title="wodsync", version="1", docs_url="/docs", redoc_url=None,
                  description="Workshops-on-Demand sessions, the portal feed and the "
                              "reconciler's status.")
    app.add_middleware(NoStore)
    app.add_middleware(BodyLimit, limits=body_limits)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.include_router(session_router(service, bearer(token)))
    app.include_router(feed_router(service))
    for router in extra:
        app.include_router(router)

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return app
