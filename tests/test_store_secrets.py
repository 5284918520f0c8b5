"""Passwords in the store, tested as the attack a student on the controller's machine runs
(issue 17): the state folder and the SQLite files are root's alone, created so and tightened
when an older wodsync left them readable; a seat user can open none of them; a password is in
no raw byte of the database, its WAL or PostgreSQL's column, yet the store hands it back; a
session that is over keeps none; what an older wodsync wrote in clear is sealed at the next open
and its bytes are gone from the files; a wrong or missing key is a clear error."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from wodsync.store import (
    DB_FILE,
    KEY_ENV,
    KEY_FILE,
    Candidate,
    KeyUnavailable,
    Participant,
    Session,
    SessionState,
    Store,
    StoreError,
    open_store,
    sealing,
)
from wodsync.store.sealing import SCRUBBED

from pg import require_server, temporary_database

S = SessionState
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
COMPANIONS = ("-wal", "-shm", "-journal")
PASSWORD = "Kq7rTz2mWp4x"  # what the student greps for


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite tests use `<state>/store.key` unless a test sets the variable itself."""
    monkeypatch.delenv(KEY_ENV, raising=False)


@dataclass
class Backend:
    """Where a test's store lives: SQLite under `state`, or a fresh PostgreSQL database."""

    name: str
    state: Path
    url: str | None

    def open(self) -> Store:
        return open_store(self.url, state_dir=self.state)

    @property
    def db(self) -> Path:
        return self.state / DB_FILE


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "state", None)
        return
    monkeypatch.setenv(KEY_ENV, new_key())  # as replicas on one PostgreSQL are given it
    with temporary_database(require_server()) as url:
        yield Backend("postgresql", tmp_path / "state", url)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every account may enter, as /var/lib is: so that what stops a seat user below
    it is the store's own modes, not pytest's private temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="wodsync-seat-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def allocate(store: Store, password: str, email: str = "ann@example.org",
             seat: int = 1) -> Session:
    return store.sessions.allocate("WKSHP-API101", Participant("Ann", email, "ACME"),
                                   [Candidate("grenoble", "wod-1", seat, f"student{seat}")],
                                   100, 2.0, "rev1", password, now=T0)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_bytes(db: Path) -> dict[str, bytes]:
    """What `cat` shows of the database and its companions, as a student would grep them."""
    found = {}
    for path in (db, *(db.with_name(db.name + s) for s in COMPANIONS)):
        if path.exists():
            found[path.name] = path.read_bytes()
    return found


def files_holding(db: Path, needle: str) -> list[str]:
    return [name for name, data in raw_bytes(db).items() if needle.encode() in data]


def stored_password(store: Store, session_id: str) -> str:
    """The column as the database keeps it (plain SQL: no sealing type in the way)."""
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT password FROM sessions WHERE id = :id"),
                            {"id": session_id}).scalar_one()


def checkpoint(store: Store) -> None:
    """What SQLite does on its own every 1000 pages written, now."""
    connection = store.engine.raw_connection()
    try:
        busy = connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
        assert busy == 0, "a reader kept the checkpoint from completing"
    finally:
        connection.close()


# -- who may read the files ---------------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a child as `nobody`: needs root")


