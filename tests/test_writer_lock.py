"""The writer lock on PostgreSQL can be lost while its daemon lives (a database restart ends its
connection): it is watched, writing stops at once, the daemon waits as a standby and writes
again only after re-reading state. Against a private PostgreSQL cluster of this module (the
machine's shared one is never restarted), real `wodsync daemon` processes and a `local` host
with real accounts (wodtz, uids 59801-59802, removed at the end)."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from wodsync.catalog import load_catalog
from wodsync.daemon.hosts import HostRunner
from wodsync.daemon.metrics import Metrics
from wodsync.daemon.writer import STANDBY, WRITER, WriterRole
from wodsync.engine.desired import DesiredHost, desired_state
from wodsync.engine.transport import Cancel
from wodsync.secrets import Secrets
from wodsync.store import Trigger, WriterBusy, WriterLock, WriterLost, open_store

from gitorigin import Origin as Repo
from gitorigin import local_lab
from helpers import remove_test_accounts, until
from pg import PrivateCluster, private_cluster
from sshd import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

PREFIX, UID_BASE = "wodtz", 59800
API_TOKEN = "api-" + os.urandom(6).hex()
EVERY = 0.5  # the unit tests' check interval
RECONCILED = re.compile(r"host=local revision=(\w+)")  # the one log line per host job


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture
def db(cluster: PrivateCluster) -> str:
    return cluster.create_database(f"wodsync_{os.urandom(4).hex()}")


def exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def backend_of_lock(url: str) -> int:
    """The PostgreSQL backend holding an advisory lock (the writer lock: the only one)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")))
    finally:
        engine.dispose()


def terminate(url: str, pid: int) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        engine.dispose()


# ---- the lock and its watcher --------------------------------------------------------------


def test_the_fence_refuses_as_soon_as_the_lock_is_gone_before_any_watcher_looks(db, tmp_path):
    store = open_store(db, state_dir=tmp_path / "state")
    lock = WriterLock(tmp_path / "state", store)
    try:
        lock.acquire()
        lock.fence()  # held: nothing raised
        assert lock.check() is None
        terminate(db, backend_of_lock(db))
        with pytest.raises(WriterLost, match="the writer lock was lost: its connection failed"):
            lock.fence()
        assert not lock.held and lock.check() is not None
        lock.acquire()  # a new connection takes it again
        lock.fence()
    finally:
        lock.release()
        store.close()


def test_a_terminated_lock_backend_is_noticed_and_the_daemon_waits_for_the_rival_to_go(
        db, tmp_path):
    store = open_store(db, state_dir=tmp_path / "state")
    lock, rival = WriterLock(tmp_path / "state", store), WriterLock(tmp_path / "rival", store)
    lost, regained = threading.Event(), threading.Event()

    def stop_writing(why: str) -> None:
        rival.acquire()  # another daemon takes the lock before this one asks for it again
        lost.set()

    role = WriterRole(lock, stop_writing, regained.set, every=EVERY, poll_s=0.1)
    try:
        lock.acquire()
        with pytest.raises(WriterBusy):
            rival.acquire()
        role.start()
        terminate(db, backend_of_lock(db))
        assert lost.wait(EVERY + 2.0), "the loss was not noticed within the check interval"
        assert role.role == STANDBY and "its connection failed" in (role.reason or "")
        assert not regained.wait(3 * EVERY), "it wrote again while the rival held the lock"
        assert role.role == STANDBY and not lock.held
        rival.release()
        assert regained.wait(30), "it never took the lock back"
        until(lambda: role.role == WRITER, "the role never said writer again", timeout=10)
        lock.fence()
        with pytest.raises(WriterBusy):
            rival.acquire()
        assert role.losses == 1
    finally:
        role.stop()
        rival.release()
        lock.release()
        store.close()


def test_a_lock_lost_between_plan_and_apply_applies_and_records_nothing(repo, db, tmp_path):
    """The fence right before the apply closes the window before any watcher notices."""
    store = open_store(db, state_dir=tmp_path / "state")
    lock = WriterLock(tmp_path / "state", store)
    catalog = load_catalog(repo.work)
    runner = HostRunner(store, Metrics(), fence=lock.fence)

    def build() -> DesiredHost:  # runs after the job's first fence, before its plan
        terminate(db, backend_of_lock(db))
        return desired_state(catalog, "local", Secrets())

    try:
        lock.acquire()
        assert runner.run("local", build, "0" * 40, Trigger.COMMIT, None, Cancel()) is None
        assert not (tmp_path / "motd").exists() and not exists(f"{PREFIX}1"), "applied"
        assert store.status.reconciliations(None, 10) == [], "an outcome was recorded"
        assert lock.lost and not lock.held
    finally:
        lock.release()
        store.close()


def test_a_flock_is_checked_and_fenced_like_before(tmp_path):
    store = open_store(None, state_dir=tmp_path / "state")
    lock = WriterLock(tmp_path / "state", store)
    try:
        assert lock.check() is not None  # not held yet
        lock.acquire()
        assert lock.check() is None
        lock.fence()
    finally:
        lock.release()
        store.close()


