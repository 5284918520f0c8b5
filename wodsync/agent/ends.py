"""The ends of several sessions' seats in one call (`seat_end`): the CLEANUPs, RESETs and
PURGEs of a burst, brought together by the controller (`sessions.burst`).

Why: when an event ends, its participants leave together; one call per seat pays a round trip
and a rewrite of /etc/shadow for each of them, one after the other under the accounts lock. So
the seats of one call lock their passwords in one write, and share the round trip; everything
else is each seat's own, in the order `seats._release_steps` gives, exactly as `seat_cleanup`,
`seat_reset` and `seat_purge` do for one seat — the seats side by side, each going through its
own steps at its own pace (they mostly wait: for the hub, for processes to end, for a hook), as
the persistent agent runs separate requests. (Making the seats go step after step together,
every server asked to stop before any hub user is deleted, measured twice as slow: the hub
is the bottleneck, and a call then waits for its slowest seat at every step.)

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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from wodsync.agent import accountsdb, hooks, records, seats
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import Seat, SeatAnswer, SeatEndAnswer, SeatEndRequest
from wodsync.agent.steps import Steps

HOOKS = {"cleanup": "cleanup", "reset": "reset", "purge": None}
"""Each end and the hook it runs (a PURGE runs none)."""
AT_ONCE = 8
"""Seats of a call whose own steps run side by side."""


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
        self.scored: Any = None  # the workshop's checks, run at CLEANUP (`agent.checks`)

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
        began = _each(_begin, endings)
        going = [e for n, e in enumerate(endings) if began[n]]
        try:
            _release(going)
        finally:
            for e in going:
                seats._settle_record(e.payload, e.record, e.hold, e.errors)
    return {"seats": [_answer(e) for e in endings]}


def _begin(ending: _Ending) -> bool:
    """The seat's record checked; at CLEANUP its checks scored; its hook run and its
    completion counted (any may fail: noted, the release goes on). False: the host records
    the seat for another session."""
    payload = ending.payload
    ending.record = records.read(payload["state_dir"], payload["user"])
    if ending.record is not None and not payload.get("force") \
            and records.belongs_to_other(ending.record, payload["session"]):
        ending.occupied = seats._occupied(ending.record)
        return False
    ending.user = seats._account(payload, ending.errors)
    hook = HOOKS[ending.end]
    try:
        if ending.end == "cleanup":  # the student's work scored as they left it
            ending.scored = seats._checks(payload, ending.user, ending.steps)
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


def _each(fn: Callable[[_Ending], Any], endings: List[_Ending]) -> List[Any]:
    """`fn` of each seat, side by side (at most `AT_ONCE`): a seat's steps mostly wait — for
    the hub, for processes to end, for a hook — and a call's seats must not wait for each
    other's. Each seat's own steps stay in their order."""
    if len(endings) < 2:
        return [fn(e) for e in endings]
    with ThreadPoolExecutor(min(AT_ONCE, len(endings))) as pool:
        return list(pool.map(fn, endings))


def _release(endings: List[_Ending]) -> None:
    """The release steps of every seat: a shared step once for all the seats it is next for,
    the steps between two shared ones each seat's own, the seats side by side; every step is
    tried whatever failed before."""
    plans = {id(e): seats._release_steps(e.payload, e.user, empty=not e.hold) for e in endings}
    done = {id(e): 0 for e in endings}  # how many of its steps each seat has tried

    def step_of(e: _Ending) -> Optional[str]:
        plan, n = plans[id(e)], done[id(e)]
        return plan[n][0] if n < len(plan) else None

    def alone(e: _Ending) -> None:
        """The seat's next step, on its own."""
        n = done[id(e)]
        seats._try_all(plans[id(e)][n:n + 1], e.steps, e.errors)
        done[id(e)] = n + 1

    def until(name: Optional[str]) -> Callable[[_Ending], None]:
        """A seat's own steps up to the shared step `name` (None: to its last)."""
        def run(e: _Ending) -> None:
            while step_of(e) is not None and step_of(e) != name:
                alone(e)
        return run

    for name in SHARED if len(endings) > 1 else ():
        _each(until(name), endings)
        taking = [e for e in endings if step_of(e) == name]
        if not taking:
            continue
        if _shared(name, taking):
            for e in taking:
                done[id(e)] += 1
        else:  # failed as a whole: each seat does it on its own
            _each(alone, taking)
    _each(until(None), endings)


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
                               completion=ending.counted, checks=ending.scored)


OPERATIONS: Dict[str, Callable[[Any, HostSide], Any]] = {"seat_end": end}
