"""The end of a session — CLEANUP, RESET, PURGE — made certain: a release that could not finish
is finished later.

A seat is reused by strangers: until its host has locked the password, ended the processes,
replaced the hub identity and emptied the home, the previous occupant may still be in. So a
session is `ended` only on the host's word that its release finished. When the host cannot be
reached, or a step (or a hook) failed, the session becomes `releasing`: its participant is gone
(their e-mail and the capacity slot are free) but its seat is not, and the same operation is
tried again with back-off (10 s, doubling, at most 10 min) by the expiry loop until the host
has done it. A DELETE or PURGE of such a session is accepted and queued: it is tried at once
and, failing, stays pending. An operator's PURGE runs no hook, so it also ends a release that a
failing hook keeps pending.

A host that records the seat for another session (the store was behind: restored from a
backup) is never touched: this session ended long ago for the host, and the other session is
adopted (`adoption`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from wodsync.agent.protocol import HostPayload, Seat
from wodsync.engine.remote import HostError
from wodsync.engine.transport import TransportError
from wodsync.sessions import checks, seat
from wodsync.sessions.completion import completion
from wodsync.source.revision import Deployment, NotDeployed
from wodsync.store import InvalidTransition, Session, SessionState, Store

S = SessionState
FIRST_RETRY = 10.0
LAST_RETRY = 600.0
OPERATIONS = {"cleanup": "seat_cleanup", "reset": "seat_reset", "purge": "seat_purge"}

_log = logging.getLogger("wodsync.sessions")


class ReleaseError(Exception):
    """The release cannot even be attempted (the session's host left the catalog)."""


def retry_delay(attempts: int) -> timedelta:
    """Back-off before the next try of a release already tried `attempts` times."""
    return timedelta(seconds=min(LAST_RETRY, FIRST_RETRY * 2 ** min(attempts, 16)))


@dataclass
class Release:
    """Runs release operations for a session service: `deployment()` gives the catalog and the
    secrets, `call(host, op, payload)` one agent round trip, `adopt(host, record)` takes a
    session the host records back into the store, `emit(event, session)` tells listeners;
    `end(host, seat)`, when given, carries the seat's end in a burst (`seat_end`, the seat's
    own answer back) instead of a call of its own."""

    store: Store
    deployment: Callable[[], Deployment]
    call: Callable[[str, str, HostPayload], Any]
    adopt: Callable[[str, dict[str, Any]], Any]
    emit: Callable[[str, Session], None]
    # the session's appliance account released: what did not finish (`sessions.appliance`)
    appliance: Callable[[Any, Session], list[str]] = lambda catalog, session: []
    end: Callable[[str, Seat], Any] | None = None

    def run(self, session: Session, op: str, reason: str = "") -> Session:
        """Run `op` on the session's seat: the session ends (or is held for RESET), or waits
        as `releasing` for its next try."""
        hold = op == "cleanup" and self._resets(session)
        try:
            answer = self._call(session, op, hold)
        except (TransportError, HostError, ReleaseError) as exc:
            return self._pending(session, op, f"{op.upper()} did not finish: {exc}")
        outputs = hook_outputs(answer, session.password)
        done = completion(answer.get("completion")) if op == "cleanup" else None
        if done is not None and done.percent is not None:
            self.store.sessions.set_completion(session.id, done.percent)
        scored = self._score(session, answer) if op == "cleanup" else None
        if answer.get("occupied"):
            return self._taken(session, answer["occupied"], outputs)
        if not answer["ok"]:
            return self._pending(session, op, f"{op.upper()}: {answer['error']}", outputs)
        left = self.appliance(self.deployment().catalog, session)
        if left:
            return self._pending(session, op, f"{op.upper()}: " + "; ".join(left), outputs)
        return self._finished(session, op, hold, reason, done, outputs, scored)

    def _score(self, session: Session, answer: dict[str, Any]) -> checks.Score | None:
        """The score of the checks the host ran before the CLEANUP's hook, stored beside the
        completion; None when there were none. An unreadable answer only costs the score."""
        if not answer.get("checks"):
            return None
        try:
            scored = checks.score(answer["checks"])
        except checks.ChecksError as exc:
            _log.warning("session %s: no score: %s", session.id, exc)
            return None
        self.store.sessions.set_score(session.id, scored.score)
        return scored

    def _call(self, session: Session, op: str, hold: bool) -> dict[str, Any]:
        try:
            dep = self.deployment()
        except NotDeployed as exc:  # no revision deployed yet (a daemon just started)
            raise ReleaseError(str(exc)) from None
        if session.host not in dep.catalog.hosts:
            raise ReleaseError(f"host {session.host} is no longer in the catalog")
        payload = seat.end_payload(dep.catalog, session, dep.secrets, op, hold)
        if op == "cleanup":
            problem = checks.add_to_cleanup(payload, dep.catalog, session)
            if problem:
                _log.warning("session %s: %s", session.id, problem)
        if self.end is not None:
            payload["end"] = op
            return self.end(session.host, payload)
        return self.call(session.host, OPERATIONS[op], payload)

    def _resets(self, session: Session) -> bool:
        ws = self.deployment().catalog.workshops.get(session.workshop)
        return bool(ws and ws.reset)

    def _finished(self, session: Session, op: str, hold: bool, reason: str,
                  done: Any, outputs: str, scored: checks.Score | None = None) -> Session:
        what = {"cleanup": "cleaned up", "reset": "reset done", "purge": "purged"}[op]
        message = "; ".join(m for m in (what, done.text() if done else "",
                                        scored.text() if scored else "", reason) if m)
        try:
            if hold:
                held = self.store.sessions.transition(
                    session.id, S.HELD, message=message + " (seat held until RESET)",
                    output=outputs)
                self.emit("cleaned", held)
                return held
            ended = self.store.sessions.purge(session.id, message=message, output=outputs)
        except InvalidTransition:  # another release of it finished first
            return self.store.sessions.get(session.id)
        if op == "cleanup":
            self.emit("cleaned", ended)
        return ended

    def _pending(self, session: Session, op: str, error: str, outputs: str = "") -> Session:
        current = self.store.sessions.get(session.id)
        if not current.holds_seat:
            return current
        delay = retry_delay(current.release_attempts)
        _log.warning("session %s: %s; retried in %.0f s", session.id, error,
                      delay.total_seconds())
        return self.store.sessions.schedule_release(session.id, op, error, delay,
                                                    output=outputs)

    def _taken(self, session: Session, record: dict[str, Any], outputs: str) -> Session:
        """The host records the seat for another session: that one is adopted, this one has
        long ended there — the store was behind."""
        self.adopt(session.host, {"user": session.username, **record})
        return self.store.sessions.purge(
            session.id, output=outputs,
            message=f"the host records seat {session.username} for session "
                    f"{record.get('session')}: this session ended there long ago (the store "
                    "was behind); left the seat alone")


def hook_outputs(answer: dict[str, Any], password: str = "",
                 secrets: list[str] | None = None) -> str:
    """The hooks' output for the session's history; a hook that printed the seat's password
    or a secret value it wrote (`secrets`: a token) does not get it kept there (the history
    outlives the session)."""
    parts = []
    for o in answer.get("outputs") or []:
        status = "timed out" if o["status"] is None else f"exit {o['status']}"
        parts.append(f"--- hook {o['hook']} ({status})\n{o['output']}")
    text = "\n".join(parts)
    for value in sorted(secrets or [], key=len, reverse=True):
        text = text.replace(value, "[secret]")
    return text.replace(password, "[password]") if password else text