def seat_user_reads(path: Path) -> bool:
    """Whether a seat user (any account but root: `nobody` here) can open and read `path`."""
    done = subprocess.run(["cat", "--", str(path)], user=NOBODY.pw_uid, group=NOBODY.pw_gid,
                          extra_groups=[], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 or b"Permission denied" in done.stderr, done.stderr
    return done.returncode == 0


def test_a_new_store_is_root_s_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        allocate(store, PASSWORD)
        assert mode(state) == 0o700
        for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", KEY_FILE):
            assert mode(state / name) == 0o600, name


def test_the_database_is_0600_before_sqlite_ever_opens_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """No window where it is 0644: every mode SQLite is asked to create a file with is seen."""
    state = tmp_path / "state"
    seen: list[tuple[str, int]] = []
    real_connect = sqlite3.dbapi2.connect

    def connect(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        seen.append((database, mode(Path(database))))
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)  # what SQLAlchemy calls
    with open_store(state_dir=state):
        pass
    assert seen and all(m == 0o600 for _, m in seen), seen


@contextmanager
def folder_left_open(folder: Path) -> Iterator[None]:
    """The folder 0755 for a while: what stops a seat user then is the file's own mode."""
    folder.chmod(0o755)
    try:
        yield
    finally:
        folder.chmod(0o700)


@needs_root
def test_a_store_an_older_version_left_readable_is_tightened_at_the_next_open(
        shared_tmp: Path) -> None:
    state = shared_tmp / "state"
    with open_store(state_dir=state) as store:
        allocate(store, PASSWORD)
    old = _older_layout(state)
    assert all(seat_user_reads(p) for p in old), "the attack must work on the old layout"
    with open_store(state_dir=state) as store:
        store.sessions.find()
        assert mode(state) == 0o700
        assert not seat_user_reads(state / DB_FILE)
        left = [p for p in old if p.exists()]  # SQLite may have removed the empty journal
        assert all(mode(p) == 0o600 for p in left), [(p.name, oct(mode(p))) for p in left]
        with folder_left_open(state):
            assert not any(seat_user_reads(p) for p in left)


def _older_layout(state: Path) -> list[Path]:
    """The modes an older wodsync left: the folder 0755, the files 0644 (and a WAL and SHM
    left behind by a crash, an empty journal)."""
    db = state / DB_FILE
    for suffix in COMPANIONS:
        db.with_name(db.name + suffix).write_bytes(b"")
    paths = [db, *(db.with_name(db.name + s) for s in COMPANIONS)]
    for path in paths:
        path.chmod(0o644)
    state.chmod(0o755)
    return paths


@needs_root
def test_a_seat_user_can_open_neither_the_database_nor_its_wal(shared_tmp: Path) -> None:
    state = shared_tmp / "state"
    control = shared_tmp / "readable"
    control.write_text("x")
    assert seat_user_reads(control)  # the child reads what is meant to be readable
    with open_store(state_dir=state) as store:
        allocate(store, PASSWORD)
        private = [state / DB_FILE, state / f"{DB_FILE}-wal", state / KEY_FILE]
        assert all(p.exists() for p in private)
        assert not any(seat_user_reads(p) for p in private)
        with folder_left_open(state):  # had the folder been opened, the files still are not
            assert not any(seat_user_reads(p) for p in private)


def test_a_sqlite_url_elsewhere_gets_private_files_and_a_key_beside_them(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "x.db"
    with open_store(f"sqlite:///{db}") as store:
        allocate(store, PASSWORD)
        assert mode(db) == 0o600 and mode(folder / "x.db-wal") == 0o600
    assert mode(folder) == 0o755  # not wodsync's state folder: left as it is
    assert mode(folder / KEY_FILE) == 0o600


def test_a_companion_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("x")
    victim.chmod(0o644)
    (state / f"{DB_FILE}-shm").symlink_to(victim)
    with pytest.raises(StoreError, match="is a symbolic link"):
        open_store(state_dir=state)
    assert mode(victim) == 0o644  # not tightened through the link


# -- passwords in the files ---------------------------------------------------------------------


def test_a_live_password_is_in_no_raw_byte_yet_the_store_hands_it_back(
        backend: Backend) -> None:
    with backend.open() as store:
        session = allocate(store, PASSWORD)
        assert session.password == PASSWORD
        assert store.sessions.get(session.id).password == PASSWORD
        assert [s.password for s in store.sessions.find(live=True)] == [PASSWORD]
        assert PASSWORD not in repr(store.sessions.get(session.id))
        stored = stored_password(store, session.id)
        assert stored.startswith("v1:") and PASSWORD not in stored
        if backend.name == "postgresql":
            with store.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM sessions WHERE password LIKE "
                                         "'%' || :p || '%'"), {"p": PASSWORD}).scalar() == 0
            return
        assert files_holding(backend.db, PASSWORD) == []  # while open: database and WAL
    assert files_holding(backend.db, PASSWORD) == []  # closed: checkpointed into the file
    with backend.open() as again:
        assert again.sessions.get(session.id).password == PASSWORD


