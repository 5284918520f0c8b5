"""The burst of CREATEs: concurrent seats of one host share agent calls, at most `lanes` calls
in flight per host, each seat gets its own answer and a failed call fails its own seats only.
(The agent side of a shared call, against real accounts: `test_sessions.py`.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from wodsync.sessions.burst import Burst


class Agent:
    """Stands in for `Connections.call`: answers each seat with its user after `delay`,
    counting calls in flight; a seat named `boom` makes the whole call fail."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, name: str, host: Any, payload: dict[str, Any]) -> dict[str, Any]:
        users = [s["user"] for s in payload["seats"]]
        with self.lock:
            self.calls.append((name, users))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if "boom" in users:
                raise ConnectionError("the host went away")
            return {"seats": [{"ok": True, "user": u} for u in users]}
        finally:
            with self.lock:
                self.in_flight -= 1


def _seat(user: str) -> dict[str, Any]:
    return {"user": user, "state_dir": "/var/lib/wodsync", "owner": "host h"}


def _run_all(burst: Burst, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def one(host: str, user: str) -> None:
        try:
            results[user] = burst.create(host, None, _seat(user))  # type: ignore[arg-type]
        except Exception as exc:
            results[user] = exc

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_a_create_alone_leaves_at_once_with_its_seat_alone():
    agent = Agent()
    burst = Burst(agent, lanes=2)
    assert burst.create("h", None, _seat("s1")) == {"ok": True, "user": "s1"}  # type: ignore[arg-type]
    assert agent.calls == [("h", ["s1"])]


def test_a_burst_shares_calls_within_the_lanes_and_answers_each_seat():
    agent = Agent()
    burst = Burst(agent, lanes=2, most=16)
    users = [f"s{n}" for n in range(40)]
    results = _run_all(burst, [("h", u) for u in users])
    assert {u: r["user"] for u, r in results.items()} == {u: u for u in users}
    assert agent.most_in_flight <= 2
    assert len(agent.calls) < 20, "seats waiting for a lane leave together"
    assert max(len(seats) for _, seats in agent.calls) <= 16
    assert sorted(u for _, seats in agent.calls for u in seats) == sorted(users), \
        "every seat in exactly one call"


def test_hosts_have_lanes_of_their_own():
    agent = Agent(delay=0.2)
    burst = Burst(agent, lanes=1)
    results = _run_all(burst, [("h1", "a"), ("h2", "b")])
    assert set(results) == {"a", "b"}
    assert agent.most_in_flight == 2, "a busy host never holds another"


def test_a_failed_call_fails_its_own_seats_only():
    agent = Agent(delay=0.2)
    burst = Burst(agent, lanes=1)
    first = threading.Thread(target=burst.create, args=("h", None, _seat("first")))
    first.start()
    time.sleep(0.05)  # the lane is taken: the next seats wait and leave in one call
    results = _run_all(burst, [("h", "boom"), ("h", "x")])
    first.join()
    assert all(isinstance(results[u], ConnectionError) for u in ("boom", "x"))
    after = burst.create("h", None, _seat("y"))  # type: ignore[arg-type]
    assert after["ok"], "the lane was given back"


@pytest.mark.parametrize("lanes", [1, 3])
def test_nobody_waits_forever(lanes):
    agent = Agent(delay=0.01)
    burst = Burst(agent, lanes=lanes, most=3)
    results = _run_all(burst, [("h", f"s{n}") for n in range(25)])
    assert len(results) == 25 and burst.waiting("h") == 0


def test_the_loop_asks_for_deferred_servers_between_expiry_rounds(monkeypatch):
    from wodsync.sessions import service as service_module

    class Service:
        def __init__(self) -> None:
            self.rounds = {"deferred": 0, "expire": 0}

        def start_deferred(self) -> int:
            self.rounds["deferred"] += 1
            raise RuntimeError("a host went away")  # a bad round never stops the loop

        def expire(self) -> list:
            self.rounds["expire"] += 1
            return []

        def retry_releases(self) -> list:
            return []

        def unsynced(self) -> list:
            return []

    monkeypatch.setattr(service_module, "DEFERRED_EVERY", 0.02)
    fake = Service()
    loop = service_module.ExpiryLoop(fake, interval=0.2)  # type: ignore[arg-type]
    loop.start()
    time.sleep(0.75)
    loop.stop()
    assert fake.rounds["deferred"] >= 10
    assert 2 <= fake.rounds["expire"] <= 4
