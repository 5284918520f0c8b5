"""One guard round of one host, and what becomes of its findings (controller side).

The host kills and stops servers itself (`wodsync.agent.guard`); what needs the store is done
here, through the session service's own paths: `purge` is the session's PURGE (`ended` once the
host did it, else `releasing` and retried), `quarantine` takes the seat out of allocation first —
so the PURGE that frees it cannot hand it to the next CREATE — then purges the session (a seat
no session holds is released as an operator's `seat release` would). Every finding becomes an
event with its evidence, a count in `/metrics` and, for anything but a report, a word to the
operators (`notify_operators`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wodsync.agent.protocol import GuardFinding, GuardRoundAnswer
from wodsync.catalog.loader import Catalog
from wodsync.guard.rules import round_request
from wodsync.logs import FIELDS
from wodsync.mail.settings import MailSettings
from wodsync.sessions.service import SessionError, SessionService
from wodsync.store import GuardEvent, InvalidTransition, Session, Store
from wodsync.store.models import writing
from wodsync.store.outbox import enqueue

log = logging.getLogger("wodsync.guard")
EVIDENCE = ("pid", "cmdline", "cpu", "over", "age", "rejected", "done", "error")


@dataclass
class RoundReport:
    """A host's round: its findings as recorded, and what it cost."""

    host: str
    events: list[GuardEvent] = field(default_factory=list)
    processes: int = 0
    seats_busy: int = 0
    host_seconds: float = 0.0      # the round on the host
    seconds: float = 0.0           # the whole round trip, with the actions done here
    errors: list[str] = field(default_factory=list)


def notify_operators(store: Store, event: GuardEvent, mail: MailSettings | None) -> None:
    """Tell the operators what the guard did: a log line, and an `operator` mail to each of
    the catalog's operators when mail is on (queued with the event's id as its key: one mail
    per event and operator, however often this is called)."""
    log.warning("guard: %s on %s seat %s: %s (%s)", event.rule, event.host, event.username,
                event.action, event.outcome,
                extra={FIELDS: {"host": event.host, "seat": event.username, "rule": event.rule,
                                "action": event.action, "session": event.session_id}})
    if mail is None or not mail.operators:
        return
    command = str(event.evidence.get("cmdline") or "")[:300]
    details = (f"Host {event.host}, seat {event.username}: rule {event.rule!r} → "
               f"{event.action}: {event.outcome}" + (f"\nProcess: {command}" if command else ""))
    notice = {"event": f"seat guard: {event.rule} ({event.action})", "details": details}
    with writing(store.engine) as conn:
        for n, address in enumerate(mail.operators):
            enqueue(conn, "operator", address, session_id=event.session_id, context=notice,
                    key=f"operator:guard:{event.id}:{n}")


class Sentinel:
    """Guard rounds over the session service's connections and store. `counted` is called
    with (rule, action) for every event (the daemon's metrics)."""

    def __init__(self, sessions: SessionService,
                 counted: Callable[[str, str], None] | None = None) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.counted = counted

    def run(self, host: str, dry_run: bool = False) -> RoundReport:
        """One round on `host`: one agent call, then the controller's actions and the events."""
        started = time.monotonic()
        dep = self.sessions.deployment()
        catalog = dep.catalog
        payload = round_request(catalog, host, dep.secrets, dry_run)
        answer: GuardRoundAnswer = self.sessions.connections.call(
            host, catalog.hosts[host], "guard_round", payload)
        report = RoundReport(host, processes=answer["processes"],
                             seats_busy=answer["seats_busy"], host_seconds=answer["seconds"],
                             errors=list(answer["errors"]))
        for finding in answer["findings"]:
            report.events.append(self._handle(catalog, host, finding, dry_run))
        report.seconds = round(time.monotonic() - started, 4)
        return report

    def _handle(self, catalog: Catalog, host: str, finding: GuardFinding,
                dry_run: bool) -> GuardEvent:
        action = "report" if dry_run else finding["action"]
        session = self._session(host, finding)
        if action == "purge":
            outcome = self._purge(session, finding)
        elif action == "quarantine":
            outcome = self._quarantine(catalog, host, session, finding)
        elif action == "report":
            outcome = "reported" + (" (dry run)" if dry_run else "")
        else:  # kill, stop_server: done on the host
            outcome = finding.get("error") or finding.get("done") or "not done"
        evidence: dict[str, Any] = {k: finding[k] for k in EVIDENCE  # type: ignore[literal-required]
                                    if k in finding}
        evidence["type"] = finding["type"]
        event = self.store.guard.record(
            host, _seat_number(catalog, host, finding["user"]), finding["user"],
            session.id if session else (finding.get("session") or None), finding["rule"],
            action, outcome, evidence)
        if self.counted:
            self.counted(finding["rule"], action)
        if action != "report":
            notify_operators(self.store, event, self.sessions.mail_settings())
        return event

    def _session(self, host: str, finding: GuardFinding) -> Session | None:
        """The session holding the seat in the store (the host's record names it)."""
        for s in self.store.sessions.holding_seats(host):
            if s.username == finding["user"]:
                return s
        return None

    def _purge(self, session: Session | None, finding: GuardFinding) -> str:
        if session is None:
            return "no session holds the seat: nothing to purge"
        reason = f"purged by the seat guard: rule {finding['rule']}"
        try:
            after = self.sessions.purge(session.id, reason)
        except (SessionError, InvalidTransition) as exc:
            return f"purge of session {session.id} failed: {exc}"
        return f"session {session.id} {after.state.value}"

    def _quarantine(self, catalog: Catalog, host: str, session: Session | None,
                    finding: GuardFinding) -> str:
        """The seat out of allocation first, then its session purged (or, without one, the
        seat released on the host)."""
        seat = _seat_number(catalog, host, finding["user"])
        if seat is None:
            return f"{finding['user']} is not a seat of {host}'s pool"
        self.store.guard.quarantine(host, seat, finding["user"], finding["rule"],
                                    by=f"guard rule {finding['rule']}")
        if session is not None:
            return "quarantined; " + self._purge(session, finding)
        try:
            self.sessions.release_seat(host, finding["user"])
        except Exception as exc:  # the seat stays quarantined whatever the host said
            return f"quarantined; release of the seat failed: {exc}"
        return "quarantined; seat released"


def _seat_number(catalog: Catalog, host: str, user: str) -> int | None:
    pool = catalog.pools[catalog.hosts[host].pool]
    tail = user[len(pool.prefix):] if user.startswith(pool.prefix) else ""
    return int(tail) if tail.isdigit() and pool.first <= int(tail) <= pool.last else None
