"""What a participant's forms and clicks do: register, confirm, extend, unregister.

Why apart from the routes: the rules (screening, rate limits, one live session, the
self-service extension cap) are decided here and answered as a `Refusal` in words a
participant understands; the routes only turn requests into calls and results into pages.
Every seat is taken by `SessionService.create`, at the click on a confirmation link — never
by the form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from wodsync.catalog.models import PortalFile, Workshop
from wodsync.portal import mail
from wodsync.portal.links import Links, links_of
from wodsync.portal.screening import Refusal, clean_text, fold, rate, screen, span
from wodsync.sessions.service import (
    CreateFailed,
    Duplicate,
    NoSeat,
    SessionService,
    UnknownWorkshop,
)
from wodsync.source.revision import NotDeployed
from wodsync.store import (
    ExtensionRefused,
    InvalidTransition,
    Participant,
    Session,
    SessionNotFound,
    SessionState,
    Store,
)
from wodsync.store.models import PERSON_STATES, utcnow
from wodsync.store.registrations import (
    Limit,
    LiveElsewhere,
    RateLimited,
    Registration,
    RegistrationNotFound,
)

NAME_CHARS = 200


class NotFound(Exception):
    """A link that is not one of ours (unknown, tampered, another kind): a plain 404."""


class Expired(Exception):
    """A confirmation link past its time; `registration` says which workshop it was for."""

    def __init__(self, registration: Registration) -> None:
        super().__init__("this confirmation link has expired")
        self.registration = registration


def time_left(until: datetime | None, now: datetime | None = None) -> str:
    """`1 h 20 min`, `5 min`, `less than a minute`."""
    if until is None:
        return ""
    minutes = int((until - (now or utcnow())).total_seconds() // 60)
    if minutes < 1:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    return " ".join(p for p in (f"{hours} h" if hours else "",
                                f"{minutes} min" if minutes else "") if p)


@dataclass
class Portal:
    """The portal's decisions over one session service (its store and deployed catalog)."""

    service: SessionService

    @property
    def store(self) -> Store:
        return self.service.store

    @cached_property
    def links(self) -> Links:
        return links_of(self.store)

    def settings(self) -> PortalFile:
        return self.service.deployment().catalog.portal

    def workshop(self, key: str) -> Workshop | None:
        """The workshop `key` if it is open for registration."""
        try:
            found = self.service.deployment().catalog.workshops.get(key)
        except NotDeployed:
            return None
        return found if found is not None and found.active else None

    def title(self, key: str) -> str:
        found = self.workshop(key)
        return found.name if found else key

    # ---- the form ---------------------------------------------------------------------------

    def register(self, workshop: str, name: str, email: str, company: str, accepted: bool,
                 client: str) -> Registration:
        """A registration and its confirmation mail, or a Refusal saying why not."""
        settings = self.settings()
        ws = self.workshop(workshop)
        if ws is None:
            raise Refusal("This workshop is not open for registration.", "unknown")
        name, company = clean_text(name, NAME_CHARS), clean_text(company, NAME_CHARS)
        if not name:
            raise Refusal("Please give your name: it is on your badge.")
        if not accepted:
            raise Refusal("Please accept the terms to register.")
        self._count_attempt(settings, email, client)
        screened = screen(settings, email)
        if self._seats_left(workshop, ws) < 1:
            raise Refusal(f"{ws.name} is full right now. Seats come free as sessions end: "
                          "please try again later.", "taken")
        if self.service.deployment().catalog.mail is None:
            raise Refusal("Registrations are closed: this portal cannot send mail yet.", "closed")
        try:
            return self.store.registrations.register(
                workshop=workshop, name=name, email=screened.email, company=company,
                email_key=screened.key, client=client, ttl=span(settings.confirm_ttl),
                one_live=settings.one_live_session, enqueue=mail.enqueue_confirm)
        except LiveElsewhere as exc:
            raise Refusal(self.live_message(exc.session), "taken", exc.session) from None

    def _count_attempt(self, settings: PortalFile, email: str, client: str) -> None:
        per_address = Limit(*rate(settings.rate_limit.per_address))
        per_client = Limit(*rate(settings.rate_limit.per_client))
        try:
            self.store.registrations.attempt(fold(email), client, per_address, per_client)
        except RateLimited as exc:
            who = "this e-mail address" if exc.scope == "address" else "your network"
            raise Refusal(f"There were too many registrations from {who} lately. Please try "
                          f"again in {time_left(exc.retry_at) or 'a minute'}.", "limited") from None

    def _seats_left(self, key: str, ws: Workshop) -> int:
        return ws.capacity - self.store.sessions.live_per_workshop().get(key, 0)

    def live_message(self, session: Session) -> str:
        title = self.title(session.workshop)
        if session.state is SessionState.ACTIVE and session.ends_at is not None:
            when = f"it ends in {time_left(session.ends_at)}"
        else:
            when = "it is not over yet"
        return (f"You already have a live workshop, {title}; {when}. Come back then, or "
                "unregister from it on its page (the link is in the mail we sent you).")

    # ---- the confirmation link ---------------------------------------------------------------

    def confirm(self, token: str) -> Session:
        """The session a confirmation link leads to: created at the first click, the same one
        at every later click. Raises NotFound, Expired or a Refusal."""
        ident = self.links.check("confirm", token)
        if ident is None:
            raise NotFound(token)
        try:
            registration = self.store.registrations.get(ident)
        except RegistrationNotFound:
            raise NotFound(token) from None
        if registration.session_id is None:
            if registration.expired(utcnow()):
                raise Expired(registration)
            registration = self.store.registrations.confirmed(
                registration.id, self._create(registration).id)
        assert registration.session_id is not None
        return self.store.sessions.get(registration.session_id)

    def _create(self, registration: Registration) -> Session:
        key = registration.email_key if self.settings().one_live_session else None
        participant = Participant(registration.name, registration.email, registration.company,
                                  key)
        try:
            return self.service.create(registration.workshop, participant).session
        except Duplicate as exc:
            held = exc.session
            if held is not None and held.workshop == registration.workshop \
                    and fold(held.email) == registration.email_key:
                if held.state in PERSON_STATES:
                    return held  # the same person's session of this workshop: the same page
                raise Refusal("Your previous seat in this workshop is still being reset. "
                              "Please try the link again in a few minutes.", "taken") from None
            raise Refusal(self.live_message(held) if held else str(exc), "taken") from None
        except UnknownWorkshop:
            raise Refusal("This workshop is no longer open for registration.", "gone") from None
        except NoSeat:
            raise Refusal("No seat of this workshop is free right now. Seats come free as "
                          "sessions end: please register again later.", "taken") from None
        except CreateFailed:
            raise Refusal("We could not prepare your seat. Nothing is kept of it: please "
                          "register again (we have told the operators).", "failed") from None

    # ---- the session page ------------------------------------------------------------------

    def session(self, token: str) -> Session:
        """The session a page link names, or NotFound."""
        ident = self.links.check("session", token)
        if ident is None:
            raise NotFound(token)
        try:
            return self.store.sessions.get(ident)
        except SessionNotFound:
            raise NotFound(token) from None

    def extension_left(self, session: Session) -> float:
        """Hours the participant may still add themselves (0 when not running)."""
        if session.state is not SessionState.ACTIVE or session.ends_at is None \
                or session.started_at is None:
            return 0.0
        used = (session.ends_at - session.started_at) / timedelta(hours=1) \
            - session.duration_hours
        return max(0.0, self._extension_cap() - used)

    def _extension_cap(self) -> float:
        return min(self.settings().extend.max_hours, self.service.max_extension_hours)

    def extend(self, session: Session) -> Session:
        """One step of self-service extension, within the portal's and the service's caps."""
        step = self.settings().extend.step_hours
        if session.state is not SessionState.ACTIVE:
            raise Refusal("Only a running workshop can be extended.", "taken")
        left = self.extension_left(session)
        if left + 1e-9 < step:
            raise Refusal(f"This workshop cannot be extended any more: it allows "
                          f"{self._extension_cap():g} h of extra time in all.", "taken")
        try:
            return self.store.sessions.extend(session.id, step, session.duration_hours
                                              + self._extension_cap())
        except ExtensionRefused:
            raise Refusal("This workshop cannot be extended any more.", "taken") from None

    def unregister(self, session: Session) -> Session:
        """CLEANUP, as when the time is up: the seat is released and the page shows the end."""
        if session.state is not SessionState.ACTIVE:
            return session
        try:
            return self.service.cleanup(session.id)
        except InvalidTransition:
            return self.store.sessions.get(session.id)

    def replay(self, key: str) -> str | None:
        """The video of the workshop's replay, if it has an active one."""
        ws = self.service.deployment().catalog.workshops.get(key)
        if ws is None or ws.replay is None:
            return None
        return next((r.video for r in self.service.deployment().catalog.replays
                     if r.id == ws.replay and r.active), None)

    def feedback(self) -> str | None:
        """Where to give feedback, as the mails say it: the mail settings' `feedback_url`,
        else the catalog's `SURVEYURL` variable (WoD's)."""
        catalog = self.service.deployment().catalog
        survey = catalog.variables.get("SURVEYURL")
        return (catalog.mail.feedback_url if catalog.mail else None) or \
            (survey if isinstance(survey, str) else None)

    def view(self, session: Session) -> dict[str, Any]:
        """What the session page shows of `session`: credentials only while it runs."""
        running = session.state is SessionState.ACTIVE
        return {
            "session": session, "title": self.title(session.workshop),
            "running": running, "hub_url": self.service.hub_url(session) if running else None,
            "username": session.username if running else None,
            "password": session.password if running else None,
            "time_left": time_left(session.ends_at) if running else "",
            "ends_at": session.ends_at.isoformat() if running and session.ends_at else "",
            "extension_left": self.extension_left(session),
            "step_hours": self.settings().extend.step_hours,
            "replay": self.replay(session.workshop),
            "feedback": self.feedback(),
        }
