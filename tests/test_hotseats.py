"""Hot seats of a scheduled event, on real accounts and homes of this machine (no hub: the
server side of a hot seat is the deferred-start code's, exercised by the hub tests).

The lab (`hotseatlab`): pool `wodqe` (uids 41801-41840), one local host, workshop WKSHP-Hot
(capacity 4) and event `conf` (4 expected × 0.5 warm = 2 hot seats,
lead 60 minutes). Time is passed to `keep` explicitly, so "before the lead", "during the event"
and "after its end" are moments of one run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wodsync.controller import open_controller
from wodsync.daemon.metrics import Metrics
from wodsync.daemon.views import status_view
from wodsync.secrets import Secrets
from wodsync.sessions.service import NoSeat
from wodsync.store import Participant, SessionState

from helpers import wodsync as run_wodsync
from hotseatlab import HOMES, cleanup, pam_login, range_taken, write_catalog
from sessionlab import wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

START = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
EVENTS = ("events:\n  - name: conf\n    workshop: WKSHP-Hot\n"
          f"    start: {START.isoformat()}\n    hours: 2\n    expected: 4\n    warm: 0.5\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict[str, Path]]:
    taken = range_taken()
    if taken:
        pytest.skip(f"the lab's uids 41801-41840 are used by others: {taken[:3]}")
    cleanup()
    tmp = tmp_path_factory.mktemp("hotseats")
    root, gone = tmp / "repo", tmp / "repo-without-event"
    write_catalog(root, tmp, EVENTS)
    write_catalog(gone, tmp, "")
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "gone": gone, "tmp": tmp, "state": tmp / "state"}
    cleanup()


@pytest.fixture(scope="module")
def ctl(lab):
    controller = open_controller(lab["root"], lab["state"], None, Secrets())
    yield controller
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def _shadow(user: str) -> str:
    return next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":")).split(":")[1]


def _password_works(user: str, password: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = _shadow(user)
    return crypt.crypt(password, hashed) == hashed


def _record(lab: dict[str, Path], user: str) -> dict[str, object] | None:
    path = lab["tmp"] / "state-lab1" / "seats" / f"{user}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ready(ctl) -> list:
    return [s for s in ctl.store.hot.waiting("conf") if s.state is SessionState.HOT]


def test_nothing_is_prepared_before_the_lead_time(ctl):
    before = START - timedelta(minutes=61)
    assert ctl.sessions.hot.keep(before).prepared == {}
    assert ctl.store.hot.waiting() == []


def test_hot_seats_are_prepared_within_the_lead_time_under_a_locked_password(ctl, lab):
    kept = ctl.sessions.hot.keep(START - timedelta(minutes=59))
    assert kept.prepared == {"conf": 2}, kept
    hot = _ready(ctl)
    assert len(hot) == 2
    for s in hot:
        nb = json.loads((HOMES / s.username / "WKSHP-Hot/1-Part.ipynb").read_text())
        assert nb["cells"][0]["source"] == [f"# Seat {s.seat} of WKSHP-Hot"]
        assert _shadow(s.username).startswith("!")  # no login, whatever the password
        assert not _password_works(s.username, s.password)
        record = _record(lab, s.username)
        assert record is not None and (record["session"], record["state"]) == (s.id, "hot")
    # PAM (the hub's and sshd's way in) refuses the seat's own future password.
    assert not pam_login(hot[0].username, hot[0].password)
    # They hold their seats and capacity slots like sessions.
    assert ctl.store.sessions.live_per_workshop() == {"WKSHP-Hot": 2}
    # A second round keeps the pool as it is.
    assert ctl.sessions.hot.keep(START - timedelta(minutes=58)).prepared == {}
    assert ctl.store.hot.per_event()["conf"].ready == 2


def test_a_create_takes_a_hot_seat_first_and_its_password_works(ctl, lab):
    hot = {s.id: s for s in _ready(ctl)}
    created = ctl.sessions.create("WKSHP-Hot", Participant("Bo", "bo@example.org", "ACME"))
    s = created.session
    assert s.id in hot and s.state is SessionState.ACTIVE
    assert (s.email, s.name, s.username) == ("bo@example.org", "Bo", hot[s.id].username)
    assert _password_works(s.username, s.password)
    assert pam_login(s.username, s.password)
    record = _record(lab, s.username)
    assert record is not None and record["state"] == "active"
    assert record["email"] == "bo@example.org"
    assert ctl.store.hot.per_event()["conf"].taken == 1
    print(f"\nCREATE on a hot seat: {created.seconds:.3f} s")


def test_the_pool_refills_while_the_event_lasts(ctl):
    kept = ctl.sessions.hot.keep(START + timedelta(minutes=5))
    assert kept.prepared == {"conf": 1}
    assert len(_ready(ctl)) == 2


def test_status_metrics_and_the_cli_show_hot_seats_per_event(ctl, lab):
    assert status_view(ctl.store)["hotSeats"] == {"conf": {"ready": 2, "preparing": 0,
                                                           "taken": 1}}
    metrics = Metrics()
    metrics.watch_sessions(ctl.store, lambda: {"WKSHP-Hot": 4})
    text = metrics.exposition().decode()
    assert 'wodsync_hot_seats{event="conf",state="ready"} 2.0' in text
    assert 'wodsync_hot_seats{event="conf",state="taken"} 1.0' in text
    shown = run_wodsync("event", "show", "conf", "--json", "--root", lab["root"],
                        "--state-dir", lab["state"])
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert (row["hot_target"], row["ready"], row["taken"]) == (2, 2, 1)
    assert sorted(s["state"] for s in row["seats"]) == ["hot", "hot"]


def test_hot_seats_count_against_capacity_and_never_take_a_live_session(ctl):
    # 4 live now: 1 participant, 2 hot, + this one taking a hot seat and a refill.
    ctl.sessions.create("WKSHP-Hot", Participant("Cy", "cy@example.org", "ACME"))
    kept = ctl.sessions.hot.keep(START + timedelta(minutes=6))
    assert kept.prepared == {"conf": 1}
    assert ctl.store.sessions.live_per_workshop() == {"WKSHP-Hot": 4}
    ctl.sessions.create("WKSHP-Hot", Participant("Di", "di@example.org", "ACME"))
    kept = ctl.sessions.hot.keep(START + timedelta(minutes=7))
    assert kept.prepared == {} and "full" in " ".join(kept.problems), kept
    ctl.sessions.create("WKSHP-Hot", Participant("Ed", "ed@example.org", "ACME"))
    with pytest.raises(NoSeat):
        ctl.sessions.create("WKSHP-Hot", Participant("Fy", "fy@example.org", "ACME"))
    people = ctl.store.sessions.find(state=SessionState.ACTIVE)
    assert sorted(p.email for p in people) == ["bo@example.org", "cy@example.org",
                                               "di@example.org", "ed@example.org"]


def test_hot_seats_left_at_the_end_are_released(ctl, lab):
    ctl.sessions.cleanup(ctl.store.sessions.find(email="ed@example.org", live=True)[0].id)
    ctl.sessions.hot.keep(START + timedelta(minutes=8))  # one hot seat again
    left = _ready(ctl)
    assert len(left) == 1
    kept = ctl.sessions.hot.keep(START + timedelta(hours=2, minutes=1))
    assert kept.released == [left[0].id]
    ended = ctl.store.sessions.get(left[0].id)
    assert ended.state is SessionState.ENDED
    assert _record(lab, ended.username) is None
    assert list((HOMES / ended.username).iterdir()) == []
    assert _shadow(ended.username).startswith("!")
    assert len(ctl.store.sessions.find(state=SessionState.ACTIVE)) == 3  # untouched


def test_an_event_deleted_from_the_catalog_releases_its_hot_seats(lab, ctl):
    ctl.sessions.hot.keep(START - timedelta(minutes=30))
    hot = _ready(ctl)
    assert hot, "the lab should have a hot seat again"
    other = open_controller(lab["gone"], lab["state"], None, Secrets())
    try:
        kept = other.sessions.hot.keep(START - timedelta(minutes=29))
    finally:
        other.close()
    assert sorted(kept.released) == sorted(s.id for s in hot)
    assert all(ctl.store.sessions.get(s.id).state is SessionState.ENDED for s in hot)


def test_hot_seats_go_where_a_create_would_an_alternate_when_the_location_has_no_host(lab, ctl):
    """The workshop's own location `far` has no host; its alternate `lab` has: the hot seats
    are prepared there, as the CREATE that takes one would go, and that CREATE takes one."""
    alt = lab["tmp"] / "repo-alternate"
    write_catalog(alt, lab["tmp"], EVENTS, where="location: far\nalternate_locations: [lab]\n")
    other = open_controller(alt, lab["state"], None, Secrets())
    try:
        for s in other.store.sessions.find(live=True):  # the workshop's capacity is 4
            other.sessions.purge(s.id, "room for this test")
        kept = other.sessions.hot.keep(START - timedelta(minutes=30))
        assert kept.prepared == {"conf": 2}, kept
        hot = [s for s in other.store.hot.waiting("conf") if s.state is SessionState.HOT]
        revision = other.sessions.deployment().revision
        assert {(s.host, s.location, s.revision) for s in hot} == {("lab1", "lab", revision)}
        created = other.sessions.create("WKSHP-Hot", Participant("Al", "al@example.org"))
        assert created.session.id in {s.id for s in hot}
        assert pam_login(created.session.username, created.session.password)
    finally:
        for s in other.store.sessions.find(live=True):
            other.sessions.purge(s.id, "test teardown")
        other.close()
