"""The store on real SQLite files and a real PostgreSQL: seats are never given twice, moves
follow the transition table, the schema builds and upgrades itself, and one writer runs."""

from __future__ import annotations

import base64
import os
import select
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from wodsync.store import (
    KEY_ENV,
    TRANSITIONS,
    Adoption,
    AdoptionRefused,
    AlreadyLive,
    Candidate,
    CapacityReached,
    ExtensionRefused,
    InvalidTransition,
    NoFreeSeat,
    Participant,
    Reconciliation,
    Result,
    Session,
    SessionNotFound,
    SessionState,
    Store,
    StoreError,
    StoreUnavailable,
    Trigger,
    WriterBusy,
    WriterLock,
    default_url,
    migrations,
    open_store,
    writer_holder,
    writer_running,
)
from wodsync.store.models import Base
from wodsync.store.sessions import OUTPUT_CAP

from pg import pg_url, require_server, temporary_database  # noqa: F401  (pg_url: a fixture)

S = SessionState
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TABLES = ("session_events", "sessions", "host_status", "reconciliations", "repository", "facts")
PG_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
CHILD_TIMEOUT_S = 60  # a bound so a broken test cannot hang the suite; never asserted on


# -- fixtures -----------------------------------------------------------------------------------


def _empty(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """(database URL, state dir) of an empty store on each backend."""
    state = tmp_path / "state"
    if request.param == "sqlite":
        return default_url(state), state
    monkeypatch.setenv(KEY_ENV, PG_KEY)  # one database for the module: one key, as replicas
    return request.getfixturevalue("pg_url"), state


@pytest.fixture
def store(backend: tuple[str, Path]) -> Iterator[Store]:
    url, state = backend
    state.mkdir(parents=True, exist_ok=True)
    opened = open_store(url, state_dir=state)  # the key of the passwords: state/store.key
    if opened.backend == "postgresql":
        _empty(opened)  # the module shares one database
    yield opened
    opened.close()


def seats(n: int, host: str = "wod-1", location: str = "grenoble") -> list[Candidate]:
    return [Candidate(location, host, i, f"student{i}") for i in range(1, n + 1)]


def allocate(store: Store, email: str = "ann@example.org", workshop: str = "WKSHP-API101",
             candidates: list[Candidate] | None = None, capacity: int = 100,
             now: datetime = T0) -> Session:
    return store.sessions.allocate(workshop, Participant("Ann", email, "ACME"),
                                   candidates or seats(3), capacity, 2.0, "rev1", "s3cret",
                                   now=now)


def drive(store: Store, session: Session, path: list[SessionState]) -> Session:
    for to in path:
        session = store.sessions.transition(session.id, to, now=T0)
    return session


def all_at_once(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in n threads released together; return results or raised exceptions."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# -- allocation ---------------------------------------------------------------------------------


def test_fifty_concurrent_registrations_fill_capacity_with_distinct_seats(store: Store) -> None:
    candidates = seats(40)
    results = all_at_once(50, lambda i: allocate(store, f"p{i}@example.org",
                                                 candidates=candidates, capacity=30))
    sessions = [r for r in results if isinstance(r, Session)]
    errors = [r for r in results if not isinstance(r, Session)]
    assert len(sessions) == 30
    assert len({(s.host, s.seat) for s in sessions}) == 30
    assert sorted(s.slot for s in sessions) == list(range(30))
    assert all(isinstance(e, CapacityReached) for e in errors), errors
    assert len(store.sessions.find(workshop="WKSHP-API101", live=True)) == 30


def test_fifty_concurrent_registrations_for_forty_seats_leave_ten_without_seat(
        store: Store) -> None:
    candidates = seats(40)
    results = all_at_once(50, lambda i: allocate(store, f"p{i}@example.org",
                                                 candidates=candidates, capacity=40))
    sessions = [r for r in results if isinstance(r, Session)]
    errors = [r for r in results if not isinstance(r, Session)]
    assert sorted(s.seat for s in sessions) == list(range(1, 41))
    assert len(errors) == 10 and all(isinstance(e, NoFreeSeat) for e in errors), errors


def test_fifty_workshops_racing_for_one_hosts_seats_never_share_one(store: Store) -> None:
    candidates = seats(40)  # pools are per host: every workshop may take any of these seats
    results = all_at_once(50, lambda i: allocate(store, "ann@example.org",
                                                 workshop=f"WKSHP-{i}", candidates=candidates))
    sessions = [r for r in results if isinstance(r, Session)]
    errors = [r for r in results if not isinstance(r, Session)]
    assert sorted(s.seat for s in sessions) == list(range(1, 41))
    assert len(errors) == 10 and all(isinstance(e, NoFreeSeat) for e in errors), errors


@pytest.mark.parametrize("change", [{"email": "bob@example.org", "slot": 1},
                                    {"email": "bob@example.org", "seat": 2},
                                    {"email": "ANN@example.org", "seat": 2, "slot": 1}],
                         ids=["same-seat", "same-slot", "same-email"])
def test_the_database_itself_refuses_a_second_live_holder(store: Store,
                                                          change: dict[str, Any]) -> None:
    first = allocate(store, "ann@example.org")
    row = {f: getattr(first, f) for f in Session.__dataclass_fields__} | change
    row |= {"id": "b" * 12, "state": "active"}
    sessions = Base.metadata.tables["sessions"]
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(sessions.insert().values(row))
    store.sessions.transition(first.id, S.FAILED)
    with store.engine.begin() as conn:  # a failed session holds nothing
        conn.execute(sessions.insert().values(row))


def test_first_free_candidate_in_the_callers_order_and_lowest_slot(store: Store) -> None:
    order = [Candidate("x", "wod-2", 7, "student7"), Candidate("x", "wod-1", 3, "student3")]
    first = allocate(store, "a@example.org", candidates=order)
    second = allocate(store, "b@example.org", candidates=order)
    assert (first.host, first.seat, first.slot) == ("wod-2", 7, 0)
    assert (second.host, second.seat, second.username, second.slot) == (
        "wod-1", 3, "student3", 1)


def test_same_email_twice_returns_the_live_session_case_insensitively(store: Store) -> None:
    first = allocate(store, "Ann.Lee@Example.org")
    with pytest.raises(AlreadyLive) as refused:
        allocate(store, "ann.lee@EXAMPLE.ORG")
    assert refused.value.session == first
    assert first.id in str(refused.value)
    other = allocate(store, "ann.lee@example.org", workshop="WKSHP-OTHER")
    assert other.id != first.id
    assert first.email == "Ann.Lee@Example.org"  # stored as given


@pytest.mark.parametrize("path", [[S.FAILED], [S.ACTIVE, S.CLEANING, S.ENDED],
                                  [S.ACTIVE, S.CLEANING, S.HELD, S.RESETTING, S.ENDED]],
                         ids=["failed", "ended", "ended-after-reset"])
def test_a_finished_session_frees_its_seat_slot_and_email(store: Store,
                                                           path: list[SessionState]) -> None:
    one_seat = seats(1)
    first = allocate(store, "ann@example.org", candidates=one_seat, capacity=1)
    with pytest.raises(NoFreeSeat):
        allocate(store, "bob@example.org", candidates=one_seat, capacity=1)
    with pytest.raises(CapacityReached):
        allocate(store, "bob@example.org", candidates=seats(2, host="wod-9"), capacity=1)
    drive(store, first, path)
    again = allocate(store, "ann@example.org", candidates=one_seat, capacity=1)
    assert (again.host, again.seat, again.slot) == (first.host, first.seat, first.slot)
    assert again.id != first.id


def test_a_held_session_keeps_its_seat(store: Store) -> None:
    one_seat = seats(1)
    drive(store, allocate(store, candidates=one_seat), [S.ACTIVE, S.CLEANING, S.HELD])
    with pytest.raises(NoFreeSeat):
        allocate(store, "bob@example.org", candidates=one_seat)


def test_the_password_never_shows_in_a_repr(store: Store) -> None:
    session = allocate(store)
    assert session.password == "s3cret"
    assert "s3cret" not in repr(session)
    assert "s3cret" not in repr(store.sessions.find())


# -- transitions ----------------------------------------------------------------------------

PATH_TO = {
    S.CREATING: [], S.ACTIVE: [S.ACTIVE], S.CLEANING: [S.ACTIVE, S.CLEANING],
    S.HELD: [S.ACTIVE, S.CLEANING, S.HELD],
    S.RESETTING: [S.ACTIVE, S.CLEANING, S.HELD, S.RESETTING],
    S.RELEASING: [S.ACTIVE, S.CLEANING, S.RELEASING],
    S.FAILED: [S.FAILED], S.ENDED: [S.ACTIVE, S.CLEANING, S.ENDED], S.HOT: [S.HOT],
}


def test_every_move_is_allowed_exactly_when_the_table_says_so(store: Store) -> None:
    for n, (start, target) in enumerate((a, b) for a in SessionState for b in SessionState):
        session = drive(store, allocate(store, f"p{n}@example.org",
                                        candidates=seats(1, host=f"wod-{n}")), PATH_TO[start])
        if target in TRANSITIONS[start]:
            assert store.sessions.transition(session.id, target).state is target
            continue
        with pytest.raises(InvalidTransition) as refused:
            store.sessions.transition(session.id, target)
        assert f"is {start.value}" in str(refused.value)
        assert store.sessions.get(session.id).state is start


def test_purge_ends_any_session_once(store: Store) -> None:
    for n, state in enumerate(s for s in SessionState if s is not S.ENDED):
        session = drive(store, allocate(store, f"p{n}@example.org",
                                        candidates=seats(1, host=f"wod-{n}")), PATH_TO[state])
        purged = store.sessions.purge(session.id, message="operator", now=T0)
        assert (purged.state, purged.ended_at) == (S.ENDED, T0)
        with pytest.raises(InvalidTransition, match="is ended"):
            store.sessions.purge(session.id)


def test_history_records_each_move_with_time_message_and_capped_output(store: Store) -> None:
    session = allocate(store, now=T0)
    huge = "x" * (OUTPUT_CAP + 500)
    store.sessions.activate(session.id, T0 + timedelta(minutes=1), output="created student1")
    store.sessions.transition(session.id, S.CLEANING, now=T0 + timedelta(hours=2))
    failed = store.sessions.schedule_release(session.id, "cleanup", "cleanup hook exited 3",
                                             timedelta(seconds=10), output=huge,
                                             now=T0 + timedelta(hours=2, minutes=1))
    assert failed.error == "cleanup hook exited 3"
    events = store.sessions.events(session.id.upper())  # ids are typed by humans
    assert [(e.from_state, e.to_state, e.at) for e in events] == [
        (None, S.CREATING, T0),
        (S.CREATING, S.ACTIVE, T0 + timedelta(minutes=1)),
        (S.ACTIVE, S.CLEANING, T0 + timedelta(hours=2)),
        (S.CLEANING, S.RELEASING, T0 + timedelta(hours=2, minutes=1)),
    ]
    assert events[1].output == "created student1"
    assert events[3].message == "cleanup hook exited 3"
    assert events[3].output.startswith("x" * OUTPUT_CAP)
    assert events[3].output.endswith("[500 more characters dropped]")


def test_a_release_that_did_not_finish_keeps_the_seat_but_frees_the_participant(
        store: Store) -> None:
    first = store.sessions.activate(allocate(store, candidates=seats(1), now=T0).id, T0)
    store.sessions.transition(first.id, S.CLEANING, now=T0)
    pending = store.sessions.schedule_release(first.id, "cleanup", "host down",
                                              timedelta(seconds=10), now=T0)
    assert (pending.state, pending.release_op, pending.release_attempts) == \
        (S.RELEASING, "cleanup", 1)
    assert pending.holds_seat and not pending.live
    with pytest.raises(NoFreeSeat):  # the only seat is still the previous occupant's
        allocate(store, email="bob@example.org", candidates=seats(1))
    again = allocate(store, candidates=seats(2))  # same e-mail, same workshop: allowed
    assert again.seat == 2
    assert store.sessions.releases_due(T0 + timedelta(seconds=9)) == []
    assert [s.id for s in store.sessions.releases_due(T0 + timedelta(seconds=10))] == [first.id]
    twice = store.sessions.schedule_release(first.id, "purge", "still down",
                                            timedelta(seconds=20), now=T0)
    assert (twice.release_attempts, twice.release_op) == (2, "purge")
    assert twice.next_release_at == T0 + timedelta(seconds=20)
    ended = store.sessions.transition(first.id, S.ENDED, now=T0)
    assert ended.next_release_at is None
    assert allocate(store, email="bob@example.org", candidates=seats(1)).seat == 1


def test_the_host_s_word_reopens_an_ended_session_to_release_its_seat(store: Store) -> None:
    gone = store.sessions.purge(allocate(store, candidates=seats(1)).id, now=T0)
    reopened = store.sessions.reopen(gone.id, "purge", "the host still records seat 1", T0)
    assert (reopened.state, reopened.release_op, reopened.ended_at) == \
        (S.RELEASING, "purge", None)
    with pytest.raises(NoFreeSeat):
        allocate(store, email="bob@example.org", candidates=seats(1))


def test_a_session_the_store_lost_is_adopted_from_the_host_record(store: Store) -> None:
    record = Adoption(id="abcdef123456", workshop="WKSHP-API101", host="wod-1",
                      location="grenoble", seat=1, username="student1", state=S.ACTIVE,
                      name="Ann", email="ann@example.org", company="ACME", duration_hours=2.0,
                      created_at=T0, started_at=T0)
    adopted = store.sessions.adopt(record, "adopted from wod-1's seat record", now=T0)
    assert (adopted.state, adopted.ends_at, adopted.password) == \
        (S.ACTIVE, T0 + timedelta(hours=2), "")
    assert allocate(store, email="bob@example.org", candidates=seats(2)).seat == 2
    with pytest.raises(AlreadyLive):
        allocate(store, candidates=seats(3))
    with pytest.raises(AdoptionRefused, match="abcdef123456"):
        store.sessions.adopt(record, "again", now=T0)
    assert store.sessions.events(adopted.id)[0].message == "adopted from wod-1's seat record"


def test_unknown_session_is_named(store: Store) -> None:
    with pytest.raises(SessionNotFound, match="no session 'abcdef123456'"):
        store.sessions.get("abcdef123456")
    with pytest.raises(SessionNotFound, match="abcdef123456"):
        store.sessions.activate("abcdef123456")


def test_activation_starts_the_clock_from_the_duration(store: Store) -> None:
    active = store.sessions.activate(allocate(store, now=T0).id, T0 + timedelta(minutes=5))
    assert active.started_at == T0 + timedelta(minutes=5)
    assert active.ends_at == T0 + timedelta(hours=2, minutes=5)
    assert active.created_at == T0
    assert active.ends_at.tzinfo is not None


# -- time: due, expiring, extend ------------------------------------------------------------


def test_due_lists_active_sessions_whose_time_is_up(store: Store) -> None:
    session = store.sessions.activate(allocate(store).id, T0)
    assert store.sessions.due(T0 + timedelta(hours=1, minutes=59)) == []
    assert [s.id for s in store.sessions.due(T0 + timedelta(hours=2))] == [session.id]
    store.sessions.transition(session.id, S.CLEANING)
    assert store.sessions.due(T0 + timedelta(hours=3)) == []


def test_expiring_marks_each_session_once_and_extend_rearms_it(store: Store) -> None:
    session = store.sessions.activate(allocate(store).id, T0)
    window = timedelta(minutes=30)
    assert store.sessions.mark_expiring(window, T0 + timedelta(hours=1)) == []
    marked = store.sessions.mark_expiring(window, T0 + timedelta(hours=1, minutes=31))
    assert [(s.id, s.expiring_at) for s in marked] == [
        (session.id, T0 + timedelta(hours=1, minutes=31))]
    assert store.sessions.mark_expiring(window, T0 + timedelta(hours=1, minutes=45)) == []
    extended = store.sessions.extend(session.id, 1, max_total_hours=4, now=T0)
    assert (extended.ends_at, extended.expiring_at) == (T0 + timedelta(hours=3), None)
    assert store.sessions.mark_expiring(window, T0 + timedelta(hours=2)) == []
    assert len(store.sessions.mark_expiring(window, T0 + timedelta(hours=2, minutes=31))) == 1


def test_a_short_session_is_expiring_only_in_its_second_half(store: Store) -> None:
    session = store.sessions.activate(allocate(store).id, T0)  # 2 hours, window 1 hour
    hour = timedelta(hours=1)
    assert store.sessions.mark_expiring(3 * hour, T0) == [], "not ending from its start"
    assert store.sessions.mark_expiring(3 * hour, T0 + timedelta(minutes=59)) == []
    assert [s.id for s in store.sessions.mark_expiring(3 * hour, T0 + hour)] == [session.id]


def test_concurrent_expiry_ticks_mark_each_session_exactly_once(store: Store) -> None:
    ids = {store.sessions.activate(allocate(store, f"p{i}@example.org",
                                            candidates=seats(10)).id, T0).id
           for i in range(10)}
    late = T0 + timedelta(hours=1, minutes=59)
    results = all_at_once(8, lambda _: store.sessions.mark_expiring(timedelta(hours=3), late))
    marked = [s.id for r in results for s in r]
    assert sorted(marked) == sorted(ids)


def test_extend_is_bounded_and_only_for_active_sessions(store: Store) -> None:
    session = allocate(store)
    with pytest.raises(ExtensionRefused, match="is creating"):
        store.sessions.extend(session.id, 1, max_total_hours=4)
    store.sessions.activate(session.id, T0)
    assert store.sessions.extend(session.id, 2, max_total_hours=4).ends_at == T0 + timedelta(
        hours=4)
    with pytest.raises(ExtensionRefused, match=r"would last 4\.5 h, more than the 4 h"):
        store.sessions.extend(session.id, 0.5, max_total_hours=4)
    assert store.sessions.get(session.id).ends_at == T0 + timedelta(hours=4)


def test_queries_and_counts(store: Store) -> None:
    a = allocate(store, "a@example.org", candidates=seats(2, host="wod-1"), now=T0)
    b = allocate(store, "b@example.org", candidates=seats(2, host="wod-2"), now=T0)
    c = allocate(store, "c@example.org", workshop="WKSHP-K8S", candidates=seats(2, "wod-1"),
                 now=T0 + timedelta(seconds=1))  # listed oldest first
    drive(store, b, [S.FAILED])
    store.sessions.activate(c.id, T0)
    assert [s.id for s in store.sessions.holding_seats("wod-1")] == [a.id, c.id]
    assert store.sessions.holding_seats("wod-2") == []
    assert [s.id for s in store.sessions.find(state=S.FAILED)] == [b.id]
    assert [s.id for s in store.sessions.find(email="A@EXAMPLE.ORG")] == [a.id]
    assert store.sessions.live_per_workshop() == {"WKSHP-API101": 1, "WKSHP-K8S": 1}
    counts = store.sessions.counts_by_state()
    assert (counts[S.CREATING], counts[S.ACTIVE], counts[S.FAILED], counts[S.ENDED]) == (
        1, 1, 1, 0)
    assert store.sessions.set_completion(a.id, 42.5).completion == 42.5
    with pytest.raises(ValueError, match=r"0\.\.100"):
        store.sessions.set_completion(a.id, 101)
    assert store.sessions.set_password(a.id, "n3w").password == "n3w"


# -- migrations -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a database that does not exist yet (SQLite) or is empty (PostgreSQL)."""
    if request.param == "sqlite":
        (tmp_path / "fresh").mkdir()
        yield default_url(tmp_path / "fresh")  # its key: fresh/store.key, beside it
        return
    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(os.urandom(32)).decode())
    with temporary_database(require_server()) as url:
        yield url


def _schema(engine: Engine) -> dict[str, Any]:
    """What reflection sees of every table: columns, keys, indexes with their WHERE."""
    insp = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(Base.metadata.tables):
        indexes = sorted(
            (i["name"], bool(i["unique"]), tuple(map(str, i.get("column_names") or ())),
             tuple(map(str, i.get("expressions") or ())),
             tuple(sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items())))
            for i in insp.get_indexes(table))
        schema[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table),
            "fks": insp.get_foreign_keys(table),
            "checks": sorted((c["name"], c["sqltext"]) for c in insp.get_check_constraints(table)),
            "indexes": indexes,
        }
    return schema


