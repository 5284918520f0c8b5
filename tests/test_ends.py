"""The order of a `seat_end` call's release steps (`agent/ends.py`), without accounts: each
seat's steps in their order, a shared step once for all the seats, a shared step that fails as
a whole done again seat by seat, and a seat the shared step refuses failing alone. The steps
only record themselves here; the real steps on real seats are `test_cleanup_burst.py`'s."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from wodsync.agent import ends, seats
from wodsync.agent.ends import _Ending, _release

NAMES = ["lock password", "stop server", "sweep leftovers", "empty home"]


@pytest.fixture
def journal(monkeypatch) -> dict[str, list[str]]:
    """user → the steps run for it, in order; "lock password" done alone is "lock alone"."""
    done: dict[str, list[str]] = {}
    lock = threading.Lock()

    def steps(payload: Any, user: Any, empty: bool = True) -> list[tuple[str, Any]]:
        def record(name: str) -> Any:
            def run() -> None:
                with lock:
                    done.setdefault(payload["user"], []).append(
                        "lock alone" if name == "lock password" else name)
                if name == "sweep leftovers" and payload["user"] == "bad":
                    raise OSError("a folder that cannot be read")
            return run
        return [(n, record(n)) for n in NAMES if empty or n != "empty home"]

    monkeypatch.setattr(seats, "_release_steps", steps)
    return done


def _endings(*users: str) -> list[_Ending]:
    return [_Ending({"user": u, "end": "purge"}) for u in users]  # type: ignore[typeddict-item]


def test_a_shared_step_runs_once_for_the_seats_and_each_seat_keeps_its_order(
        journal, monkeypatch):
    shared: list[list[str]] = []
    monkeypatch.setitem(ends.SHARED, "lock password",
                        lambda payloads: shared.append([p["user"] for p in payloads]) or
                        {"b": "no such account"})
    endings = _endings("a", "b", "bad")
    endings[2].payload["hold"] = True
    endings[2].end = "cleanup"
    _release(endings)
    assert shared == [["a", "b", "bad"]]
    assert journal == {"a": NAMES[1:], "b": NAMES[1:], "bad": NAMES[1:3]}, \
        "each seat's own steps in order; a held seat keeps its home"
    errors = {e.payload["user"]: e.errors for e in endings}
    assert errors["a"] == [] and errors["b"] == ["lock password: no such account"]
    assert errors["bad"] == ["sweep leftovers: OSError: a folder that cannot be read"], \
        "a seat's failing step is its own; its later steps were still tried"
    assert all(e.steps.timings["lock password"] == endings[0].steps.timings["lock password"]
               for e in endings)


def test_a_shared_step_that_fails_as_a_whole_is_done_seat_by_seat(journal, monkeypatch):
    def broken(payloads: Any) -> dict[str, str]:
        raise TimeoutError("the account databases are locked")

    monkeypatch.setitem(ends.SHARED, "lock password", broken)
    _release(_endings("a", "b"))
    assert journal == {"a": ["lock alone", *NAMES[1:]], "b": ["lock alone", *NAMES[1:]]}


def test_a_seat_alone_runs_every_step_itself(journal, monkeypatch):
    monkeypatch.setitem(ends.SHARED, "lock password", lambda payloads: pytest.fail("shared"))
    _release(_endings("a"))
    assert journal == {"a": ["lock alone", *NAMES[1:]]}
