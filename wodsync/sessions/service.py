"""The session lifecycle: CREATE, CLEANUP, RESET, PURGE, EXTEND, expiry and recovery.

A CREATE commits the session first — a seat and a capacity slot no other live session holds,
by the store's unique indexes — then sets the seat up on its host in one round trip over the
host's open connection (the CREATEs of a burst share round trips: `burst`). The workshop's
location is tried first, then its alternates in order, when no host there has a free seat in
the workshop's range or its hosts cannot be reached. A CREATE that fails on the host is purged
there and the session is `failed` with the error; its seat returns to the pool. A process
killed in the middle leaves the session `creating`: at the next start `recover` purges it
(never a half-made seat, never a seat given twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wodsync.catalog.loader import Catalog
from wodsync.content import new_password
from wodsync.engine.connections import Connections
from wodsync.engine.desired import LiveSeat
from wodsync.engine.remote import HostError
from wodsync.engine.transport import TransportError
from wodsync.secrets import Secrets
from wodsync.sessions import seat
from wodsync.sessions.burst import Burst
from wodsync.sessions.completion import completion
from wodsync.store import (
    AlreadyLive,
    Candidate,
    CapacityReached,
    NoFreeSeat,
    Participant,
    Session,
    SessionState,
    Store,
)

EXPIRING_WINDOW = timedelta(hours=1)
DEFERRED_EVERY = 5.0     # seconds between two tries at the servers a busy hub deferred
MAX_EXTENSION_HOURS = 24.0

_log = logging.getLogger("wodsync.sessions")


class SessionError(Exception):
    """A session operation cannot be done; `status` is the HTTP status that says why."""

    status = 400

    def __init__(self, message: str, session: Session | None = None) -> None:
        super().__init__(message)
        self.session = session


class UnknownWorkshop(SessionError):
    status = 404


class NoSeat(SessionError):
    status = 409


class Duplicate(SessionError):
    status = 409


class CreateFailed(SessionError):
    status = 502


@dataclass(frozen=True)
class Deployment:
    """The catalog sessions are deployed from, its revision and the secrets to render it."""

    catalog: Catalog
    revision: str
    secrets: Secrets


@dataclass
class Created:
    session: Session
    url: str | None
    timings: dict[str, float] = field(default_factory=dict)   # on the host, per step
    seconds: float = 0.0                                       # the whole CREATE, here


def hub_url(catalog: Catalog, host_name: str) -> str | None:
    """Where the participant logs in: the host's hub (None for a host without a hub)."""
    host = catalog.hosts[host_name]
    return f"http://{host.address}:{host.hub.port}/" if host.hub else None


def _now() -> datetime:
    return datetime.now(UTC)