def test_opening_creates_then_is_a_no_op_and_keeps_data(fresh_url: str) -> None:
    with open_store(fresh_url) as first:
        assert migrations.current(first.engine) == migrations.head()
        session = allocate(first)
    with open_store(fresh_url) as again:
        assert migrations.upgrade(again.engine) is False
        assert again.sessions.get(session.id) == session


def test_migrations_build_exactly_the_models(fresh_url: str, tmp_path: Path) -> None:
    with open_store(fresh_url) as store, warnings.catch_warnings(), \
            store.engine.connect() as conn:
        # SQLite cannot reflect the lower(email) index; its SQL is compared below instead.
        warnings.filterwarnings("ignore", "autogenerate skipping")
        warnings.filterwarnings("ignore", "Skipped unsupported reflection")
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        migrated = _schema(store.engine)
    if store.backend == "sqlite":
        (tmp_path / "models").mkdir()
        reference = create_engine(default_url(tmp_path / "models"))
        Base.metadata.create_all(reference)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection")
            assert _schema(reference) == migrated
        with reference.connect() as a, store.engine.connect() as b:
            sql = "SELECT sql FROM sqlite_master WHERE name = 'uq_sessions_live_email'"
            assert a.scalar(text(sql)) == b.scalar(text(sql))
        reference.dispose()
        return
    with temporary_database(fresh_url) as url:
        reference = create_engine(url, poolclass=NullPool)
        Base.metadata.create_all(reference)
        assert _schema(reference) == migrated
        reference.dispose()


