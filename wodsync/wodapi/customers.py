"""WoD's customers (registrations) over the participant's journey: register, look up,
unregister.

Why over `Portal`: a registration made by wod-frontend's form must meet the very rules of
wodsync's own form — the screening, the rate limits, one live session per person, the
confirmation mail, the seat taken only at the click on its link, then the credentials mail —
so this module only translates. A customer is a registration made here (key `r:<id>`) or any
session whose person wod-frontend is told about (key `s:<id>`: the live session that stops a
second registration); its number is given once (`WodIds`).

wod-frontend's unregister dialog read the student's password (`GET /students/:id`) to compare
it in the browser; here the browser sends what the participant typed and the server compares
(in constant time, attempts counted by the portal's rate limits), and no answer carries a
password.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from wodsync.catalog.models import PortalFile
from wodsync.portal.journey import Portal
from wodsync.portal.screening import Refusal, rate
from wodsync.store import SessionNotFound, SessionState
from wodsync.store.registrations import Limit, RateLimited, Registration, RegistrationNotFound
from wodsync.store.sessions import Session
from wodsync.store.wodids import WodIds


class Unknown(Exception):
    """No such customer or student number."""


class Denied(Exception):
    """The credentials given do not open this customer's session."""


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    registration: Registration | None
    session: Session | None

    @property
    def workshop(self) -> str:
        if self.session is not None:
            return self.session.workshop
        return self.registration.workshop if self.registration else ""


@dataclass
class Customers:
    portal: Portal

    @property
    def ids(self) -> WodIds:
        return WodIds(self.portal.store.engine)

    def register(self, workshop: str, name: str, email: str, company: str, accepted: bool,
                 client: str) -> Customer:
        """The portal's registration (and its confirmation mail), numbered; a Refusal as the
        portal's, whose `session` is the person's live session when that is the reason."""
        registration = self.portal.register(workshop, name, email, company, accepted, client)
        return Customer(self.ids.id_of("customer", "r:" + registration.id), registration, None)

    def of_session(self, session: Session) -> Customer:
        """The customer a session is: its registration's when the portal made it."""
        registration = self.portal.store.registrations.of_session(session.id)
        key = "r:" + registration.id if registration else "s:" + session.id
        return Customer(self.ids.id_of("customer", key), registration, session)

    def get(self, ident: int) -> Customer:
        key = self.ids.key_of("customer", ident)
        if key is None:
            raise Unknown(ident)
        store = self.portal.store
        try:
            if key.startswith("s:"):
                return Customer(ident, None, store.sessions.get(key[2:]))
            registration = store.registrations.get(key[2:])
            session = store.sessions.get(registration.session_id) \
                if registration.session_id else None
        except (SessionNotFound, RegistrationNotFound):
            raise Unknown(ident) from None
        return Customer(ident, registration, session)

    def student_id(self, customer: Customer) -> int | None:
        """The number of the seat the customer's session has (none before the click)."""
        s = customer.session
        return None if s is None else self.ids.id_of("student", f"{s.host}/{s.seat}")

    def student(self, ident: int) -> tuple[str, str, bool]:
        """(username, location, assigned) of student number `ident`."""
        key = self.ids.key_of("student", ident)
        if key is None:
            raise Unknown(ident)
        host, seat = key.rsplit("/", 1)
        catalog = self.portal.service.deployment().catalog
        found = catalog.hosts.get(host)
        pool = catalog.pools.get(found.pool) if found else None
        if found is None or pool is None:
            raise Unknown(ident)
        taken = any(s.seat == int(seat) for s in self.portal.store.sessions.holding_seats(host))
        return f"{pool.prefix}{seat}", found.location, taken

    def unregister(self, customer: Customer, username: str, password: str,
                   client: str) -> Session:
        """CLEANUP of the customer's running session, if `username` and `password` are its
        seat's: Denied otherwise; a Refusal (limited) past the portal's rate limits."""
        session = customer.session
        if session is None or session.state is not SessionState.ACTIVE:
            raise Refusal("This registration has no running workshop to end.", "gone")
        self._count_attempt(self.portal.settings(), customer.id, client)
        if not _same(username, session.username) or not _same(password, session.password):
            raise Denied(customer.id)
        return self.portal.unregister(session)

    def _count_attempt(self, settings: PortalFile, ident: int, client: str) -> None:
        try:
            self.portal.store.registrations.attempt(
                f"unregister:{ident}", client, Limit(*rate(settings.rate_limit.per_address)),
                Limit(*rate(settings.rate_limit.per_client)))
        except RateLimited:
            raise Refusal("Too many attempts to unregister lately. Please try again later.",
                          "limited") from None


def _same(given: str, actual: str) -> bool:
    """Constant time, whatever the lengths (an empty stored password never matches)."""
    return bool(actual) and hmac.compare_digest(given.encode(), actual.encode())