# A host's error, long enough that the row outgrows the cell it had: SQLite writes the new cell
# elsewhere in the page and frees the old one — where, without secure_delete, the sealed value
# would stay (this test fails with `PRAGMA secure_delete = OFF`).
HOST_ERROR = "seat_cleanup failed on wod-1: " + "e" * 1500


@pytest.mark.parametrize("path", [[S.FAILED], [S.ACTIVE, S.CLEANING, S.ENDED],
                                  [S.ACTIVE, S.CLEANING, S.RELEASING],
                                  [S.ACTIVE, S.CLEANING, S.HELD]],
                         ids=["failed", "ended", "releasing", "held-for-reset"])
def test_a_session_that_is_over_keeps_no_password(backend: Backend,
                                                  path: list[SessionState]) -> None:
    with backend.open() as store:
        session = allocate(store, PASSWORD)
        for n in (2, 3, 4):  # written after it in the same page (below it), live all along
            allocate(store, f"{PASSWORD}{n}", email=f"n{n}@example.org", seat=n)
        sealed = stored_password(store, session.id)
        for to in path[:-1]:
            store.sessions.transition(session.id, to, now=T0)
        assert store.sessions.get(session.id).password == PASSWORD  # live: still there
        if path[-1] is S.RELEASING:
            over = store.sessions.schedule_release(session.id, "cleanup", HOST_ERROR,
                                                   timedelta(seconds=30), now=T0)
        else:
            over = store.sessions.transition(session.id, path[-1], message=HOST_ERROR, now=T0)
        assert over.password == "" and store.sessions.get(session.id).password == ""
        assert stored_password(store, session.id) == ""
        with pytest.raises(StoreError, match="keeps no password"):
            store.sessions.set_password(session.id, "again")
        if backend.name == "sqlite":
            _gone_from_the_files(store, backend.db, sealed.split(":")[2])


def _gone_from_the_files(store: Store, db: Path, token: str) -> None:
    """What secure_delete and journal_size_limit promise, and when: the sealed value is in the
    WAL's older frames; a checkpoint writes the newest image of each page — the freed cell
    zeroed — into the database; the WAL keeps its older frames until it starts over after that
    checkpoint, when the stale ones are cut off."""
    assert files_holding(db, token) == [f"{DB_FILE}-wal"]
    checkpoint(store)
    assert files_holding(db, token) == [f"{DB_FILE}-wal"]  # the database file is clean
    store.status.update_host("wod-1", now=T0, condition="Ready")  # the WAL starts over
    assert files_holding(db, token) == []
    assert files_holding(db, PASSWORD) == []


# -- a store an older wodsync wrote -------------------------------------------------------------

OLD = {  # a session's state (numbered) -> the password an older wodsync kept in clear
    "active": "oldActive0001", "held": "oldHeld000002", "creating": "oldCreate0003",
    "ended": "oldEnded00004", "failed": "oldFailed0005", "releasing": "oldRelease006",
    **{f"ended{n}": f"oldGone{n:05d}" for n in range(40)}}  # a history of ended sessions
LIVE_OLD = ("active", "held", "creating")

INSERT = """INSERT INTO sessions (id, workshop, name, email, company, location, host, seat,
    username, slot, state, duration_hours, created_at, revision, password, release_attempts)
    VALUES (:id, 'WKSHP-OLD', 'Old', :email, '', 'grenoble', 'wod-1', :seat, :user, :seat,
            'creating', 2.0, :at, 'old', :password, 0)"""
# Its moves, each growing the row: every earlier cell is left in the page's free space.
MOVES = ("UPDATE sessions SET state = 'active', started_at = :at WHERE id = :id",
         "UPDATE sessions SET state = :state, error = 'moved by an older wodsync' "
         "WHERE id = :id")


