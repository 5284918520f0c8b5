"""Hot seats in the store (SQLite, no host): they hold seats and capacity slots like live
sessions, a CREATE takes the oldest, and a release never reaches one a CREATE took."""

from __future__ import annotations

import pytest

from wodsync.store import (
    AlreadyLive,
    Candidate,
    CapacityReached,
    InvalidTransition,
    Participant,
    SessionState,
    open_store,
)

SEATS = [Candidate("lab", "lab1", n, f"wodqe{n}") for n in range(1, 5)]


@pytest.fixture
def store(tmp_path):
    opened = open_store(state_dir=tmp_path / "state")
    yield opened
    opened.close()


def _hot(store, event: str = "conf"):
    session = store.hot.reserve(event, "WKSHP-Hot", SEATS, 3, 2.0, "rev", "pw-" + event)
    return store.hot.ready(session.id, "ready")


def test_hot_seats_take_seats_and_capacity_like_sessions(store):
    first, second = _hot(store), _hot(store)
    assert (first.state, first.seat, second.seat) == (SessionState.HOT, 1, 2)
    assert first.email.endswith("@conf.hot.invalid")
    bo = store.sessions.allocate("WKSHP-Hot", Participant("Bo", "bo@example.org"), SEATS, 3,
                                 2.0, "rev", "pw")
    assert bo.seat == 3  # the hot seats' seats are not free
    with pytest.raises(CapacityReached):
        _hot(store)


def test_a_create_takes_the_oldest_hot_seat_once_per_participant(store):
    first, second = _hot(store), _hot(store)
    cy = Participant("Cy", "cy@example.org", "ACME")
    taken = store.hot.take("WKSHP-Hot", cy, ["lab1"], 2.0)
    assert taken is not None and taken.id == first.id
    assert (taken.state, taken.email, taken.password) == (SessionState.CREATING,
                                                          "cy@example.org", first.password)
    with pytest.raises(AlreadyLive):
        store.hot.take("WKSHP-Hot", cy, ["lab1"], 2.0)
    assert store.hot.take("WKSHP-Hot", Participant("Di", "di@x.org"), ["other"], 2.0) is None
    counts = store.hot.per_event()["conf"]
    assert (counts.ready, counts.preparing, counts.taken) == (1, 0, 1)
    assert [s.id for s in store.hot.waiting("conf")] == [second.id]


def test_a_hot_seat_a_create_took_is_never_retired(store):
    hot = _hot(store)
    store.hot.take("WKSHP-Hot", Participant("Ed", "ed@example.org"), ["lab1"], 2.0)
    with pytest.raises(InvalidTransition):
        store.hot.retire(hot.id, "event over")
    assert store.sessions.get(hot.id).state is SessionState.CREATING
    other = _hot(store)
    retired = store.hot.retire(other.id, "event over")
    assert (retired.state, retired.release_op, retired.password) == (
        SessionState.RELEASING, "purge", "")
    assert store.hot.event_of() == {}
