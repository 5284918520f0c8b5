"""What crosses the HTTP API, as Pydantic models: requests are strict (unknown fields, a
malformed e-mail or an oversized value are a 422 that writes nothing), responses say exactly
what a client gets — credentials only where the client proved it holds the API token."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from wodsync.store import Session, SessionEvent

if TYPE_CHECKING:
    from wodsync.sessions.service import SessionService

EMAIL_RE = r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"  # noqa: E501
Email = Annotated[str, StringConstraints(pattern=EMAIL_RE, max_length=254)]
Line = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f]*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class ParticipantIn(Strict):
    name: Line = ""
    email: Email
    company: Line = ""


class SessionRequest(Strict):
    workshop: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    participant: ParticipantIn
    location: Annotated[str, StringConstraints(max_length=80)] | None = None


class ExtendRequest(Strict):
    hours: Annotated[float, Field(gt=0, le=168)]


class Credentials(BaseModel):
    username: str
    password: str


class Event(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str
    message: str
    output: str

    @classmethod
    def of(cls, e: SessionEvent) -> Event:
        return cls(at=e.at, from_state=e.from_state.value if e.from_state else None,
                   to_state=e.to_state.value, message=e.message, output=e.output)


class Release(BaseModel):
    """A release that did not finish (state `releasing`): what is retried, and when."""

    operation: str
    attempts: int
    next_attempt: datetime | None


class SessionOut(BaseModel):
    id: str
    workshop: str
    participant: ParticipantIn
    location: str
    host: str
    seat: int
    username: str  # the seat's account: not a secret, shown in lists (credentials are not)
    state: str
    created_at: datetime
    started_at: datetime | None
    ends_at: datetime | None
    ended_at: datetime | None
    completion: float | None
    revision: str
    error: str | None
    hub_url: str | None = None
    credentials: Credentials | None = None
    release: Release | None = None
    history: list[Event] = []
    score: int | None = None  # its checks at its CLEANUP (0-100)

    @classmethod
    def of(cls, s: Session, hub_url: str | None = None, history: Sequence[SessionEvent] = (),
           credentials: bool = False) -> SessionOut:
        return cls(id=s.id, workshop=s.workshop, location=s.location, host=s.host, seat=s.seat,
                   username=s.username,
                   participant=ParticipantIn.model_construct(name=s.name, email=s.email,
                                                             company=s.company),
                   state=s.state.value, created_at=s.created_at, started_at=s.started_at,
                   ends_at=s.ends_at, ended_at=s.ended_at, completion=s.completion,
                   revision=s.revision, error=s.error, hub_url=hub_url,
                   credentials=Credentials(username=s.username, password=s.password)
                   if credentials and s.live and s.password else None,
                   release=Release(operation=s.release_op or "purge",
                                   attempts=s.release_attempts,
                                   next_attempt=s.next_release_at)
                   if s.state.value == "releasing" else None,
                   history=[Event.of(e) for e in history], score=s.score)


class StepOut(BaseModel):
    """One check of a session: passed, and the student's message when it did not."""

    name: str
    points: int
    passed: bool
    message: str
    seconds: float


class ScoreOut(BaseModel):
    """`POST /api/v1/sessions/{id}/check`: passed points over all points (0-100), per step."""

    session: str
    score: int
    steps: list[StepOut]


class SessionPage(BaseModel):
    """One page of `GET /api/v1/sessions`: no credentials in a list (ask for the session)."""

    items: list[SessionOut]
    total: int
    offset: int
    limit: int


def session_out(service: SessionService, s: Session, credentials: bool = True,
                history: bool = False) -> SessionOut:
    """A session as the API and `wodsync session` show it: its hub by the deployed catalog,
    its credentials while live (`credentials`), its events (`history`)."""
    events = service.store.sessions.events(s.id) if history else []
    return SessionOut.of(s, service.hub_url(s), events, credentials)


class WorkshopOut(BaseModel):
    key: str
    title: str
    description: str
    category: list[str]
    duration: float
    session_type: str
    workshop_image: str | None
    badge_image: str | None
    presenter: str | None
    role: str | None
    avatar: str | None
    replay: int | None
    location: str
    alternate_locations: list[str]
    capacity: int
    seats_left: int


class ReplayOut(BaseModel):
    id: int
    title: str
    description: str
    presenter: str | None
    role: str | None
    avatar: str | None
    video: str
    workshop: str


class SessionRef(BaseModel):
    """The session a refusal is about: its id and state, never its credentials."""

    id: str
    state: str


class Problem(BaseModel):
    detail: str
    session: SessionRef | None = None