def _old_rows() -> list[dict[str, object]]:
    return [{"id": f"{n:012x}", "email": f"{key}@example.org", "seat": n, "user": f"s{n}",
             "at": "2025-03-01 09:00:00", "password": password,
             "state": key.rstrip("0123456789")}
            for n, (key, password) in enumerate(OLD.items(), start=1)]


OLD_WRITER = """
import json, os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA secure_delete = OFF")  # as an older wodsync did: freed bytes stay
insert, moves = sys.argv[3], json.loads(sys.argv[4])
for row in json.loads(sys.argv[2]):
    conn.execute(insert, row)
    for move in moves:
        conn.execute(move, row)
conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # some in the file, the last ones in the WAL
conn.execute("UPDATE sessions SET error = 'the last move' WHERE state = 'active'")
os._exit(0)  # it crashed: its WAL stays behind, frames and all
"""


def _write_an_older_store(backend: Backend) -> None:
    """Sessions as an older wodsync kept them: passwords in clear, in every state."""
    with backend.open():
        pass  # the schema, as this version builds it
    rows = _old_rows()
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.db)
        conn.execute("PRAGMA user_version = 0")  # what an older wodsync's file says
        conn.close()
        subprocess.run([sys.executable, "-c", OLD_WRITER, str(backend.db), json.dumps(rows),
                        INSERT, json.dumps(MOVES)], check=True, timeout=60)
        assert files_holding(backend.db, "oldEnded00004") == [DB_FILE, f"{DB_FILE}-wal"], \
            "the old store must hold them, in the file and in the WAL"
        return
    raw = create_engine(backend.url or "")
    with raw.begin() as conn:
        for row in rows:
            conn.execute(text(INSERT), row)
            for move in MOVES:
                conn.execute(text(move), row)
    raw.dispose()


def test_an_older_plaintext_store_is_sealed_at_the_next_open_and_its_bytes_are_gone(
        backend: Backend) -> None:
    _write_an_older_store(backend)
    with backend.open() as store:
        stored = {str(r["id"]): stored_password(store, str(r["id"])) for r in _old_rows()}
        for row in _old_rows():
            session = store.sessions.get(str(row["id"]))
            if row["state"] in LIVE_OLD:
                assert stored[session.id].startswith("v1:")
                assert session.password == row["password"]
            else:
                assert stored[session.id] == "" and session.password == ""
        if backend.name == "postgresql":
            with store.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM sessions WHERE password "
                                         "LIKE 'old%'")).scalar() == 0
        else:
            for password in OLD.values():
                assert files_holding(backend.db, password) == [], password
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA user_version").scalar() == SCRUBBED
    with backend.open() as again:  # idempotent: nothing sealed twice
        assert {i: stored_password(again, i) for i in stored} == stored
    if backend.name == "sqlite":
        for password in OLD.values():
            assert files_holding(backend.db, password) == [], password


# -- the key ------------------------------------------------------------------------------------


def test_the_key_file_is_made_once_on_first_use_even_by_racing_stores(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state):
        pass
    assert not (state / KEY_FILE).exists()  # a store only looked at writes no key
    stores = [open_store(state_dir=state) for _ in range(4)]  # each with its own sealer
    try:
        barrier = threading.Barrier(4)

        def create(i: int) -> None:
            barrier.wait()
            allocate(stores[i], f"pw{i}xxxxxxxx", email=f"p{i}@example.org", seat=i + 1)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        key = (state / KEY_FILE).read_text().strip()
        assert len(base64.urlsafe_b64decode(key)) == 32 and mode(state / KEY_FILE) == 0o600
        assert [p.name for p in state.iterdir() if p.name.startswith(".store.key")] == []
        assert sorted(s.password for s in stores[0].sessions.find()) == [
            f"pw{i}xxxxxxxx" for i in range(4)]
    finally:
        for s in stores:
            s.close()


