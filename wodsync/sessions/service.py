"""The session lifecycle: CREATE, CLEANUP, RESET, PURGE, EXTEND, expiry and recovery.

A CREATE commits the session first — a seat and a capacity slot no other live session holds,
by the store's unique indexes — then sets the seat up on its host in one round trip over the
host's open connection (the CREATEs of a burst share round trips: `burst`). The workshop's
location is tried first, then its alternates in order, when no host there has a free seat in
the workshop's range or its hosts cannot be reached. A CREATE that fails on the host is released
there and the session is `failed` with the error; its seat returns to the pool — unless the
release itself could not finish (the host went away): the seat then waits, `releasing`, until
its host has released it, and the participant gets another. A seat the host records for
another session is never taken: that session is adopted and the CREATE picks another seat.

The end of a session (CLEANUP, RESET, PURGE) is `release`'s; the store's agreement with the
hosts' seat records is `adoption`'s. A process killed in the middle of any of it leaves the
session in a state `recover` turns into a release retried at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wodsync.agent.protocol import HostPayload, SeatCreateRequest
from wodsync.agent.protocol import Seat as SeatPayload
from wodsync.background import Background
from wodsync.badges.wiring import install as install_badges
from wodsync.catalog.loader import Catalog
from wodsync.engine.connections import Connections
from wodsync.engine.desired import LiveSeat
from wodsync.engine.remote import HostError
from wodsync.engine.transport import TransportError
from wodsync.render.content import new_password
from wodsync.render.seatvalues import hook_names, secret_values
from wodsync.sessions import checks, seat
from wodsync.sessions.adoption import Adopter, SyncReport
from wodsync.sessions.appliance import Appliances, ApplianceUnreachable, live_on_appliance
from wodsync.sessions.burst import Burst
from wodsync.sessions.liveupdate import LiveUpdate, Updated
from wodsync.sessions.release import Release, hook_outputs, retry_delay
from wodsync.source.revision import Deployment, NotDeployed
from wodsync.store import (
    AlreadyLive,
    Candidate,
    CapacityReached,
    InvalidTransition,
    NoFreeSeat,
    Participant,
    Session,
    SessionState,
    Store,
)
from wodsync.store.owners import LEASE_EVERY

EXPIRING_WINDOW = timedelta(hours=1)
DEFERRED_EVERY = 5.0     # seconds between two tries at the servers a busy hub deferred
MAX_EXTENSION_HOURS = 24.0
# Set (to anything): every end of a session in a call of its own, as before the ends burst —
# bench/sessions.py's comparison, never a setting of a deployment.
SINGLE_ENDS = "WODSYNC_BENCH_SINGLE_ENDS"
ENDS_AT_ONCE = 16  # sessions the expiry loop ends side by side (their host's calls shared)

_log = logging.getLogger("wodsync.sessions")


class SessionError(Exception):
    """A session operation cannot be done; the HTTP API says why with the status its type
    maps to (`wodsync.api.errors`), the CLI with one line."""

    def __init__(self, message: str, session: Session | None = None) -> None:
        super().__init__(message)
        self.session = session


class UnknownWorkshop(SessionError):
    """No such workshop, or not an active one."""


class BadLocation(SessionError):
    """The location asked for does not serve the workshop."""


class NoSeat(SessionError):
    """The workshop is at its capacity, or no seat is free anywhere it may go."""


class Duplicate(SessionError):
    """The participant already has a live session of the workshop (`session`)."""


class HostNotApplied(SessionError):
    """No host a CREATE may go to has applied a revision it could be made from yet (the
    daemon has just started, or the workshop is new and not applied there): try again soon."""


class CreateFailed(SessionError):
    """The host could not set the seat up: the session is `failed` (`session`)."""


class CannotCheck(SessionError):
    """The session cannot be checked: its workshop has no checks, or it is not active."""


class ChecksFailed(SessionError):
    """The host could not run the checks (unreachable, a seat no longer the session's)."""


@dataclass
class Created:
    session: Session
    url: str | None
    timings: dict[str, float] = field(default_factory=dict)   # on the host, per step
    seconds: float = 0.0                                       # the whole CREATE, here


def hub_url(catalog: Catalog, host_name: str) -> str | None:
    """Where the participant logs in: the host's hub (None for a host without a hub)."""
    return catalog.hosts[host_name].hub_url()


def _now() -> datetime:
    return datetime.now(UTC)


class SessionService:
    """Sessions from the deployment `deployment()` gives: the daemon's `Current` holder (which
    the source swaps), or a fixed one (`lambda: deployment`)."""

    def __init__(self, store: Store, deployment: Callable[[], Deployment],
                 connections: Connections | None = None,
                 max_extension_hours: float = MAX_EXTENSION_HOURS) -> None:
        self.store = store
        self.deployment = deployment
        # host → the deployment a CREATE on it is made from: with a daemon, the one that host
        # applied (`wodsync.daemon.applied`); None: `deployment()` for every host.
        self.host_deployment: Callable[[str], Deployment] | None = None
        install_badges(store, deployment)  # award rules, badges in ended mails and pages
        self.connections = connections or Connections()
        self.max_extension_hours = max_extension_hours
        self.burst = Burst(lambda name, host, payload: self.connections.call(
            name, host, "seat_create", payload))
        # the ends of sessions (CLEANUP, RESET, PURGE) burst too, in calls of their own
        self.ends = Burst(lambda name, host, payload: self.connections.call(
            name, host, "seat_end", payload))
        # Called with (event, session, seconds): "created" (seconds: the whole CREATE),
        # "cleaned", "expiring". Metrics and, later, notifications listen here.
        self.listeners: list[Callable[[str, Session, float | None], None]] = []
        self.adopter = Adopter(store, lambda: self.deployment().catalog, self._call)
        self.appliances = Appliances(self.connections)
        from wodsync.sessions.hotseats import HotSeatKeeper  # it reads this module's service

        self.hot = HotSeatKeeper(self)  # hot seats of scheduled events, taken first
        self.release = Release(store, self.deployment, self._call, self.adopter.adopt,
                               self._emit, self.appliances.release,
                               None if os.environ.get(SINGLE_ENDS) else self._end)
        self.live = LiveUpdate(store, lambda host: self._on_host(host, self.deployment()),
                               self._call)
        # hosts whose seat records the store has not been reconciled with since the start
        # (None: all of them, once a revision is deployed)
        self._unsynced: set[str] | None = None
        # Lifecycle mails, queued in the transaction of the move that causes them when the
        # deployed catalog has mail settings (`wodsync.mail.triggers`).
        from wodsync.mail.triggers import install as install_mail

        install_mail(store.sessions, self.mail_settings)

    def mail_settings(self) -> Any:
        """The deployed catalog's mail settings (`MailSettings`); None: mail is off (no
        `catalog/mail.yaml`, or nothing deployed yet)."""
        try:
            return self.deployment().catalog.mail
        except NotDeployed:
            return None

    def _call(self, name: str, op: str, payload: HostPayload) -> Any:
        """One agent round trip to a host of the deployed catalog."""
        return self.connections.call(name, self.deployment().catalog.hosts[name], op, payload)

    def _end(self, name: str, payload: SeatPayload) -> Any:
        """A seat's end, carried with the others of its host's burst (`seat_end`)."""
        return self.ends.end(name, self.deployment().catalog.hosts[name], payload)

    def hub_url(self, session: Session) -> str | None:
        """Where the session's participant logs in, by the deployed catalog (None when its host
        has no hub or left the catalog, or nothing is deployed yet: a restarted daemon still
        lists its sessions)."""
        try:
            catalog = self.deployment().catalog
        except NotDeployed:
            return None
        return hub_url(catalog, session.host) if session.host in catalog.hosts else None

    # ---- CREATE -----------------------------------------------------------------------------

    def _candidates(self, catalog: Catalog, key: str, location: str,
                    hosts: list[str]) -> list[Candidate]:
        """Seats of the workshop's range on `hosts` (reachable, of the location), seat by seat
        across hosts so sessions spread."""
        ws = catalog.workshops[key]
        found = []
        for n in range(ws.seats.first, ws.seats.last + 1):
            for name in hosts:
                pool = catalog.pools[catalog.hosts[name].pool]
                if pool.first <= n <= pool.last:
                    found.append(Candidate(location, name, n, pool.user(n)))
        return found

    def _workshop(self, catalog: Catalog, key: str) -> Any:
        ws = catalog.workshops.get(key)
        if ws is None:
            raise UnknownWorkshop(f"unknown workshop '{key}'")
        if not ws.active:
            raise UnknownWorkshop(f"workshop '{key}' is not active")
        return ws

    def _on_host(self, host: str, newest: Deployment) -> Deployment:
        """The deployment a CREATE on `host` is made from: the one that host applied, with a
        daemon (`host_deployment`); else the one deployment."""
        return self.host_deployment(host) if self.host_deployment else newest

    def _by_revision(self, newest: Deployment, key: str, location: str,
                     skipped: list[str], only_host: str | None = None,
                     ) -> list[tuple[Deployment, list[str]]]:
        """The location's reachable hosts (only `only_host` when given) grouped by the
        deployment each applied (hosts on the newest first); a host on a revision without the
        workshop is skipped, and why is added to `skipped`."""
        groups: dict[str, tuple[Deployment, list[str]]] = {}
        for name in sorted(newest.catalog.hosts_in(location)):
            if self.connections.down(name) or only_host not in (None, name):
                continue
            try:
                on = self._on_host(name, newest)
            except HostNotApplied as exc:
                skipped.append(str(exc))
                continue
            if key not in on.catalog.workshops or name not in on.catalog.hosts:
                skipped.append(f"host {name} is still on revision {on.revision[:12]}, which "
                               f"has no workshop {key} (added in revision "
                               f"{newest.revision[:12]}, not applied there yet)")
                continue
            groups.setdefault(on.revision, (on, []))[1].append(name)
        return sorted(groups.values(), key=lambda g: g[0].revision != newest.revision)

    def create(self, key: str, participant: Participant, location: str | None = None,
               only_host: str | None = None) -> Created:
        """A seat of the workshop for the participant, set up on its host from the revision
        that host applied; the workshop (active, its locations, capacity) is the newest
        revision's. `only_host`: that host of the location, no other (`wodsync test --host`)."""
        started = time.monotonic()
        dep = self.deployment()
        ws = self._workshop(dep.catalog, key)
        serving = [ws.location, *ws.alternate_locations]
        if location is not None and location not in serving:
            raise BadLocation(f"location '{location}' does not serve {key} (it runs at "
                              f"{', '.join(serving)})")
        reasons: list[str] = []
        skipped: list[str] = []
        tried: set[tuple[str, int]] = set()  # seats this CREATE could not have
        tried_a_host = False
        for loc in [location] if location else serving:
            groups = self._by_revision(dep, key, loc, skipped, only_host)
            if not groups:
                reasons.append(f"no reachable host at {loc}")
            for on, hosts in groups:
                tried_a_host = True
                created = self._create_on(on, (key, ws), participant, loc, hosts, tried,
                                          reasons)
                if created is not None:
                    created.seconds = round(time.monotonic() - started, 4)
                    self._emit("created", created.session, created.seconds)
                    return created
        if skipped and not tried_a_host:  # reachable hosts, none on a revision to use
            raise HostNotApplied("; ".join(skipped))
        raise NoSeat("no seat free anywhere the workshop may go: "
                     + "; ".join(reasons + skipped))

    def _create_on(self, on: Deployment, workshop: tuple[str, Any], participant: Participant,
                   loc: str, hosts: list[str], tried: set[tuple[str, int]],
                   reasons: list[str]) -> Created | None:
        """A seat of `workshop` (key, the newest revision's workshop: capacity, duration) on
        `hosts`, all on deployment `on`, tried seat after seat until one is set up; None when
        none of them has one (why added to `reasons`)."""
        key, ws = workshop
        hot = self._take_hot(on, key, participant, hosts)
        if hot is not None:
            return hot
        while True:
            up = [h for h in hosts if not self.connections.down(h)]  # a failed call marks it
            candidates = [c for c in self._candidates(on.catalog, key, loc, up)
                          if (c.host, c.seat) not in tried]
            if not candidates:
                reasons.append(f"no reachable host at {loc}")
                return None
            try:
                session = self.store.sessions.allocate(
                    key, participant, candidates, ws.capacity, ws.duration, on.revision,
                    new_password())
            except AlreadyLive as exc:
                raise Duplicate(f"{participant.email} already has a live session of "
                                f"{key}", exc.session) from None
            except CapacityReached:
                raise NoSeat(f"{key} is at its capacity ({ws.capacity} live "
                             "sessions)") from None
            except NoFreeSeat:
                reasons.append(f"no free seat of {key} at {loc}")
                return None
            tried.add((session.host, session.seat))
            created = self._deploy(on, session)
            if created is not None:
                return created

    def _take_hot(self, on: Deployment, key: str, participant: Participant,
                  hosts: list[str]) -> Created | None:
        """A hot seat of the workshop, prepared ahead of its event, given first
        (`sessions.hotseats`); None when none is ready on `hosts`."""
        started = time.monotonic()
        up = [h for h in hosts if not self.connections.down(h)]
        try:
            session = self.hot.take(on, key, participant, up)
        except AlreadyLive as exc:
            raise Duplicate(f"{participant.email} already has a live session of {key}",
                            exc.session) from None
        if session is None:
            return None
        return Created(session, hub_url(on.catalog, session.host),
                       seconds=time.monotonic() - started)

    def _deploy(self, dep: Deployment, session: Session) -> Created | None:
        """Set the seat up; None when it could not be had (its host unreachable, or the host
        records it for another session, adopted meanwhile): the caller tries another."""
        produced: dict[str, str] = {}
        try:
            answer = self._set_up(dep, session, produced)
        except ApplianceUnreachable as exc:
            # Every seat of the workshop needs that appliance (or, per seat, one like it):
            # no other seat is tried. The release frees whatever the call made there.
            pending = self.store.sessions.schedule_release(
                session.id, "purge", f"appliance host {exc.host} unreachable during CREATE: "
                f"{exc}", retry_delay(0))
            raise CreateFailed(f"CREATE of {session.workshop} failed: {exc}", pending) from None
        except TransportError as exc:
            # Whatever of the seat the call made stays the host's until a release says so
            # (the release frees its appliance account too).
            self.store.sessions.schedule_release(
                session.id, "purge", f"host {session.host} unreachable during CREATE: {exc}",
                retry_delay(0))
            return None
        except Exception as exc:  # rendering, secrets, an agent error: the session failed
            left = self.appliances.release(dep.catalog, session)
            if left:
                self.store.sessions.schedule_release(
                    session.id, "purge", f"{type(exc).__name__}: {exc}; " + "; ".join(left),
                    retry_delay(0))
                raise CreateFailed(f"CREATE of {session.workshop} failed: {exc}",
                                   self.store.sessions.get(session.id)) from None
            failed = self.store.sessions.fail(session.id, f"{type(exc).__name__}: {exc}")
            raise CreateFailed(f"CREATE of {session.workshop} failed: {exc}", failed) from None
        outputs = hook_outputs(answer, session.password, secret_values(
            dep.catalog.workshops[session.workshop], produced))
        if answer.get("occupied"):
            self._occupied(session, answer["occupied"])
            return None
        if not answer["ok"]:
            answer = {**answer, "release_errors": [
                *(answer.get("release_errors") or []),
                *self.appliances.release(dep.catalog, session)]}
            failed = self._failed(session, answer, outputs)
            raise CreateFailed(f"CREATE of {session.workshop} failed on {session.host}: "
                               f"{answer['error']}", failed)
        if answer.get("server") == "deferred":
            self.store.deferred.add(session.id, session.host, session.username)
        notes = "".join(f"; {n}" for n in answer.get("notes", []))
        active = self.store.sessions.activate(session.id, message="seat ready "
                                              + _timings(answer["timings"]) + notes,
                                              output=outputs)
        return Created(active, hub_url(dep.catalog, session.host), answer["timings"])

    def _set_up(self, dep: Deployment, session: Session, produced: dict[str, str],
                hot: bool = False) -> dict[str, Any]:
        """The seat's appliance account first (`appliances`), then the seat on its host: in
        one call, or in two around the create hook when the workshop declares values the
        hook writes (`produced` receives them, for the files rendered after it)."""
        key = self.appliances.create(dep.catalog, session)
        if not hook_names(dep.catalog.workshops[session.workshop]):
            payload = seat.create_payload(dep.catalog, session, dep.secrets, ssh_key=key,
                                          hot=hot)
            return self.burst.create(session.host, dep.catalog.hosts[session.host], payload)
        first = self._seat_create(dep, session, seat.create_payload(
            dep.catalog, session, dep.secrets, "hook", ssh_key=key))
        if not first["ok"] or first.get("occupied"):
            return first
        produced.update(first.get("values") or {})
        rest = self._seat_create(dep, session, seat.create_payload(
            dep.catalog, session, dep.secrets, "rest", produced, hot=hot))
        return {**rest, "timings": {**first["timings"], **rest["timings"]},
                "outputs": [*first["outputs"], *rest["outputs"]]}

    def _seat_create(self, dep: Deployment, session: Session,
                     payload: SeatPayload) -> dict[str, Any]:
        """One `seat_create` call of one seat, outside the burst (a two-stage CREATE)."""
        request: SeatCreateRequest = {"state_dir": payload["state_dir"],
                                      "owner": payload["owner"], "seats": [payload]}
        answer: dict[str, Any] = self.connections.call(
            session.host, dep.catalog.hosts[session.host], "seat_create", request)["seats"][0]
        return answer

    def _failed(self, session: Session, answer: dict[str, Any], outputs: str) -> Session:
        """A CREATE the host refused: the seat is free again once the host released it."""
        left = answer.get("release_errors") or []
        if not left:
            return self.store.sessions.fail(session.id, answer["error"], output=outputs)
        return self.store.sessions.schedule_release(
            session.id, "purge", f"{answer['error']}; its release did not finish: "
            + "; ".join(left), retry_delay(0), output=outputs)

    def _occupied(self, session: Session, record: dict[str, Any]) -> None:
        """The host records the seat for another session the store did not know: give up
        this seat, adopt that session in its place (so no CREATE is offered the seat again)
        and say so."""
        self.store.sessions.fail(
            session.id, f"seat {session.username} on {session.host} is held by session "
            f"{record.get('session')} on the host: another seat is given")
        report = self.adopter.adopt(session.host, {"user": session.username, **record})
        _log.warning("CREATE of %s: seat %s on %s held by session %s on the host (%s); "
                     "trying another seat", session.workshop, session.username, session.host,
                     record.get("session"), "; ".join(report.lines()) or "known")

    # ---- the end of a session (`release`) -------------------------------------------------------

    def cleanup(self, session_id: str) -> Session:
        """Time is up (or asked): `cleanup` hook, completion, seat freed — or held for RESET.
        A session whose release is pending is tried again now."""
        session = self.store.sessions.get(session_id)
        if session.state is SessionState.RELEASING:
            return self.release.run(session, session.release_op or "cleanup")
        session = self.store.sessions.transition(session_id, SessionState.CLEANING,
                                                 message="cleanup")
        return self.release.run(session, "cleanup")

    def reset(self, session_id: str) -> Session:
        """A held seat (a `reset: true` workshop): `reset` hook, then the seat freed."""
        session = self.store.sessions.get(session_id)
        if session.state is SessionState.RELEASING:
            return self.release.run(session, session.release_op or "reset")
        session = self.store.sessions.transition(session_id, SessionState.RESETTING,
                                                 message="reset")
        return self.release.run(session, "reset")

    def purge(self, session_id: str, reason: str = "purged by an operator") -> Session:
        """The forced path, from any state: no hook; lock, stop, kill, new identity, empty,
        free. `ended` only once the host did it; else `releasing`, retried."""
        session = self.store.sessions.get(session_id)
        if not session.holds_seat:
            return session
        return self.release.run(session, "purge", reason)

    def orphaned_by(self, catalog: Catalog) -> list[Session]:
        """Live sessions `catalog` would leave without their workshop or their host: a
        revision removing them needs an allowance, and ends them first (`end_orphans`)."""
        return [s for s in self.store.sessions.find(live=True)
                if s.workshop not in catalog.workshops or s.host not in catalog.hosts]

    def end_orphans(self, catalog: Catalog) -> list[Session]:
        """End, with the catalog deployed now (its hooks run if it still has the workshop),
        every live session `catalog` would orphan: CLEANUP for an active one, PURGE else."""
        ended = []
        for session in self.orphaned_by(catalog):
            reason = f"its workshop {session.workshop} or host {session.host} is leaving the " \
                     "catalog"
            try:
                if session.state is SessionState.ACTIVE:
                    ended.append(self.cleanup(session.id))
                else:
                    ended.append(self.purge(session.id, reason))
            except (SessionError, InvalidTransition) as exc:
                _log.warning("ending session %s: %s", session.id, exc)
        return ended

    def retry_releases(self, now: datetime | None = None) -> list[Session]:
        """Releases whose next try is due, tried again (the expiry loop's job), side by side:
        those of one host share calls (`ends`)."""
        def retry(session: Session) -> Session | None:
            try:
                return self.release.run(session, session.release_op or "purge")
            except InvalidTransition:
                return None  # finished by another caller meanwhile
            except Exception as exc:  # one bad release never holds the others back
                _log.warning("release of session %s: %s", session.id, exc)
                return None

        done = _side_by_side(retry, self.store.sessions.releases_due(now or _now()))
        return [s for s in done if s is not None]

    def release_seat(self, host: str, user: str) -> Session | None:
        """An operator frees a seat whatever the host or the store say holds it (`wodsync seat
        release`): a PURGE on the host that ignores the record, then every session holding
        it in the store ends. Returns the session that held it, if the store had one."""
        dep = self.deployment()
        held = [s for s in self.store.sessions.holding_seats(host) if s.username == user]
        answer = self._call(host, "seat_purge",
                            seat.release_payload(dep.catalog, host, user, dep.secrets))
        if not answer["ok"]:
            raise SessionError(f"seat {user} on {host} was not fully released: "
                               f"{answer['error']}")
        ended = None
        for s in held:
            left = self.appliances.release(dep.catalog, s)
            if left:
                raise SessionError(f"seat {user} on {host} was released, its appliance "
                                   "account not: " + "; ".join(left))
            ended = self.store.sessions.purge(s.id, message=f"seat {user} released by an "
                                              "operator (wodsync seat release)")
        return ended

    def check(self, session_id: str, which: checks.Which = "script") -> checks.Score:
        """Run the session's workshop's checks on its seat now (or, `which="solve"`, its
        solve scripts: the content CI's way to make every step pass); the score and each
        step's outcome. Nothing is stored: the score kept is the one of its CLEANUP."""
        session = self.store.sessions.get(session_id)
        if session.state is not SessionState.ACTIVE:
            raise CannotCheck(f"session {session.id} is {session.state.value}: only an active "
                              "session can be checked", session)
        dep = self.deployment()
        ws = dep.catalog.workshops.get(session.workshop)
        if ws is None or not ws.checks:
            raise CannotCheck(f"workshop {session.workshop} declares no checks", session)
        try:
            return checks.run(self._call, dep.catalog, session, dep.secrets, which)
        except checks.BadAnswer as exc:
            raise ChecksFailed(f"checks of session {session.id} on {session.host}: {exc}",
                               session) from None
        except checks.ChecksError as exc:
            raise CannotCheck(str(exc), session) from None
        except (TransportError, HostError) as exc:
            raise ChecksFailed(f"checks of session {session.id} on {session.host}: {exc}",
                               session) from None

    def extend(self, session_id: str, hours: float) -> Session:
        """Move the end by `hours`; a session lasts at most its duration plus the maximum
        extension in all."""
        session = self.store.sessions.get(session_id)
        return self.store.sessions.extend(session_id, hours,
                                          session.duration_hours + self.max_extension_hours)

    # ---- servers a busy hub deferred ---------------------------------------------------------

    def deferred(self) -> dict[str, list[str]]:
        """host → seats whose server start waits for room in the hub."""
        return {h: sorted(users) for h, users in self.store.deferred.pending().items()}

    def start_deferred(self) -> int:
        """Ask again for the servers a burst left to the login, host by host (one round trip
        each), so a student who logs in later finds theirs running — also after a restart: the
        list is in the store. A seat cleaned up meanwhile is dropped, never started. Returns
        how many servers were asked for."""
        self.store.deferred.prune()
        pending = self.store.deferred.pending()
        if not pending:
            return 0
        dep = self.deployment()
        asked = 0
        for name, seats in pending.items():
            try:
                started, done = self._start_on(dep, name, seats)
            except (TransportError, HostError) as exc:
                _log.warning("deferred server starts on %s: %s", name, exc)
                continue
            asked += started
            self.store.deferred.settle(seats[user] for user in done if user in seats)
        return asked

    def _start_on(self, dep: Deployment, name: str, seats: dict[str, str],
                  ) -> tuple[int, list[str]]:
        """(servers asked for, seats settled) on one host; a host gone from the catalog, or
        whose hub users wodsync no longer manages, settles them all."""
        payload = seat.servers_payload(dep.catalog, name, seats, dep.secrets) \
            if name in dep.catalog.hosts else None
        if payload is None:
            return 0, list(seats)
        answer = self.connections.call(name, dep.catalog.hosts[name], "seat_servers", payload)
        for user, error in answer["errors"].items():
            _log.warning("deferred server start of %s on %s: %s", user, name, error)
        return len(answer["started"]), answer["started"] + answer["gone"] + list(answer["errors"])

    # ---- time and restarts ----------------------------------------------------------------------

    def expire(self, now: datetime | None = None) -> list[Session]:
        """Clean up sessions whose time is over; mark those with an hour left as expiring;
        try again the releases that are due."""
        now = now or _now()
        for session in self.store.sessions.mark_expiring(EXPIRING_WINDOW, now):
            self._emit("expiring", session)
        ended = _side_by_side(self.cleanup, [s.id for s in self.store.sessions.due(now)])
        return ended + self.retry_releases(now)

    def recover(self) -> list[Session]:
        """After a start (or the daemon's writer lock regained): the sessions a process that
        is gone left half-way are released again at once (`take_over_dead`), and every host's
        seat records are reconciled with the store by `sync_records`, host by host, from the
        expiry loop."""
        done = self.take_over_dead()
        self._unsynced = None  # every host, once a revision is deployed
        return done

    def take_over_dead(self) -> list[Session]:
        """A session left in creating, cleaning or resetting by a process that no longer
        lives (`store.owners`) is released again at once, its operation retried — never one a
        live process (another `serve` replica, the daemon) is working on: that one finishes
        it. The expiry loop asks again every round, for processes that died since."""
        ops = {SessionState.CREATING: "purge", SessionState.CLEANING: "cleanup",
               SessionState.RESETTING: "reset"}
        leases = self.store.leases
        done = []
        for state, op in ops.items():
            for session in self.store.sessions.find(state=state):
                if leases.alive(session.owner):
                    continue
                try:
                    done.append(self.store.sessions.schedule_release(
                        session.id, op, f"interrupted during {state.value}: its process "
                        f"({session.owner or 'unknown'}) is gone; released", timedelta(0)))
                except InvalidTransition:
                    continue  # moved on meanwhile
                _log.warning("session %s: %s by %s, whose process is gone: released",
                             session.id, state.value, session.owner or "an unknown process")
        return done

    def sync_records(self, hosts: list[str] | None = None) -> list[SyncReport]:
        """Reconcile the store with the seat records of `hosts` (default: every host not yet
        reconciled since the start; all of them when none is pending). A host that cannot be
        reached stays pending."""
        catalog = self.deployment().catalog
        if hosts is None:
            hosts = self.unsynced() or sorted(catalog.hosts)
        reports = []
        for name in hosts:
            if name not in catalog.hosts:
                continue
            try:
                reports.append(self.adopter.sync(name))
            except (TransportError, HostError) as exc:
                _log.warning("seat records of %s: %s", name, exc)
                continue
            if self._unsynced is not None:
                self._unsynced.discard(name)
        for report in reports:
            for line in report.lines():
                _log.warning("seat records: %s", line)
        return reports

    def unsynced(self) -> list[str]:
        """Hosts whose seat records are not reconciled with the store since the start (none
        known before a revision is deployed)."""
        if self._unsynced is None:
            try:
                self._unsynced = set(self.deployment().catalog.hosts)
            except NotDeployed:  # no revision deployed yet: the next round asks again
                return []
        return sorted(self._unsynced)

    def sync_unsynced(self) -> list[SyncReport]:
        return self.sync_records(self.unsynced())

    def update(self, session_ids: list[str] | None = None,
               workshops: list[str] | None = None) -> list[Updated]:
        """Live update (`sessions.liveupdate`) of the sessions named, or of every active
        session of `workshops`, from the revision each one's host applied."""
        chosen = [self.store.sessions.get(i) for i in session_ids or []]
        for key in workshops or []:
            chosen += self.store.sessions.find(state=SessionState.ACTIVE, workshop=key)
        return self.live.run(chosen)

    def live_seats(self, host: str) -> list[LiveSeat]:
        """The seats a host's desired state keeps: sessions holding a seat never lose password
        or home to a catalog edit."""
        try:
            catalog = self.deployment().catalog
        except NotDeployed:
            catalog = None
        if catalog is not None and host in catalog.hosts \
                and catalog.hosts[host].role == "appliance":
            return live_on_appliance(catalog, host, self.store.sessions.holding_seats)
        return [LiveSeat.of(s) for s in self.store.sessions.holding_seats(host)]

    def _emit(self, event: str, session: Session, seconds: float | None = None) -> None:
        for listener in self.listeners:
            listener(event, session, seconds)


def _side_by_side(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`fn` of each item, at most `ENDS_AT_ONCE` at a time: the sessions of an event end
    together, and their ends on one host then share calls (`ends`) instead of following each
    other. Every item is tried; the first exception is raised once all are done."""
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(ENDS_AT_ONCE, len(items)),
                            thread_name_prefix="wodsync-end") as pool:
        futures = [pool.submit(fn, item) for item in items]
    return [f.result() for f in futures]


def _timings(timings: dict[str, float]) -> str:
    total = sum(timings.values())
    slow = sorted(timings.items(), key=lambda kv: -kv[1])[:3]
    return f"in {total:.3f} s on the host (" + ", ".join(f"{k} {v:.3f}" for k, v in slow) + ")"


class Heartbeat(Background):
    """This process's lease in the store, renewed every `LEASE_EVERY` while it serves: the
    other processes sharing the store leave the sessions it works on alone
    (`store.owners`). Dropped when it stops."""

    def __init__(self, store: Store) -> None:
        super().__init__("wodsync-heartbeat")
        self.leases = store.leases

    def _run(self) -> None:
        while True:
            try:
                self.leases.beat()
            except Exception as exc:  # the store away for a while: the next beat retries
                _log.warning("heartbeat: %s", exc)
            if self._stop.wait(LEASE_EVERY.total_seconds()):
                break
        with contextlib.suppress(Exception):
            self.leases.drop()


class ExpiryLoop(Background):
    """A thread that runs `expire` every `interval` seconds until stopped; every
    `DEFERRED_EVERY` seconds between, it asks again for deferred servers, tries the releases
    that are due, keeps the events' hot seats (`sessions.hotseats`) and reconciles the seat
    records of hosts not yet reconciled since the start."""

    def __init__(self, service: SessionService, interval: float = 30.0) -> None:
        super().__init__("wodsync-expiry")
        self.service = service
        self.interval = interval

    def _run(self) -> None:
        """The first round at once: a restart finishes what a killed process left half-way
        and reconciles the hosts' seat records without waiting."""
        due = time.monotonic() + self.interval
        wait = 0.0
        while not self._stop.wait(wait):
            wait = min(DEFERRED_EVERY, max(0.0, due - time.monotonic()))
            self._round("deferred servers", self.service.start_deferred)
            self._round("releases", self.service.retry_releases)
            self._round("hot seats", lambda: self.service.hot.keep())
            if self.service.unsynced():
                self._round("seat records", self.service.sync_unsynced)
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval
                self._round("expiry", self.service.expire)
                self._round("sessions of processes gone", self.service.take_over_dead)

    @staticmethod
    def _round(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # a bad round never stops the loop; the next one retries
            _log.warning("%s round failed: %s", what, exc)