def test_concurrent_first_opens_migrate_once(fresh_url: str) -> None:
    results = all_at_once(4, lambda _: open_store(fresh_url))
    stores = [r for r in results if isinstance(r, Store)]
    try:
        assert len(stores) == 4, results
        assert migrations.current(stores[0].engine) == migrations.head()
    finally:
        for s in stores:
            s.close()


def test_a_database_from_a_newer_wodsync_is_refused_by_name(fresh_url: str) -> None:
    with open_store(fresh_url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(StoreError, match="revision f00d, which this wodsync does not know"):
        open_store(fresh_url)


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = "postgresql://wod:hunter2@/nowhere?host=/nonexistent-socket-dir"
    with pytest.raises(StoreUnavailable, match="cannot open the store at") as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        open_store("mysql://x@localhost/db")


# -- daemon status --------------------------------------------------------------------------


def test_host_status_upsert_changes_only_what_is_given(store: Store) -> None:
    first = store.status.update_host("wod-1", now=T0, condition="Reconciling",
                                     last_attempted_revision="abc")
    assert (first.condition, first.drift_count, first.reason) == ("Reconciling", 0, "")
    later = store.status.update_host("wod-1", now=T0 + timedelta(minutes=1), condition="Ready",
                                     reason="Applied", last_applied_revision="abc",
                                     last_success_at=T0)
    assert later.last_attempted_revision == "abc"
    assert (later.condition, later.reason, later.updated_at) == (
        "Ready", "Applied", T0 + timedelta(minutes=1))
    assert [h.host for h in store.status.hosts()] == ["wod-1"]
    assert store.status.host("wod-2") is None
    with pytest.raises(TypeError, match=r"unknown host status field.*colour"):
        store.status.update_host("wod-1", colour="red")
    with pytest.raises(ValueError):
        store.status.update_host("wod-1", condition="Happy")


def test_concurrent_counter_increments_are_not_lost(store: Store) -> None:
    all_at_once(10, lambda _: store.status.update_host(
        "wod-1", add={"drift_count": 1, "consecutive_failures": 2}))
    status = store.status.host("wod-1")
    assert status is not None
    assert (status.drift_count, status.consecutive_failures) == (10, 20)


def test_history_keeps_the_last_twenty_per_host_newest_first(store: Store) -> None:
    def rec(host: str, n: int) -> Reconciliation:
        return Reconciliation(host=host, revision=f"r{n}", trigger=Trigger.COMMIT,
                              started_at=T0 + timedelta(minutes=n), duration_s=1.5,
                              result=Result.APPLIED, created=n, message=f"run {n}")

    for n in range(25):
        store.status.record_reconciliation(rec("wod-1", n))
    saved = store.status.record_reconciliation(rec("wod-2", 0))
    assert saved.id is not None and saved.trigger is Trigger.COMMIT
    history = store.status.reconciliations("wod-1")
    assert [r.revision for r in history] == [f"r{n}" for n in range(24, 4, -1)]
    assert history[0].created == 24 and history[0].result is Result.APPLIED
    assert [r.revision for r in store.status.reconciliations("wod-2")] == ["r0"]
    assert len(store.status.reconciliations(limit=100)) == 21


def test_repository_and_facts_round_trip(store: Store) -> None:
    url, branch = "https://git.example.org/wod.git", "main"
    errors = [{"path": "catalog/a.yaml", "line": 3, "col": 5, "code": "unknown-key",
               "message": "unknown key 'seets'"}]
    store.status.update_repository(url, branch, head_revision="bad1", errors=errors, now=T0)
    repo = store.status.update_repository(url, branch, last_good_revision="good0", now=T0)
    assert (repo.head_revision, repo.last_good_revision, repo.errors) == ("bad1", "good0", errors)
    assert store.status.repository(url, "other") is None
    facts = {"accounts": {"student1": {"uid": 2001, "groups": ["wod"]}}, "hub": None}
    store.status.put_facts("wod-1", facts, revision="good0", observed_at=T0)
    assert store.status.facts("wod-1") == store.status.put_facts(
        "wod-1", facts, revision="good0", observed_at=T0)
    store.status.put_facts("wod-1", {"accounts": {}}, observed_at=T0 + timedelta(1))
    got = store.status.facts("wod-1")
    assert got is not None and got.facts == {"accounts": {}} and got.revision is None


# -- one writer -------------------------------------------------------------------------------


def test_a_second_writer_on_the_same_state_is_refused(store: Store,
                                                     backend: tuple[str, Path]) -> None:
    _, state = backend
    assert writer_running(state, store) is None
    with WriterLock(state, store):
        with pytest.raises(WriterBusy) as refused:
            WriterLock(state, store).acquire()
        message = str(refused.value)
        assert f"another wodsync daemon (pid {os.getpid()}" in message
        assert " since " in message
        if store.backend == "sqlite":
            assert str(state / "daemon.lock") in message
        assert writer_running(state, store) == message
    assert writer_running(state, store) is None
    with WriterLock(state, store) as again:
        assert again.held


CHILD = """
import sys
from pathlib import Path
from wodsync.store import WriterBusy, WriterLock, open_store
lock = WriterLock(Path(sys.argv[2]), open_store(sys.argv[1]))
try:
    lock.acquire()
except WriterBusy as busy:
    print("busy", busy, flush=True)
    lock.acquire(wait=True, poll_s=0.2)
print("acquired", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def _line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], CHILD_TIMEOUT_S)
    assert ready, "child process said nothing"
    return child.stdout.readline().strip()


def test_a_standby_takes_over_when_the_writer_is_killed(
        store: Store, backend: tuple[str, Path],
        children: list[subprocess.Popen[str]]) -> None:
    url, state = backend

    def start() -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(state)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        children.append(child)
        return child

    primary = start()
    assert _line(primary) == "acquired"
    standby = start()
    busy = _line(standby)
    assert busy.startswith(f"busy another wodsync daemon (pid {primary.pid}")
    holder = writer_holder(state, store)
    assert holder is not None and holder["pid"] == primary.pid
    os.kill(primary.pid, signal.SIGKILL)
    primary.wait()
    assert _line(standby) == "acquired"
    holder = writer_holder(state, store)
    assert holder is not None and holder["pid"] == standby.pid


def test_a_writer_lock_on_an_unreachable_server_is_named(tmp_path: Path) -> None:
    url = "postgresql+psycopg://root@/wodsync_test?host=/nonexistent-socket-dir"
    unreachable = Store(create_engine(url))
    with pytest.raises(StoreUnavailable, match=r"cannot reach .* for the writer lock"):
        WriterLock(tmp_path, unreachable).acquire()
