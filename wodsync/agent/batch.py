"""The two generic operations over resource kinds: observe (read-only) and apply (a batch).

`observe` asks each kind in the request for its facts and returns them with a digest per kind.
`apply` takes the host lock, observes again the kinds the controller planned against and refuses
when any digest moved (the plan applied is the plan made), then runs every kind's phases in
their global order, recording per-phase failures and timings. Kinds are found through the
registry of host halves (`agent.kinds`); this module knows none of them by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from wodsync.agent import hostlock, manager
from wodsync.agent.host import HostSide, Stopped, digest
from wodsync.agent.kinds import KINDS
from wodsync.agent.protocol import ApplyAnswer, ApplyRequest, ObserveAnswer, ObserveRequest

MIN_TIMING = 0.005

Phase = tuple[int, str, Callable[[Any, HostSide], None], Any]


def _kind(name: str) -> ModuleType:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown resource kind {name!r}") from None


def _digest(kind: str, facts: Any) -> str:
    """A kind's facts digest, without what its `stable` says moves on its own (counters)."""
    stable = getattr(_kind(kind), "stable", None)
    return digest(stable(facts) if stable else facts)


def _facts(probes: dict[str, Any], host: HostSide,
           timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Each kind's facts, the kinds observed side by side: a hub's listings are mostly waiting
    for the hub, while the accounts and their homes are read meanwhile. A kind that fails
    raises as it did one after the other (the first in the request's order); observing is
    read-only, so the others having run changes nothing. With `timings`, the seconds each
    kind took are put there."""
    def one(kind: str) -> Any:
        start = time.monotonic()
        found = _kind(kind).observe(probes[kind], host)
        if timings is not None:
            timings[kind] = round(time.monotonic() - start, 4)
        return found

    if len(probes) < 2:
        return {kind: one(kind) for kind in probes}
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        running = {kind: pool.submit(one, kind) for kind in probes}
        return {kind: future.result() for kind, future in running.items()}


def observe(payload: ObserveRequest, host: HostSide | None = None) -> ObserveAnswer:
    host = host or HostSide(payload["state_dir"], payload.get("owner"))
    timings: dict[str, float] = {}
    facts = _facts(payload["probes"], host, timings)
    start = time.monotonic()
    digests = {kind: _digest(kind, f) for kind, f in facts.items()}
    timings["digests"] = round(time.monotonic() - start, 4)
    return {"facts": facts, "digests": digests,
            "manager": manager.read(payload["state_dir"]), "timings": timings}


def _phases(batch: dict[str, Any]) -> list[Phase]:
    found: list[Phase] = []
    for kind, part in batch.items():
        for order, name, fn in _kind(kind).PHASES:
            found.append((order, f"{kind}.{name}", fn, part))
    return sorted(found, key=lambda p: (p[0], p[1]))


def _stale(payload: ApplyRequest, host: HostSide) -> list[str]:
    expect = payload.get("expect") or {}
    probes = {kind: payload["probes"][kind] for kind in expect}
    now = {kind: _digest(kind, f) for kind, f in _facts(probes, host).items()}
    return sorted(kind for kind, d in expect.items() if now[kind] != d)


def apply(payload: ApplyRequest, host: HostSide | None = None) -> ApplyAnswer:
    """Under the host lock: refuse a caller another store's daemon does not let in
    (`manager`) and a stale plan, else run the phases in order."""
    state_dir = payload["state_dir"]
    host = host or HostSide(state_dir, payload.get("owner"))
    with hostlock.hold(state_dir, "apply", timeout=payload.get("lock_timeout", 30.0),
                       stop=host.stop_requested):
        manager.admit(state_dir, payload.get("manager"))
        stale = _stale(payload, host)
        if stale:
            return {"stale": stale, "log": [], "failures": [], "timings": {}, "skipped": []}
        skipped = []
        phases = _phases(payload["batch"])
        for step, (_order, name, fn, part) in enumerate(phases):
            host.progress(phase=name, step=step, steps=len(phases))
            if host.stop_requested.is_set():
                skipped.append(name)
                continue
            start = time.monotonic()
            try:
                fn(part, host)
            except Stopped:
                skipped.append(name)
            except Exception as exc:  # one phase failing never stops the others
                host.fail(name, f"{type(exc).__name__}: {exc}")
            elapsed = time.monotonic() - start
            if elapsed >= MIN_TIMING:
                host.timings[name] = round(elapsed, 3)
        return {"stale": [], "log": host.log, "failures": host.failures,
                "timings": host.timings, "skipped": skipped}
