"""`wodsync store backup` and `store restore`: a backup taken while sessions are being written
is whole and consistent (SQLite's online backup API; `pg_dump` on PostgreSQL, its URL never
on a command line), and an older backup restored is reconciled with the real seats the host
records before anything serves: the session the host no longer holds ends, the one the store
forgot comes back and is reported."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from wodsync.store import Candidate, Participant, open_store
from wodsync.store.backup import pg_environment
from wodsync.store.models import normalize_url

from helpers import until
from helpers import wodsync as run_wodsync
from pg import pg_url, require_server, temporary_database  # noqa: F401  (pg_url: a fixture)
from storelab import WORKSHOP, claim_accounts, env, remove_accounts, write_catalog


def _writer(store, stop: threading.Event, made: list[str]) -> threading.Thread:
    """Sessions allocated one after another until `stop`: each one a session row and its
    first history event, written in one transaction."""
    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            s = store.sessions.allocate(f"W{n}", Participant(f"P{n}", f"p{n}@example.org"),
                                        [Candidate("lab", f"h{n}", 1, "wodtc1")], 1, 1.0, "r",
                                        "pw")
            made.append(s.id)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _consistent(conn) -> int:
    """Every session has its first event and every event its session (one transaction each):
    the count of sessions."""
    sessions = conn.execute(text("SELECT count(*) FROM sessions")).scalar()
    events = conn.execute(text("SELECT count(DISTINCT session_id) FROM session_events"))
    assert sessions == events.scalar(), "a backup holds half of a transaction"
    return sessions


def test_a_sqlite_backup_under_concurrent_writes_is_whole_and_consistent(tmp_path):
    state = tmp_path / "state"
    store = open_store(state_dir=state)
    stop, made = threading.Event(), []
    writer = _writer(store, stop, made)
    counts = []
    try:
        for n in range(4):
            until(lambda: len(made) > (counts[-1] if counts else 0) + 3,
                  "the writer does not write")  # each backup meets new writes
            target = tmp_path / f"backup-{n}.db"
            done = run_wodsync("store", "backup", target, "--state", state)
            assert done.returncode == 0, done.stderr
            assert "keep the key" in done.stderr
            assert oct(target.stat().st_mode & 0o777) == "0o600"
            with sqlite3.connect(target) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            engine = create_engine(f"sqlite:///{target}", poolclass=NullPool)
            with engine.connect() as conn:
                counts.append(_consistent(conn))
            engine.dispose()
    finally:
        stop.set()
        writer.join()
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0, counts
    assert len(made) > counts[-1], "the writer kept writing past the last backup"
    restored = open_store(f"sqlite:///{tmp_path / 'backup-0.db'}", state_dir=state)
    assert restored.identity == store.identity, "a backup keeps the store's identity"
    restored.close()
    store.close()


def test_a_postgresql_backup_runs_pg_dump_with_the_url_in_its_environment_only(
        pg_url, tmp_path):  # noqa: F811
    """Under concurrent writes, and restored into another database whole."""
    store = open_store(pg_url, state_dir=tmp_path / "state")
    stop, made = threading.Event(), []
    writer = _writer(store, stop, made)
    try:
        # A loaded machine may start pg_dump before the writer's first commit: wait for some.
        until(lambda: len(made) >= 3, "the writer committed no session", timeout=60)
        target = tmp_path / "pg.dump"
        done = run_wodsync("store", "backup", target, "--state", tmp_path / "state",
                           env={**os.environ, "WODSYNC_DB": pg_url})
        assert done.returncode == 0, done.stderr
        assert "pg_dump" in done.stderr
    finally:
        stop.set()
        writer.join()
    environment = pg_environment(__import__("sqlalchemy").engine.make_url(
        normalize_url(pg_url)))
    assert environment["PGDATABASE"] and "PGHOST" in environment
    with temporary_database(require_server()) as other:
        restored = run_wodsync("store", "restore", target, "--state", tmp_path / "state",
                               "--root", tmp_path, env={**os.environ, "WODSYNC_DB": other})
        # no catalog at --root: the data is back, the reconciliation says it cannot run
        assert "restored" in restored.stderr, restored.stderr
        engine = create_engine(other, poolclass=NullPool)
        with engine.connect() as conn:
            count = _consistent(conn)
            identity = conn.execute(text("SELECT id FROM store_identity")).scalar()
        engine.dispose()
    assert 0 < count <= len(made) and identity == store.identity
    store.close()


@pytest.fixture
def lab(tmp_path):
    """Real seats on this machine (the pool wodtc, no hub), converged."""
    if os.geteuid() != 0:
        pytest.skip("real seats need root (./bootstrap test)")
    claim_accounts()
    root = tmp_path / "repo"
    write_catalog(root, tmp_path)
    applied = run_wodsync("apply", "--yes", "--root", root, "--state", tmp_path / "state",
                          env=env())
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "state": tmp_path / "state", "tmp": tmp_path}
    remove_accounts()


def _session(lab, *args: str):
    return run_wodsync("session", *args, "--root", lab["root"], "--state-dir", lab["state"],
                       env=env())


def _states(lab) -> dict[str, str]:
    listed = _session(lab, "list", "--json")
    return {s["id"]: s["state"] for s in json.loads(listed.stdout)}


def test_an_older_backup_restored_is_reconciled_with_the_real_seats_first(lab):
    first = json.loads(_session(lab, "create", WORKSHOP, "--email", "a@example.org",
                                "--json").stdout)
    backup = lab["tmp"] / "older.db"
    assert run_wodsync("store", "backup", backup, "--state", lab["state"]).returncode == 0
    later = json.loads(_session(lab, "create", WORKSHOP, "--email", "b@example.org",
                                "--json").stdout)
    cleaned = _session(lab, "cleanup", first["id"])
    assert cleaned.returncode == 0, cleaned.stderr
    assert _states(lab) == {first["id"]: "ended", later["id"]: "active"}
    records = lab["tmp"] / "hoststate/seats"
    assert sorted(records.glob("*.json")) == [records / f"{later['credentials']['username']}"
                                                        ".json"]

    lab["store"] = open_store(state_dir=lab["state"])
    lab["store"].leases.beat()  # a serving process on this store: restore refuses
    busy = run_wodsync("store", "restore", backup, "--root", lab["root"], "--state",
                       lab["state"], env=env())
    assert busy.returncode == 1 and "in use by wodsync serve or daemon" in busy.stderr
    assert _states(lab) == {first["id"]: "ended", later["id"]: "active"}, "nothing changed"
    lab["store"].leases.drop()
    lab["store"].close()

    restored = run_wodsync("store", "restore", backup, "--root", lab["root"], "--state",
                           lab["state"], env=env())
    out = restored.stdout + restored.stderr
    assert restored.returncode == 0, out
    assert f"lab: adopted {later['id']}" in out, out      # the seat the store forgot
    assert f"lab: released {first['id']}" in out, out     # the session the host let go
    assert f"session {first['id']} ({first['credentials']['username']}) ended" in out, out
    assert _states(lab) == {first["id"]: "ended", later["id"]: "active"}
    purged = _session(lab, "purge", later["id"])
    assert purged.returncode == 0, purged.stderr
    assert not any(records.glob("*.json"))


def test_a_restore_refuses_what_is_not_a_wodsync_store_and_changes_nothing(tmp_path):
    state = tmp_path / "state"
    store = open_store(state_dir=state)
    store.sessions.allocate(WORKSHOP, Participant("P", "p@example.org"),
                            [Candidate("lab", "h", 1, "wodtc1")], 1, 1.0, "r", "pw")
    store.close()
    bogus = tmp_path / "bogus.db"
    with sqlite3.connect(bogus) as db:
        db.execute("CREATE TABLE t (x)")
    refused = run_wodsync("store", "restore", bogus, "--state", state, "--root", tmp_path)
    assert refused.returncode == 1 and f"{bogus}: not a wodsync store" in refused.stderr
    store = open_store(state_dir=state)
    assert store.sessions.count() == 1
    store.close()


def test_a_backup_from_before_the_store_identity_keeps_the_identity_its_hosts_know(tmp_path):
    """A daemon's hosts record its store's identity: restoring a backup made before wodsync
    kept one must not give the store a new one (the hosts would refuse its daemon)."""
    from alembic import command

    from wodsync.store.migrations import alembic_config

    older = tmp_path / "older.db"
    engine = create_engine(f"sqlite:///{older}", poolclass=NullPool)
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "0013")
    engine.dispose()
    state = tmp_path / "state"
    store = open_store(state_dir=state)
    known = store.identity
    store.close()
    root = tmp_path / "repo"
    write_catalog(root, tmp_path)
    restored = run_wodsync("store", "restore", older, "--state", state, "--root", root)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "lab: in line with the store" in restored.stdout
    store = open_store(state_dir=state)
    assert store.identity == known
    store.close()