class SessionService:
    def __init__(self, store: Store, deployment: Callable[[], Deployment],
                 connections: Connections | None = None,
                 max_extension_hours: float = MAX_EXTENSION_HOURS) -> None:
        self.store = store
        self.deployment = deployment
        self.connections = connections or Connections()
        self.max_extension_hours = max_extension_hours
        self.burst = Burst(lambda name, host, payload: self.connections.call(
            name, host, "seat_create", payload))
        # host → {user: session id}: servers a busy hub left to the login (its spawn_limit),
        # asked for again by `start_deferred`. Kept in memory: lost, they start at the login.
        self._deferred: dict[str, dict[str, str]] = {}
        self._deferred_lock = threading.Lock()
        # Called with (event, session, seconds): "created" (seconds: the whole CREATE),
        # "cleaned", "expiring". Metrics and, later, notifications listen here.
        self.listeners: list[Callable[[str, Session, float | None], None]] = []

    # ---- CREATE -----------------------------------------------------------------------------

    def _candidates(self, catalog: Catalog, key: str, location: str) -> list[Candidate]:
        """Seats of the workshop's range on the location's reachable hosts, seat by seat
        across hosts so sessions spread."""
        ws = catalog.workshops[key]
        found = []
        hosts = [h for h in sorted(catalog.hosts_in(location))
                 if not self.connections.down(h)]
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

    def create(self, key: str, participant: Participant, location: str | None = None,
               ) -> Created:
        started = time.monotonic()
        dep = self.deployment()
        ws = self._workshop(dep.catalog, key)
        locations = [location] if location else [ws.location, *ws.alternate_locations]
        unknown = [loc for loc in locations if loc not in dep.catalog.locations]
        if unknown:
            raise UnknownWorkshop(f"unknown location '{unknown[0]}'")
        reasons = []
        for loc in locations:
            while True:
                candidates = self._candidates(dep.catalog, key, loc)
                if not candidates:
                    reasons.append(f"no reachable host at {loc}")
                    break
                try:
                    session = self.store.sessions.allocate(
                        key, participant, candidates, ws.capacity, ws.duration, dep.revision,
                        new_password())
                except AlreadyLive as exc:
                    raise Duplicate(f"{participant.email} already has a live session of "
                                    f"{key}", exc.session) from None
                except CapacityReached:
                    raise NoSeat(f"{key} is at its capacity ({ws.capacity} live "
                                 "sessions)") from None
                except NoFreeSeat:
                    reasons.append(f"no free seat of {key} at {loc}")
                    break
                created = self._deploy(dep, session)
                if created is not None:
                    created.seconds = round(time.monotonic() - started, 4)
                    self._emit("created", created.session, created.seconds)
                    return created
        raise NoSeat("no seat free anywhere the workshop may go: " + "; ".join(reasons))

    def _deploy(self, dep: Deployment, session: Session) -> Created | None:
        """Set the seat up; None when its host could not be reached (try another)."""
        host = dep.catalog.hosts[session.host]
        try:
            payload = seat.create_payload(dep.catalog, session, dep.secrets)
            answer = self.burst.create(session.host, host, payload)
        except TransportError as exc:
            self.store.sessions.fail(session.id, f"host {session.host} unreachable: {exc}")
            return None
        except Exception as exc:  # rendering, secrets, an agent error: the session failed
            failed = self.store.sessions.fail(session.id, f"{type(exc).__name__}: {exc}")
            raise CreateFailed(f"CREATE of {session.workshop} failed: {exc}", failed) from None
        outputs = _outputs(answer)
        if not answer["ok"]:
            failed = self.store.sessions.fail(session.id, answer["error"], output=outputs)
            raise CreateFailed(f"CREATE of {session.workshop} failed on {session.host}: "
                               f"{answer['error']}", failed)
        if answer.get("server") == "deferred":
            with self._deferred_lock:
                self._deferred.setdefault(session.host, {})[session.username] = session.id
        notes = "".join(f"; {n}" for n in answer.get("notes", []))
        active = self.store.sessions.activate(session.id, message="seat ready "
                                              + _timings(answer["timings"]) + notes,
                                              output=outputs)
        return Created(active, hub_url(dep.catalog, session.host), answer["timings"])

    # ---- the end of a session ------------------------------------------------------------------

    def _call_end(self, session: Session, op: str, hold: bool = False) -> dict[str, Any]:
        dep = self.deployment()
        if session.workshop not in dep.catalog.workshops or \
                session.host not in dep.catalog.hosts:
            raise SessionError(f"session {session.id}: workshop {session.workshop} or host "
                               f"{session.host} is no longer in the catalog; purge it by hand")
        payload = seat.end_payload(dep.catalog, session, dep.secrets, hold)
        return self.connections.call(session.host, dep.catalog.hosts[session.host], op,
                                     payload)

    def cleanup(self, session_id: str) -> Session:
        """Time is up (or asked): `cleanup` hook, completion, seat freed — or held for RESET."""
        session = self.store.sessions.get(session_id)
        hold = self._resets(session)
        session = self.store.sessions.transition(session_id, SessionState.CLEANING,
                                                 message="cleanup")
        try:
            answer = self._call_end(session, "seat_cleanup", hold)
        except (TransportError, HostError, SessionError) as exc:
            return self.store.sessions.fail(session_id, f"CLEANUP failed: {exc}")
        done = completion(answer.get("notebooks") or {})
        self.store.sessions.set_completion(session_id, done)
        outputs = _outputs(answer)
        if not answer["ok"]:
            return self.store.sessions.fail(session_id, f"CLEANUP: {answer['error']}",
                                            output=outputs)
        to = SessionState.HELD if hold else SessionState.ENDED
        ended = self.store.sessions.transition(
            session_id, to, message=f"cleaned up, completion {done if done is not None else '-'}"
            f"%{' (seat held until RESET)' if hold else ''}", output=outputs)
        self._emit("cleaned", ended)
        return ended

    def _resets(self, session: Session) -> bool:
        ws = self.deployment().catalog.workshops.get(session.workshop)
        return bool(ws and ws.reset)

    def reset(self, session_id: str) -> Session:
        """A held seat (a `reset: true` workshop): `reset` hook, then the seat freed."""
        session = self.store.sessions.transition(session_id, SessionState.RESETTING,
                                                 message="reset")
        try:
            answer = self._call_end(session, "seat_reset")
        except (TransportError, HostError, SessionError) as exc:
            return self.store.sessions.fail(session_id, f"RESET failed: {exc}")
        outputs = _outputs(answer)
        if not answer["ok"]:
            return self.store.sessions.fail(session_id, f"RESET: {answer['error']}",
                                            output=outputs)
        return self.store.sessions.transition(session_id, SessionState.ENDED,
                                              message="reset done", output=outputs)

    def purge(self, session_id: str, reason: str = "purged by an operator") -> Session:
        """The forced path, from any state: stop, kill, lock, empty, free."""
        session = self.store.sessions.get(session_id)
        if session.state in (SessionState.ENDED,):
            return session
        outputs = ""
        try:
            answer = self._call_end(session, "seat_purge")
            outputs = _outputs(answer)
            if not answer["ok"]:
                reason += f" (on the host: {answer['error']})"
        except (TransportError, HostError, SessionError) as exc:
            reason += f" (the host could not be reached: {exc}; its seat record is left for "\
                      "the next purge)"
        return self.store.sessions.purge(session_id, message=reason, output=outputs)

    def extend(self, session_id: str, hours: float) -> Session:
        """Move the end by `hours`; a session lasts at most its duration plus the maximum
        extension in all."""
        session = self.store.sessions.get(session_id)
        return self.store.sessions.extend(session_id, hours,
                                          session.duration_hours + self.max_extension_hours)

    # ---- servers a busy hub deferred ---------------------------------------------------------

    def deferred(self) -> dict[str, list[str]]:
        """host → seats whose server start waits for room in the hub."""
        with self._deferred_lock:
            return {h: sorted(users) for h, users in self._deferred.items() if users}

    def start_deferred(self) -> int:
        """Ask again for the servers a burst left to the login, host by host (one round trip
        each), so a student who logs in later finds theirs running. A seat cleaned up meanwhile
        is dropped, never started. Returns how many servers were asked for."""
        with self._deferred_lock:
            pending = {h: dict(users) for h, users in self._deferred.items() if users}
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
            with self._deferred_lock:
                for user in done:
                    self._deferred.get(name, {}).pop(user, None)
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
        """Clean up sessions whose time is over; mark those with an hour left as expiring."""
        now = now or _now()
        for session in self.store.sessions.mark_expiring(EXPIRING_WINDOW, now):
            self._emit("expiring", session)
        return [self.cleanup(s.id) for s in self.store.sessions.due(now)]

    def recover(self) -> list[Session]:
        """After a restart: sessions a killed process left half-way are finished or purged."""
        done = []
        for session in self.store.sessions.find(state=SessionState.CREATING):
            done.append(self.purge(session.id, "interrupted during CREATE: purged at restart"))
        for session in self.store.sessions.find(state=SessionState.CLEANING):
            done.append(self.purge(session.id, "interrupted during CLEANUP: purged at restart"))
        for session in self.store.sessions.find(state=SessionState.RESETTING):
            done.append(self.purge(session.id, "interrupted during RESET: purged at restart"))
        return done

    def live_seats(self, host: str) -> list[LiveSeat]:
        """The seats a host's desired state keeps: live sessions never lose password or home."""
        return [LiveSeat(s.username, s.id, s.workshop)
                for s in self.store.sessions.live_on_host(host)]

    def _emit(self, event: str, session: Session, seconds: float | None = None) -> None:
        for listener in self.listeners:
            listener(event, session, seconds)


def _outputs(answer: dict[str, Any]) -> str:
    parts = []
    for o in answer.get("outputs") or []:
        status = "timed out" if o["status"] is None else f"exit {o['status']}"
        parts.append(f"--- hook {o['hook']} ({status})\n{o['output']}")
    return "\n".join(parts)


def _timings(timings: dict[str, float]) -> str:
    total = sum(timings.values())
    slow = sorted(timings.items(), key=lambda kv: -kv[1])[:3]
    return f"in {total:.3f} s on the host (" + ", ".join(f"{k} {v:.3f}" for k, v in slow) + ")"


class ExpiryLoop:
    """A thread that runs `expire` every `interval` seconds until stopped, and asks again for
    deferred servers every `DEFERRED_EVERY` seconds between."""

    def __init__(self, service: SessionService, interval: float = 30.0) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wodsync-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while not self._stop.wait(min(DEFERRED_EVERY, max(0.0, due - time.monotonic()))):
            self._round("deferred servers", self.service.start_deferred)
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval
                self._round("expiry", self.service.expire)

    @staticmethod
    def _round(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # a bad round never stops the loop; the next one retries
            _log.warning("%s round failed: %s", what, exc)
