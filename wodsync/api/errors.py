"""Domain errors turned into HTTP answers, in one place.

Why here: the session service, the store and the webhook parser raise errors that say what
went wrong, never an HTTP status; which status and body a client gets is the API's decision,
made once for every route by the exception handlers `install` registers. No route builds an
error answer of its own: it raises, and `answer` maps the exception's type (the nearest class
in `ANSWERS` along its MRO) to a status, a body and headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from wodsync.api.models import Problem, SessionRef
from wodsync.badges.keys import BadgesNotConfigured
from wodsync.sessions.service import (
    BadLocation,
    CannotCheck,
    ChecksFailed,
    CreateFailed,
    Duplicate,
    HostNotApplied,
    NoSeat,
    SessionError,
    UnknownWorkshop,
)
from wodsync.source.revision import NotDeployed
from wodsync.source.webhook import WebhookError
from wodsync.store import (
    BadgeNotFound,
    ExtensionRefused,
    InvalidTransition,
    KeyUnavailable,
    PasswordUnreadable,
    SessionNotFound,
    StoreError,
)


class Unauthorized(Exception):
    """No bearer token, or not the one configured."""


class Forbidden(Exception):
    """A valid token whose role may not do what was asked (a portal token asking a PURGE)."""


class NotConfigured(Exception):
    """The token a route needs is not configured: the route is unavailable, never open."""


class BadSignature(Exception):
    """A webhook delivery without GitHub's valid signature: nothing is fetched."""


class NotReady(Exception):
    """The readiness probe's refusal: the store does not answer, or nothing is deployed."""


def _problem(exc: BaseException) -> dict[str, Any]:
    """`{detail, session}`: the session a refusal is about, its id and state only."""
    session = getattr(exc, "session", None)
    ref = SessionRef(id=session.id, state=session.state.value) if session else None
    return Problem(detail=str(exc), session=ref).model_dump(mode="json")


def _detail(exc: BaseException) -> dict[str, Any]:
    return {"detail": str(exc)}


def _not_ready(exc: BaseException) -> dict[str, Any]:
    return {"ready": False, "reason": str(exc)}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Callable[[BaseException], dict[str, Any]] = _problem
    headers: dict[str, str] = field(default_factory=dict)


ANSWERS: dict[type[Exception], Answer] = {
    # sessions
    UnknownWorkshop: Answer(404),
    BadLocation: Answer(422),
    NoSeat: Answer(409),
    Duplicate: Answer(409),
    CreateFailed: Answer(502),
    CannotCheck: Answer(409),
    ChecksFailed: Answer(502),
    HostNotApplied: Answer(503),
    SessionError: Answer(400),
    NotDeployed: Answer(503),
    # the store
    SessionNotFound: Answer(404),
    InvalidTransition: Answer(409),
    ExtensionRefused: Answer(409),
    KeyUnavailable: Answer(500),
    PasswordUnreadable: Answer(500),
    StoreError: Answer(409),
    # badges (their public pages and signed assertions)
    BadgeNotFound: Answer(404, _detail),
    BadgesNotConfigured: Answer(503, _detail),
    # access and the daemon's endpoints
    Unauthorized: Answer(401, _detail, {"WWW-Authenticate": "Bearer"}),
    Forbidden: Answer(403, _detail),
    NotConfigured: Answer(503, _detail),
    BadSignature: Answer(401, _detail),
    WebhookError: Answer(400, _detail),
    NotReady: Answer(503, _not_ready),
}


def answer(exc: BaseException) -> JSONResponse:
    """The answer to `exc`, by the nearest of its classes in `ANSWERS`."""
    found = next(ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS)
    return JSONResponse(found.body(exc), found.status, headers=found.headers or None)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return answer(exc)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 listing what is wrong — where and why, without echoing the input (it may be a
    password, or NaN, which JSON cannot even carry)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                     "type": e.get("type", "")} for e in errors]}, 422)


def install(app: FastAPI) -> None:
    """Register the handlers: every type of `ANSWERS`, and the 422 of a malformed request."""
    for exc_type in ANSWERS:
        app.add_exception_handler(exc_type, _handle)
    app.add_exception_handler(RequestValidationError, invalid_request)
