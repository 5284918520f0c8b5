"""The ends of several sessions' seats in one call (`seat_end`): the CLEANUPs, RESETs and
PURGEs of a burst, brought together by the controller (`sessions.burst`).

Why: when an event ends, its participants leave together; one call per seat pays a round trip
and a rewrite of /etc/shadow for each of them, one after the other under the accounts lock. So
the seats of one call lock their passwords in one write, and share the round trip; everything
else is each seat's own, in the order `seats._release_steps` gives, exactly as `seat_cleanup`,
`seat_reset` and `seat_purge` do for one seat.

Each seat keeps the guarantees of a release on its own: its hook and its completion count may
fail, its release steps run regardless; a shared step that fails is done again seat by seat, so
a failure is the failing seat's alone; a seat's record goes only once its own release finished
(`releasing` else, for the controller to retry); a seat recorded for another session is never
touched. A seat's timing of a shared step is the whole step's.
"""

from __future__ import annotations

import pwd
import time
from collections.abc import Callable, Sequence
from typing import Any, Dict, List, Optional

from wodsync.agent import accountsdb, hooks, records, seats
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import Seat, SeatAnswer, SeatEndAnswer, SeatEndRequest
from wodsync.agent.steps import Steps

HOOKS = {"cleanup": "cleanup", "reset": "reset", "purge": None}
"""Each end and the hook it runs (a PURGE runs none)."""


class _Ending:
    """One seat of a `seat_end` call: its payload, steps, account and what did not finish."""

    def __init__(self, payload: Seat) -> None:
        self.payload = payload
        self.end = payload.get("end", "purge")
        self.steps = Steps()
        self.errors: List[str] = []
        self.user: Optional[pwd.struct_passwd] = None
        self.record: Optional[records.Record] = None
        self.occupied: Optional[records.Record] = None
        self.counted: Any = None

    @property
    def hold(self) -> bool:
        return self.end == "cleanup" and bool(self.payload.get("hold"))


def end(payload: SeatEndRequest, host: HostSide) -> SeatEndAnswer:
    """Operation `seat_end`: each seat of `seats` ended as its `end` says (cleanup, reset,
    purge), each answered on its own, as `seat_<end>` would answer it."""
    endings = [_Ending(p) for p in payload["seats"]]
    unknown = [e.end for e in endings if e.end not in HOOKS]
    if unknown:
        raise ValueError(f"unknown end {unknown[0]!r} (known: {', '.join(sorted(HOOKS))})")
    users = [e.payload["user"] for e in endings]
    with records.locked(payload["state_dir"], users, seats._lock_timeout(payload)):
        going = [e for e in endings if _begin(e)]
        try:
            _release(going)
        finally:
            for e in going:
                seats._settle_record(e.payload, e.record, e.hold, e.errors)
    return {"seats": [_answer(e) for e in endings]}


def _begin(ending: _Ending) -> bool:
    """The seat's record checked, its hook run and its completion counted (either may fail:
    noted, the release goes on). False: the host records the seat for another session."""
    payload = ending.payload
    ending.record = records.read(payload["state_dir"], payload["user"])
    if ending.record is not None and not payload.get("force") \
            and records.belongs_to_other(ending.record, payload["session"]):
        ending.occupied = seats._occupied(ending.record)
        return False
    ending.user = seats._account(payload, ending.errors)
    hook = HOOKS[ending.end]
    try:
        if hook:
            _run_hook(ending, hook)
        if ending.end == "cleanup":
            with ending.steps.step("count completion"):
                ending.counted = seats._completion(payload, ending.user)
    except Exception as exc:  # the release steps run whatever happened before them
        ending.errors.append(f"{ending.steps.current}: {type(exc).__name__}: {exc}")
    return True


def _run_hook(ending: _Ending, hook: str) -> None:
    try:
        with ending.steps.step(f"{hook} hook"):
            hooks.run_hook(ending.payload, hook, ending.steps)
    except Exception as exc:
        ending.errors.append(str(exc))


SHARED: Dict[str, Callable[[Sequence[Seat]], Dict[str, str]]] = {}
"""Release steps done for all the seats of a call at once: step name → a function of the
seats' payloads answering user → error for the seats it could not do."""


def _lock_passwords(payloads: Sequence[Seat]) -> Dict[str, str]:
    """Every seat's password locked in one write of the accounts databases; an account the
    databases refuse is that seat's error alone."""
    outcome = accountsdb.apply({"password_fields": {p["user"]: "!" for p in payloads}})
    return {e["subject"]: e["message"] for e in outcome["errors"]}


SHARED["lock password"] = _lock_passwords


def _release(endings: List[_Ending]) -> None:
    """The release steps of every seat, step by step across the seats: a shared step once for
    all of them, the others seat by seat; every step is tried whatever failed before."""
    plans = {id(e): seats._release_steps(e.payload, e.user, empty=not e.hold) for e in endings}
    names: List[str] = []
    for e in endings:
        names += [name for name, _ in plans[id(e)] if name not in names]
    for name in names:
        taking = [e for e in endings if any(n == name for n, _ in plans[id(e)])]
        if name in SHARED and len(taking) > 1 and _shared(name, taking):
            continue
        for e in taking:
            seats._try_all([s for s in plans[id(e)] if s[0] == name], e.steps, e.errors)


def _shared(name: str, endings: List[_Ending]) -> bool:
    """The step done once for `endings`; False when it failed as a whole (each seat then does
    it on its own)."""
    start = time.monotonic()
    try:
        refused = SHARED[name]([e.payload for e in endings])
    except Exception:
        return False
    took = round(time.monotonic() - start, 4)
    for e in endings:
        e.steps.timings[name] = took
        if e.payload["user"] in refused:
            e.errors.append(f"{name}: {refused[e.payload['user']]}")
    return True


def _answer(ending: _Ending) -> SeatAnswer:
    if ending.occupied is not None:
        return ending.steps.answer(
            ok=False, error=f"seat {ending.payload['user']} is held on the host by session "
            f"{ending.occupied.get('session')}", occupied=ending.occupied)
    return ending.steps.answer(ok=not ending.errors, error="; ".join(ending.errors) or None,
                               completion=ending.counted)


OPERATIONS: Dict[str, Callable[[Any, HostSide], Any]] = {"seat_end": end}
