"""`/api/v1/sessions`: CREATE, list, show, CLEANUP, RESET, PURGE, EXTEND and CHECK for the
registration portal and the operators.

Every route names the roles it accepts (`wodsync.tokens`), checked before the body is read
(`AuthFirst`): the portal's token may create, read, extend and clean up; RESET and PURGE need
an operator's. Credentials travel only in answers about that very session to a client holding
a token, never in a refusal (refusals are `wodsync.api.errors`' `{detail, session: {id,
state}}`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from wodsync.api.deps import Allow, AuthFirst, SessionsDep
from wodsync.api.models import (
    ExtendRequest,
    Problem,
    ScoreOut,
    SessionOut,
    SessionPage,
    SessionRequest,
    session_out,
)
from wodsync.sessions.service import SessionService
from wodsync.store import Participant, Session, SessionState
from wodsync.tokens import Role

router = APIRouter(prefix="/api/v1", tags=["sessions"], route_class=AuthFirst,
                   responses={401: {"model": Problem}, 403: {"model": Problem},
                              404: {"model": Problem}, 409: {"model": Problem}})


def portal(what: str) -> Any:
    """A route for the portal's token and the operators'."""
    return [Depends(Allow(Role.PORTAL, Role.OPERATOR, what=what))]


def operator(what: str) -> Any:
    """A route for the operators' tokens alone."""
    return [Depends(Allow(Role.OPERATOR, what=what))]


def _ended(service: SessionService, session: Session) -> JSONResponse:
    """200 with the session once its seat is released (or held for RESET); 202 while the
    release is pending on its host (queued: retried until the host has done it)."""
    code = 202 if session.state is SessionState.RELEASING else 200
    return JSONResponse(session_out(service, session).model_dump(mode="json"),
                        status_code=code)


@router.post("/sessions", status_code=201, response_model=SessionOut,
             dependencies=portal("create a session"))
def create_session(body: SessionRequest, service: SessionsDep) -> Any:
    """CREATE: a seat, its workshop, its password and a pre-started server."""
    p = body.participant
    created = service.create(body.workshop, Participant(p.name, p.email, p.company),
                             body.location)
    out = SessionOut.of(created.session, created.url, credentials=True)
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get("/sessions", response_model=SessionPage, dependencies=portal("list sessions"))
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


@router.get("/sessions/{session_id}", response_model=SessionOut,
            dependencies=portal("read a session"))
def get_session(session_id: str, service: SessionsDep) -> Any:
    return session_out(service, service.store.sessions.get(session_id), history=True)


@router.delete("/sessions/{session_id}", response_model=SessionOut,
               responses={202: {"model": SessionOut}},
               dependencies=portal("clean up a session"))
def cleanup_session(session_id: str, service: SessionsDep) -> Any:
    """CLEANUP, as when the session's time is up: 200 once the host released the seat (or
    holds it for RESET), 202 when the release is pending and queued."""
    return _ended(service, service.cleanup(session_id))


@router.post("/sessions/{session_id}/reset", response_model=SessionOut,
             responses={202: {"model": SessionOut}}, dependencies=operator("RESET a seat"))
def reset_session(session_id: str, service: SessionsDep) -> Any:
    """RESET of a held seat (a `reset: true` workshop); 202 when pending."""
    return _ended(service, service.reset(session_id))


@router.post("/sessions/{session_id}/purge", response_model=SessionOut,
             responses={202: {"model": SessionOut}}, dependencies=operator("PURGE a session"))
def purge_session(session_id: str, service: SessionsDep) -> Any:
    """PURGE, the forced end from any state (no hook); 202 when pending."""
    return _ended(service, service.purge(session_id, "purged through the API"))


@router.post("/sessions/{session_id}/extend", response_model=SessionOut,
             dependencies=portal("extend a session"))
def extend_session(session_id: str, body: ExtendRequest, service: SessionsDep) -> Any:
    return session_out(service, service.extend(session_id, body.hours))


@router.post("/sessions/{session_id}/check", response_model=ScoreOut,
             responses={502: {"model": Problem}}, dependencies=portal("check a session"))
def check_session(session_id: str, service: SessionsDep) -> Any:
    """Run the workshop's checks on the session's seat now: the score (passed points over all
    points, 0-100) and each step; 409 for a workshop without checks or a session not active."""
    scored = service.check(session_id)
    return ScoreOut(session=service.store.sessions.get(session_id).id, score=scored.score,
                    steps=[vars(s) for s in scored.steps])
