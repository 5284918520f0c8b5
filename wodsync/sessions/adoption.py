"""The host's seat records are the last word: the store is reconciled with them.

A store restored from last night's backup, or a controller pointed at the wrong database,
knows nothing of the sessions created since; giving their seats again would hand a stranger
someone's home and cut them off. Each host records the session of every seat in use
(`agent.records`), so the store is brought back in line with the records — at every start of
`wodsync serve` and of the daemon, on demand (`wodsync seat sync`, after a restore), and for one
seat whenever a CREATE or a release meets a record of another session. The rule:

- a record of a session the store does not know: the session is **adopted** — back in the
  store with its workshop, participant and times, `active` or `held` as recorded (it has no
  password: host records never hold one); a record of a workshop the catalog no longer has,
  of a session half-made (`creating`) or half-released, is adopted as `releasing` and
  released;
- a record of a session the store has ended or failed: its release never finished there — the
  session is **reopened** as `releasing` and released;
- a session the store has `active` or `held` on a seat the host does not record: the host
  released it, the store did not hear — it is released again (a no-op there) and ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wodsync.agent.protocol import HostPayload
from wodsync.catalog.loader import Catalog
from wodsync.sessions import seat
from wodsync.store import (
    Adoption,
    AdoptionRefused,
    InvalidTransition,
    SessionNotFound,
    SessionState,
    Store,
)

S = SessionState
RECORDED = {"active": S.ACTIVE, "held": S.HELD}


@dataclass
class SyncReport:
    """What reconciling one host's records changed in the store."""

    host: str
    adopted: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.host}: {kind} {line}"
                for kind, found in (("adopted", self.adopted), ("reopened", self.reopened),
                                    ("released", self.released),
                                    ("conflict:", self.conflicts))
                for line in found]


def _when(value: Any, default: datetime) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return default


def _seat_number(catalog: Catalog, host: str, user: str) -> int | None:
    pool = catalog.pools[catalog.hosts[host].pool]
    tail = user[len(pool.prefix):] if user.startswith(pool.prefix) else ""
    return int(tail) if tail.isdigit() and pool.first <= int(tail) <= pool.last else None


def _adoption(catalog: Catalog, host: str, user: str, n: int, record: dict[str, Any],
              ) -> Adoption:
    now = datetime.now(UTC)
    workshop = str(record.get("workshop") or "")
    state = RECORDED.get(record.get("state") or "") if workshop in catalog.workshops else None
    since = _when(record.get("since"), now)
    sid = str(record["session"])
    return Adoption(
        id=sid, workshop=workshop or "?", host=host,
        location=str(record.get("location") or catalog.hosts[host].location),
        seat=n, username=user, state=state or S.RELEASING,
        name=str(record.get("name") or ""),
        email=str(record.get("email") or f"{sid}@adopted.invalid"),
        company=str(record.get("company") or ""),
        duration_hours=float(record.get("duration_hours") or 0.0),
        created_at=_when(record.get("created_at"), since),
        started_at=since if state is S.ACTIVE else None)


@dataclass
class Adopter:
    store: Store
    catalog: Callable[[], Catalog]
    call: Callable[[str, str, HostPayload], Any]

    def adopt(self, host: str, record: dict[str, Any], report: SyncReport | None = None,
              ) -> SyncReport:
        """Bring one host record (`user` and the record's fields) into the store."""
        report = report or SyncReport(host)
        user, sid = str(record.get("user")), record.get("session")
        catalog = self.catalog()
        n = _seat_number(catalog, host, user)
        if not sid or sid == "?" or n is None:
            report.conflicts.append(f"seat {user}: unreadable record or not a seat of the pool "
                                    "(`wodsync seat release` frees it)")
            return report
        try:
            known = self.store.sessions.get(sid)
        except SessionNotFound:
            known = None
        if known is None:
            self._adopt_new(catalog, host, user, n, record, report)
        elif (known.host, known.username) != (host, user):
            report.conflicts.append(f"seat {user}: the host records session {sid}, which the "
                                    f"store has on {known.host} seat {known.username}")
        elif not known.holds_seat:
            self.store.sessions.reopen(sid, "purge", f"{host} still records seat {user} for "
                                       "this session: its release never finished there")
            report.reopened.append(f"{sid} on seat {user}")
        return report

    def _adopt_new(self, catalog: Catalog, host: str, user: str, n: int,
                   record: dict[str, Any], report: SyncReport) -> None:
        adoption = _adoption(catalog, host, user, n, record)
        message = (f"adopted from {host}'s record of seat {user} (the store did not know it)"
                   + ("; to be released" if adoption.state is S.RELEASING else ""))
        try:
            self.store.sessions.adopt(adoption, message)
        except AdoptionRefused as exc:
            report.conflicts.append(str(exc))
            return
        report.adopted.append(f"{adoption.id} on seat {user} ({adoption.state.value})")

    def sync(self, host: str) -> SyncReport:
        """Reconcile the store with every record of one host (one round trip)."""
        report = SyncReport(host)
        before = [s for s in self.store.sessions.holding_seats(host)
                  if s.state in (S.ACTIVE, S.HELD)]  # read before the records: see below
        answer = self.call(host, "seat_records", seat.records_payload(self.catalog(), host))
        found = answer["records"]
        for user, record in sorted(found.items()):
            self.adopt(host, {"user": user, **record}, report)
        # A session that was active before the records were read had its record written
        # before then: without one now, the host released it.
        for session in before:
            if session.username in found:
                continue
            with contextlib.suppress(InvalidTransition):
                current = self.store.sessions.get(session.id)
                if current.state in (S.ACTIVE, S.HELD):
                    self.store.sessions.schedule_release(
                        session.id, "purge", f"{host} has no record of seat "
                        f"{session.username}: released there, the store had not heard",
                        timedelta(0))
                    report.released.append(f"{session.id} on seat {session.username}")
        return report