def test_the_environment_s_key_wins_and_writes_no_file(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        session = allocate(store, PASSWORD)
    assert not (state / KEY_FILE).exists()
    monkeypatch.setenv(KEY_ENV, key)
    with open_store(state_dir=state) as store:
        assert store.sessions.get(session.id).password == PASSWORD


def _refused(backend: Backend) -> str:
    with pytest.raises(KeyUnavailable) as refused:
        backend.open()
    message = str(refused.value)
    assert "gAAAA" not in message and PASSWORD not in message  # never the ciphertext
    return message


def test_a_wrong_key_is_named_at_open_with_its_source(backend: Backend,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with backend.open() as store:
        allocate(store, PASSWORD)
        kid = stored_password(store, allocate(store, PASSWORD, "bob@example.org", 2).id)[3:11]
    if backend.name == "sqlite":
        (backend.state / KEY_FILE).write_text(new_key() + "\n")
        message = _refused(backend)
        assert str(backend.state / KEY_FILE) in message
    else:
        monkeypatch.setenv(KEY_ENV, new_key())
        message = _refused(backend)
        assert KEY_ENV in message
    assert f"2 live sessions' passwords were sealed with store key {kid}, not with" in message


def test_a_missing_key_file_is_named_not_replaced_and_only_its_passwords_are_lost(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        session = allocate(store, PASSWORD)
    (state / KEY_FILE).unlink()
    message = _refused(Backend("sqlite", state, None))
    assert f"{state / KEY_FILE} does not exist" in message and "Restore the key file" in message
    assert not (state / KEY_FILE).exists()
    forget = message[message.index("(UPDATE") + 1:message.index(") and open")]
    conn = sqlite3.connect(state / DB_FILE)  # the way out the message gives, as root would
    with conn:
        conn.execute(forget)
    conn.close()
    with open_store(state_dir=state) as store:
        again = store.sessions.get(session.id)
        assert again.password == "" and again == replace(session, password="")
        assert allocate(store, "n3wPassw0rd", "bob@example.org", 2).password == "n3wPassw0rd"


def test_a_postgresql_store_without_a_key_says_so_when_a_password_is_sealed() -> None:
    with temporary_database(require_server()) as url, open_store(url) as store:
        with pytest.raises(KeyUnavailable, match=f"no key to seal passwords with: set {KEY_ENV}"):
            allocate(store, PASSWORD)
        assert store.sessions.find() == []


def test_a_password_too_long_to_keep_sealed_is_refused(tmp_path: Path) -> None:
    with open_store(state_dir=tmp_path / "state") as store:
        with pytest.raises(StoreError, match="too long to keep sealed"):
            allocate(store, "x" * 200)
        assert store.sessions.find() == []


def test_a_key_that_is_not_one_is_refused_without_showing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-a-key-hunter2")
    with pytest.raises(KeyUnavailable, match=f"{KEY_ENV} does not hold a store key") as bad:
        open_store(state_dir=tmp_path / "state")
    assert "hunter2" not in str(bad.value)


def test_a_password_sealed_by_another_key_after_open_is_a_clear_error(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        session = allocate(store, PASSWORD)
        other = sealing.Sealer("elsewhere", sealing.parse_key(new_key(), "x"), None)
        with store.engine.begin() as conn:  # a replica with its own key wrote it
            conn.execute(text("UPDATE sessions SET password = :p WHERE id = :id"),
                         {"p": other.seal(PASSWORD), "id": session.id})
        with pytest.raises(KeyUnavailable, match=f"not with the key from {state / KEY_FILE}"):
            store.sessions.get(session.id)


def test_the_cli_says_the_key_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        allocate(store, PASSWORD)
    (state / KEY_FILE).write_text(new_key() + "\n")
    done = subprocess.run([sys.executable, "-m", "wodsync", "status", "--state", str(state)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={k: v for k, v in os.environ.items() if k != KEY_ENV})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "sealed with store key" in done.stderr and str(state / KEY_FILE) in done.stderr
