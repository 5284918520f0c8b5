"""`/api/v1/sessions`: CREATE, list, show, CLEANUP, RESET, PURGE and EXTEND for the registration
portal and the operators.

Every route needs the API token, checked before the body is read (`AuthFirst`). Credentials
travel only in answers about that very session to a client holding the token, never in a
refusal (refusals are `wodsync.api.errors`' `{detail, session: {id, state}}`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from wodsync.api.deps import AuthFirst, SessionsDep
from wodsync.api.models import (
    ExtendRequest,
    Problem,
    SessionOut,
    SessionPage,
    SessionRequest,
    session_out,
)
from wodsync.sessions.service import SessionService
from wodsync.store import Participant, Session, SessionState

router = APIRouter(prefix="/api/v1", tags=["sessions"], route_class=AuthFirst,
                   responses={401: {"model": Problem}, 404: {"model": Problem},
                              409: {"model": Problem}})


def _ended(service: SessionService, session: Session) -> JSONResponse:
    """200 with the session once its seat is released (or held for RESET); 202 while the
    release is pending on its host (queued: retried until the host has done it)."""
    code = 202 if session.state is SessionState.RELEASING else 200
    return JSONResponse(session_out(service, session).model_dump(mode="json"),
                        status_code=code)


@router.post("/sessions", status_code=201, response_model=SessionOut)
def create_session(body: SessionRequest, service: SessionsDep) -> Any:
    """CREATE: a seat, its workshop, its password and a pre-started server."""
    p = body.participant
    created = service.create(body.workshop, Participant(p.name, p.email, p.company),
                             body.location)
    out = SessionOut.of(created.session, created.url, credentials=True)
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get("/sessions", response_model=SessionPage)
def list_sessions(service: SessionsDep, workshop: str | None = None,
                  state: SessionState | None = None, host: str | None = None,
                  email: str | None = None, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    """Sessions, oldest first, filtered (every filter given applies; e-mail ignores case) and
    paged; without credentials."""
    sessions = service.store.sessions
    found = sessions.find(state=state, workshop=workshop, host=host, email=email,
                          offset=offset, limit=limit)
    total = sessions.count(state=state, workshop=workshop, host=host, email=email)
    return SessionPage(items=[session_out(service, s, credentials=False) for s in found],
                       total=total, offset=offset, limit=limit)


@router.get("/sessions/{session_id}", response_model=SessionOut)
def get_session(session_id: str, service: SessionsDep) -> Any:
    return session_out(service, service.store.sessions.get(session_id), history=True)


@router.delete("/sessions/{session_id}", response_model=SessionOut,
               responses={202: {"model": SessionOut}})
def cleanup_session(session_id: str, service: SessionsDep) -> Any:
    """CLEANUP, as when the session's time is up: 200 once the host released the seat (or
    holds it for RESET), 202 when the release is pending and queued."""
    return _ended(service, service.cleanup(session_id))


@router.post("/sessions/{session_id}/reset", response_model=SessionOut,
             responses={202: {"model": SessionOut}})
def reset_session(session_id: str, service: SessionsDep) -> Any:
    """RESET of a held seat (a `reset: true` workshop); 202 when pending."""
    return _ended(service, service.reset(session_id))


@router.post("/sessions/{session_id}/purge", response_model=SessionOut,
             responses={202: {"model": SessionOut}})
def purge_session(session_id: str, service: SessionsDep) -> Any:
    """PURGE, the forced end from any state (no hook); 202 when pending."""
    return _ended(service, service.purge(session_id, "purged through the API"))


@router.post("/sessions/{session_id}/extend", response_model=SessionOut)
def extend_session(session_id: str, body: ExtendRequest, service: SessionsDep) -> Any:
    return session_out(service, service.extend(session_id, body.hours))