# ---- two daemons, one PostgreSQL restart ----------------------------------------------------


class Daemon:
    """A `wodsync daemon` process on the private cluster, its output in a log file."""

    def __init__(self, repo: Repo, state: Path, db: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(Path(os.sys.executable).parent / "wodsync"), "daemon", "--repo",
                    str(repo.origin), "--state", str(state), "--listen",
                    f"127.0.0.1:{self.port}", "--interval", "2", "--resync", "5"]
        self.env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, WODSYNC_DB=db)
        self.log = state.parent / f"daemon-{state.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=log)
        return self

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def role(self) -> str | None:
        """`writer` or `standby` from its status; `waiting` while it waits for the lock at
        its start (no API yet); None when it cannot say (the database restarting)."""
        try:
            answer = requests.get(self.base + "/api/v1/status", timeout=3,
                                  headers={"Authorization": f"Bearer {API_TOKEN}"})
        except requests.ConnectionError:
            alive = self.proc is not None and self.proc.poll() is None
            return "waiting" if alive and "standby" in self.text() else None
        except requests.RequestException:
            return None
        return answer.json().get("writer", {}).get("role") if answer.ok else None

    def reconciles(self) -> int:
        return len(RECONCILED.findall(self.text()))

    def revisions(self, after: int) -> list[str]:
        """The revisions of its host jobs after the first `after` (short form)."""
        return RECONCILED.findall(self.text())[after:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def repo(tmp_path):
    remove_test_accounts(PREFIX, UID_BASE)
    r = local_lab(tmp_path, PREFIX, UID_BASE, 2)
    yield r
    remove_test_accounts(PREFIX, UID_BASE)


class Roles:
    """Both daemons' roles sampled every 0.2 s in a thread: any sample with two writers is
    kept."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons
        self.both: list[list[str | None]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            roles = [d.role() for d in self.daemons]
            self.samples += 1
            if roles.count(WRITER) > 1:
                self.both.append(roles)

    def __enter__(self) -> Roles:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def one_writer(daemons: list[Daemon]) -> tuple[Daemon, Daemon] | None:
    """(writer, standby) when exactly one says writer and the other standby or waiting."""
    roles = [d.role() for d in daemons]
    if sorted(roles, key=str) == sorted([WRITER, STANDBY], key=str) or \
            sorted(roles, key=str) == sorted([WRITER, "waiting"], key=str):
        writer = daemons[roles.index(WRITER)]
        return writer, daemons[1 - daemons.index(writer)]
    return None


def test_a_postgresql_restart_under_two_daemons_leaves_exactly_one_writer(
        repo, cluster, db, tmp_path):
    a = Daemon(repo, tmp_path / "a", db)
    b = Daemon(repo, tmp_path / "b", db)
    daemons = [a, b]
    try:
        a.start()
        until(lambda: a.role() == WRITER, f"A never became the writer:\n{a.text()}")
        until(lambda: Path(tmp_path / "motd").exists(), "A never applied the first revision")
        b.start()
        until(lambda: b.role() == "waiting", f"B never said it is a standby:\n{b.text()}")
        with Roles(daemons) as roles:
            cluster.restart()
            until(lambda: "writer lock was lost" in a.text(),
                  f"A never noticed the restart:\n{a.text()}", timeout=30)
            until(lambda: one_writer(daemons), "never exactly one writer after the restart:\n"
                  f"A:\n{a.text()}\nB:\n{b.text()}", timeout=60)
            found = one_writer(daemons)
            assert found is not None
            writer, standby = found
            (repo.work / "templates/motd.j2").write_text("Hello from {{ host.name }}\n")
            newer = repo.commit("a new motd, deployed by whoever is the writer now")
            until(lambda: (tmp_path / "motd").read_text() == "Hello from local\n",
                  f"the writer never deployed after the restart:\n{writer.text()}")
            quiet_from = standby.reconciles()
            writes_from = writer.reconciles()
            time.sleep(12)  # more than two resyncs (5 s) of either daemon
            assert one_writer(daemons) == (writer, standby), "the roles moved with no restart"
            assert standby.reconciles() == quiet_from, f"the standby reconciled:\n" \
                f"{standby.text()}"
            assert writer.reconciles() > writes_from, "the writer stopped resyncing"
            writer.stop()  # its connection ends, and its lock with it: the standby takes over
            until(lambda: standby.role() == WRITER, f"the standby never took over:\n"
                  f"{standby.text()}")
            until(lambda: standby.revisions(quiet_from), "the new writer never reconciled")
        assert roles.samples > 20 and roles.both == [], f"two writers at once: {roles.both}"
        assert standby.revisions(quiet_from)[0] == newer[:12], \
            "the new writer went back to a revision older than the last deployed"
        assert (tmp_path / "motd").read_text() == "Hello from local\n"
    finally:
        for d in daemons:
            d.stop()
