"""Hot seats: seats of an event's workshop set up before the participants come.

At a conference everyone registers and logs in within minutes. From `lead` minutes before an
event (`catalog/events.yaml`) until its end, `keep` holds ceil(expected × warm) seats of its
workshop ready where a CREATE of it would go (its location, then its alternates; from the
revision each host applied): each set up exactly as a CREATE sets a seat up (home
rendered, hooks run, record written, the hub server started) but under a locked password, in
the workshop's group only once taken, for no participant. A CREATE of the workshop takes one
first (`take`): one round trip sets the password, joins the group and records the participant;
the lab is already running. The pool refills each round while the event lasts; the hot seats
of an event that ended, or left the catalog, are released by the normal release path (PURGE:
the whole sweep). Hot seats are sessions (`store.hotseats`): they count against the workshop's
capacity, never take a seat a session holds, and obey the seat guard like any seat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wodsync.agent.protocol import SeatCreateRequest
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Event
from wodsync.engine.remote import HostError
from wodsync.engine.transport import TransportError
from wodsync.render.content import new_password
from wodsync.sessions import seat
from wodsync.sessions.release import retry_delay
from wodsync.source.revision import Deployment, NotDeployed
from wodsync.store import (
    CapacityReached,
    InvalidTransition,
    NoFreeSeat,
    Participant,
    Session,
)

if TYPE_CHECKING:
    from wodsync.sessions.service import SessionService

PER_ROUND = 20  # hot seats prepared per host call at most: a round never blocks for long

_log = logging.getLogger("wodsync.sessions")


@dataclass
class KeptRound:
    """What one `keep` round did: hot seats prepared (per event), released, and why some
    could not be prepared."""

    prepared: dict[str, int] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class HotSeatKeeper:
    """Keeps the hot seats of the deployed catalog's events for a session service."""

    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.store = service.store

    # ---- the pool --------------------------------------------------------------------------

    def keep(self, now: datetime | None = None) -> KeptRound:
        """One round: hot seats of events no longer warm (ended, or gone from the catalog)
        released; every warm event's pool filled up to its target."""
        now = now or datetime.now(UTC)
        try:
            dep = self.service.deployment()
        except NotDeployed:
            return KeptRound()
        events = {e.name: e for e in dep.catalog.events}
        done = KeptRound()
        self._release_cold(dep.catalog, events, now, done)
        for event in events.values():
            if event.warm_at(now) and event.workshop in dep.catalog.workshops:
                self._fill(dep, event, done)
        return done

    def _release_cold(self, catalog: Catalog, events: dict[str, Event], now: datetime,
                      done: KeptRound) -> None:
        """Ready hot seats whose event is over or gone, PURGEd (one still being set up is
        ready by the next round, and released then)."""
        for session_id, name in self.store.hot.event_of().items():
            event = events.get(name)
            if event is not None and event.warm_at(now) and event.workshop in catalog.workshops:
                continue
            why = "its event left the catalog" if event is None else "its event is over"
            try:
                retired = self.store.hot.retire(session_id, f"hot seat of {name}: {why}")
            except InvalidTransition:
                continue  # a CREATE took it meanwhile: a participant's now
            self.service.release.run(retired, "purge", f"hot seat of {name}: {why}")
            done.released.append(session_id)

    def _fill(self, dep: Deployment, event: Event, done: KeptRound) -> None:
        have = len(self.store.hot.waiting(event.name))
        missing = min(event.hot_target - have, PER_ROUND)
        made = 0
        for _ in range(max(0, missing)):
            try:
                if self._prepare(dep, event) is None:
                    break
            except (NoFreeSeat, CapacityReached) as exc:
                done.problems.append(f"event {event.name}: {exc}")
                break
            made += 1
        if made:
            done.prepared[event.name] = made

    def _prepare(self, dep: Deployment, event: Event) -> Session | None:
        """One hot seat of the event set up where a CREATE of its workshop would go: its
        location first, then its alternates, on a reachable host, from the revision that host
        applied (as the CREATE that takes it is made). None when no host could have one (none
        reachable or on a revision with the workshop, or the host failed: said in the log)."""
        ws = dep.catalog.workshops[event.workshop]
        skipped: list[str] = []
        full: NoFreeSeat | None = None
        for loc in [ws.location, *ws.alternate_locations]:
            for on, hosts in self.service._by_revision(dep, event.workshop, loc, skipped):
                candidates = self.service._candidates(on.catalog, event.workshop, loc, hosts)
                if not candidates:
                    continue
                try:
                    session = self.store.hot.reserve(event.name, event.workshop, candidates,
                                                     ws.capacity, ws.duration, on.revision,
                                                     new_password())
                except NoFreeSeat as exc:
                    full = exc
                    continue
                return self._set_up(on, event, session)
        if full is not None:
            raise full
        if skipped:
            _log.warning("hot seat of %s: %s", event.name, "; ".join(skipped))
        return None

    def _set_up(self, on: Deployment, event: Event, session: Session) -> Session | None:
        """The reserved hot seat set up on its host (a CREATE's own set-up, password locked);
        ready, or None when the host failed it (then released)."""
        try:
            answer = self.service._set_up(on, session, {}, hot=True)
        except (TransportError, HostError) as exc:
            self.store.sessions.schedule_release(
                session.id, "purge", f"hot seat not set up: {exc}", retry_delay(0))
            _log.warning("hot seat of %s on %s: %s", event.name, session.host, exc)
            return None
        if not answer["ok"]:
            self._failed(session, answer)
            return None
        if answer.get("server") == "deferred":
            self.store.deferred.add(session.id, session.host, session.username)
        return self.store.hot.ready(session.id, f"hot seat of event {event.name} ready "
                                    f"(server {answer.get('server') or 'none'})")

    def _failed(self, session: Session, answer: dict[str, Any]) -> None:
        """A hot seat its host could not set up: freed (no participant, so no mail), or left
        to the release retries when the host did not finish releasing it."""
        left = answer.get("release_errors") or []
        _log.warning("hot seat %s on %s: %s", session.username, session.host, answer["error"])
        if left:
            self.store.sessions.schedule_release(
                session.id, "purge", f"{answer['error']}; " + "; ".join(left), retry_delay(0))
        else:
            self.store.sessions.purge(session.id, message=f"hot seat not set up: "
                                      f"{answer['error']}")

    # ---- taking one ------------------------------------------------------------------------

    def take(self, dep: Deployment, key: str, participant: Participant,
             hosts: list[str]) -> Session | None:
        """A hot seat of workshop `key` on `hosts` given to `participant`: `active` with its
        password working, or None (none ready, or it could not be given: released, and the
        caller sets a seat up the usual way). Raises AlreadyLive."""
        ws = dep.catalog.workshops[key]
        session = self.store.hot.take(key, participant, hosts, ws.duration)
        if session is None:
            return None
        payload = seat.take_payload(dep.catalog, session, dep.secrets)
        request: SeatCreateRequest = {"state_dir": payload["state_dir"],
                                      "owner": payload["owner"], "seats": [payload]}
        try:
            answer = self.service.connections.call(
                session.host, dep.catalog.hosts[session.host], "seat_take", request)["seats"][0]
        except (TransportError, HostError) as exc:
            answer = {"ok": False, "error": str(exc), "timings": {}}
        if not answer["ok"]:
            self.store.sessions.schedule_release(
                session.id, "purge", f"hot seat not given: {answer['error']}", retry_delay(0))
            _log.warning("hot seat %s on %s not given: %s", session.username, session.host,
                         answer["error"])
            return None
        timings = ", ".join(f"{k} {v:.3f}" for k, v in answer["timings"].items())
        return self.store.sessions.activate(session.id, message=f"hot seat given ({timings})")
