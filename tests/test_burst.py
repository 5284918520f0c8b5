"""The burst of CREATEs: concurrent seats of one host share agent calls, at most `lanes` calls
in flight per host, each seat gets its own answer and a failed call fails its own seats only.
(The agent side of a shared call, against real accounts: `test_sessions.py`.)

No sleeps decide an outcome here: the stand-in agent holds its calls on events and barriers,
and each test waits for the queue state it needs (`Burst.waiting`) before letting calls go, so
the batches formed are the same on every run, however the threads are scheduled."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from wodsync.sessions import service as service_module
from wodsync.sessions.burst import Burst

from helpers import until


class Agent:
    """Stands in for `Connections.call`: answers each seat with its user, counting calls in
    flight; a seat named `boom` makes the whole call fail.

    `hold(users)` runs inside the call, while it counts as in flight: the tests make calls wait
    there on an event or a barrier. `entered` is set once a first call is inside."""

    def __init__(self, hold: Callable[[list[str]], None] | None = None) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls: list[tuple[str, list[str]]] = []
        self.entered = threading.Event()

    def __call__(self, name: str, host: Any, payload: dict[str, Any]) -> dict[str, Any]:
        users = [s["user"] for s in payload["seats"]]
        with self.lock:
            self.calls.append((name, users))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.entered.set()
        try:
            if self.hold is not None:
                self.hold(users)
            if "boom" in users:
                raise ConnectionError("the host went away")
            return {"seats": [{"ok": True, "user": u} for u in users]}
        finally:
            with self.lock:
                self.in_flight -= 1


def _held_until(release: threading.Event) -> Callable[[list[str]], None]:
    """A hold that keeps every call in flight until `release` is set (bounded, so a broken
    Burst fails the test instead of hanging it)."""
    def hold(users: list[str]) -> None:
        assert release.wait(30), "never released"
    return hold


def _seat(user: str) -> dict[str, Any]:
    return {"user": user, "state_dir": "/var/lib/wodsync", "owner": "host h"}


class _Creates:
    """CREATEs started in threads, one per (host, user); `join()` returns each user's answer
    or the exception its CREATE raised."""

    def __init__(self, burst: Burst, jobs: list[tuple[str, str]]) -> None:
        self.results: dict[str, Any] = {}
        self.threads = [threading.Thread(target=self._one, args=(burst, *job)) for job in jobs]
        for t in self.threads:
            t.start()

    def _one(self, burst: Burst, host: str, user: str) -> None:
        try:
            self.results[user] = burst.create(host, None, _seat(user))  # type: ignore[arg-type]
        except Exception as exc:
            self.results[user] = exc

    def join(self) -> dict[str, Any]:
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a CREATE never returned"
        return self.results


def _run_all(burst: Burst, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    return _Creates(burst, jobs).join()


def test_a_create_alone_leaves_at_once_with_its_seat_alone():
    agent = Agent()
    burst = Burst(agent, lanes=2)
    assert burst.create("h", None, _seat("s1")) == {"ok": True, "user": "s1"}  # type: ignore[arg-type]
    assert agent.calls == [("h", ["s1"])]


def test_a_burst_shares_calls_within_the_lanes_and_answers_each_seat():
    """Both lanes are held until the 38 other CREATEs wait; then they leave in calls of at
    most 16: 1 + 1 + 16 + 16 + 6 seats, five calls for forty seats."""
    release = threading.Event()
    agent = Agent(_held_until(release))
    burst = Burst(agent, lanes=2, most=16)
    users = [f"s{n}" for n in range(40)]
    creates = _Creates(burst, [("h", u) for u in users])
    until(lambda: burst.waiting("h") == 38, "the other CREATEs never queued", timeout=30)
    assert agent.in_flight == 2, "a CREATE that finds a free lane leaves at once"
    release.set()
    results = creates.join()
    assert {u: r["user"] for u, r in results.items()} == {u: u for u in users}
    assert agent.most_in_flight == 2
    assert sorted(len(seats) for _, seats in agent.calls) == [1, 1, 6, 16, 16], \
        "seats waiting for a lane leave together, at most `most` a call"
    assert sorted(u for _, seats in agent.calls for u in seats) == sorted(users), \
        "every seat in exactly one call"


def test_hosts_have_lanes_of_their_own():
    """Each host has one lane; both calls must be inside the agent at once to pass the
    barrier. Were the hosts sharing a lane, the first call would wait there alone and the
    barrier would break, failing both CREATEs."""
    meet = threading.Barrier(2, timeout=10)
    agent = Agent(lambda users: meet.wait() and None)
    burst = Burst(agent, lanes=1)
    results = _run_all(burst, [("h1", "a"), ("h2", "b")])
    assert results == {"a": {"ok": True, "user": "a"}, "b": {"ok": True, "user": "b"}}
    assert agent.most_in_flight == 2, "a busy host never holds another"


def test_a_failed_call_fails_its_own_seats_only():
    """The lane is held by `first` until `boom` and `x` both wait; they leave in one call,
    which fails, failing both of them and nobody else; the lane is given back."""
    release = threading.Event()
    agent = Agent(lambda users: users == ["first"] and _held_until(release)(users))
    burst = Burst(agent, lanes=1)
    first = _Creates(burst, [("h", "first")])
    assert agent.entered.wait(30), "the first CREATE never reached the agent"
    rest = _Creates(burst, [("h", "boom"), ("h", "x")])
    until(lambda: burst.waiting("h") == 2, "the next CREATEs never queued", timeout=30)
    release.set()
    assert first.join() == {"first": {"ok": True, "user": "first"}}
    results = rest.join()
    assert all(isinstance(results[u], ConnectionError) for u in ("boom", "x"))
    assert sorted(sorted(seats) for _, seats in agent.calls) == [["boom", "x"], ["first"]]
    after = burst.create("h", None, _seat("y"))  # type: ignore[arg-type]
    assert after["ok"], "the lane was given back"


@pytest.mark.parametrize("lanes", [1, 3])
def test_nobody_waits_forever(lanes):
    """The lanes are held until every other CREATE queues, so the queue really is longer
    than `most`; each of the 25 still gets its answer and the queue ends empty."""
    release = threading.Event()
    agent = Agent(_held_until(release))
    burst = Burst(agent, lanes=lanes, most=3)
    creates = _Creates(burst, [("h", f"s{n}") for n in range(25)])
    until(lambda: burst.waiting("h") == 25 - lanes, "the CREATEs never queued", timeout=30)
    release.set()
    results = creates.join()
    assert sorted(results) == sorted(f"s{n}" for n in range(25))
    assert all(r["ok"] for r in results.values()) and burst.waiting("h") == 0
    assert max(len(seats) for _, seats in agent.calls) == 3


class _Clock:
    """Time for the expiry loop without waiting: `monotonic()` reads it, and the loop's
    stop-event `wait(seconds)` moves it on by `seconds` and reports a stop once `end` is
    reached. Fractions of a power of two keep the sums exact."""

    def __init__(self, end: float) -> None:
        self.now = 0.0
        self.end = end
        self.stopped = False

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        self.stopped = self.stopped or self.now >= self.end
        return self.stopped

    def set(self) -> None:
        """`ExpiryLoop.stop()` only joins here: the loop ends when its clock reaches `end`."""


def test_the_loop_asks_for_deferred_servers_between_expiry_rounds(monkeypatch):
    """Over 0.75 s of the loop's own time, with expiry every 0.25 s and deferred servers every
    1/16 s: a deferred round at each of the twelve ticks (the first at once, each failing
    without stopping the loop) and two expiry rounds, at 0.25 s and 0.5 s."""
    clock = _Clock(end=0.75)

    class Service:
        def __init__(self) -> None:
            self.rounds: dict[str, list[float]] = {"deferred": [], "expire": []}

        def start_deferred(self) -> int:
            self.rounds["deferred"].append(clock.now)
            raise RuntimeError("a host went away")  # a bad round never stops the loop

        def expire(self) -> list:
            self.rounds["expire"].append(clock.now)
            return []

        def retry_releases(self) -> list:
            return []

        def unsynced(self) -> list:
            return []

        def take_over_dead(self) -> list:
            return []

    monkeypatch.setattr(service_module, "DEFERRED_EVERY", 1 / 16)
    monkeypatch.setattr(service_module, "time", clock)
    fake = Service()
    loop = service_module.ExpiryLoop(fake, interval=0.25)  # type: ignore[arg-type]
    loop._stop = clock  # type: ignore[assignment]
    loop.start()
    loop.stop()
    assert sorted(set(fake.rounds["deferred"])) == [n / 16 for n in range(12)], \
        "a deferred round at every tick, the loop going on after each failed one"
    assert fake.rounds["expire"] == [0.25, 0.5]
