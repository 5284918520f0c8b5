"""Sessions over a real sshd at its defaults: the long-lived SSH connection of the session
service (`engine/connections.py`, `engine/transport.py`) as production runs it.

Every other session, hub and daemon test uses `transport: local`, and the engine lab's sshd
raises MaxSessions to 50. Here lab1 is reached over SSH through an sshd whose sshd_config sets
neither MaxSessions (default 10 sessions per connection) nor MaxStartups (default 10:30:100
unauthenticated connections), and one controller lives through the whole module, as the
daemon's would:

1. a CREATE and a CLEANUP, on one connection;
2. bursts of more concurrent operations than sshd allows sessions per connection — all
   handled, on that same connection, never more channels in flight than `CHANNELS`;
3. sshd restarted with every connection dropped (a host reboot): the next operations reopen
   one connection and work;
4. sshd stopped: the CREATE fails with an error naming the host and the cause, the host is
   marked down, the attempted seat is left releasing (never active), a CLEANUP waits;
5. sshd back: the pending releases finish, the host is up again, CREATEs work.

The sshd's log counts the connections: `Accepted publickey` once per connection opened.
The module's seats are the session lab's (tests/sessionlab.py): wodtx on lab1, wodty on alt1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from wodsync.controller import Controller, open_controller
from wodsync.engine import connections as connections_module
from wodsync.engine import remote
from wodsync.secrets import Secrets
from wodsync.sessions.service import NoSeat
from wodsync.store import Participant, SessionState

from helpers import until
from sessionlab import HOMES, cleanup_accounts, wodsync, write_catalog
from sshd import SSHD, descendants, free_port, keygen

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("shc") is None
                                or not Path(SSHD).exists(),
                                reason="needs root, sshd and shc (./bootstrap test)")

WORKSHOP = "WKSHP-Sess"  # seats 1-20 at location lab (lab1, over SSH), alternate alt (local)
SSHD_DEFAULT_SESSIONS = 10


class DefaultSshd:
    """An sshd on loopback with sshd's default limits, restartable with the same port and host
    key (the client pins the key), logging to `sshd.log` across restarts."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.host_pub = keygen(workdir / "host_key")
        self.client_key = workdir / "client_key"
        keygen(self.client_key)
        (workdir / "authorized_keys").write_text(
            self.client_key.with_suffix(".pub").read_text())
        # No MaxSessions, no MaxStartups: sshd's defaults are the point of this module.
        (workdir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    def start(self) -> None:
        """Start it, unless it runs (after a failed step a later one may start it again:
        a second listener would fail to bind and the first would outlive the module)."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.workdir / "sshd_config")],
                stdout=subprocess.DEVNULL, stderr=log)
        until(self._answers, f"sshd did not start: {self.log.read_text()[-2000:]}",
              timeout=20)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(7) == b"SSH-2.0"
        except OSError:
            return False

    def stop(self) -> None:
        """The listener and every open connection's processes (what a host going down
        does to its SSH clients)."""
        assert self.process is not None
        victims = descendants(self.process.pid)
        self.process.terminate()
        self.process.wait(timeout=10)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def connections_accepted(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey for root")


@pytest.fixture(scope="module")
def ssh_lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The session lab with lab1 behind a default sshd, converged over SSH once."""
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("sshsessions")
    server = DefaultSshd(tmp / "sshd")
    root = tmp / "repo"
    write_catalog(root, tmp, lab_host=(
        f"address: 127.0.0.1\nport: {server.port}\nidentity: {server.client_key}\n"
        f"host_key: {server.host_pub}\n"))
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    try:
        yield {"root": root, "tmp": tmp, "sshd": server}
    finally:
        if server.process is not None:
            server.stop()
        cleanup_accounts()


@pytest.fixture(scope="module")
def ctl(ssh_lab) -> Iterator[Controller]:
    """One controller for the module: its connection to lab1 outlives each test."""
    controller = open_controller(ssh_lab["root"], ssh_lab["tmp"] / "state", None, Secrets())
    try:
        yield controller
    finally:
        if ssh_lab["sshd"].process is None:
            ssh_lab["sshd"].start()
        for s in controller.store.sessions.find(live=True):
            controller.sessions.purge(s.id, "test teardown")
        controller.close()


@pytest.fixture
def in_flight(monkeypatch) -> dict[str, int]:
    """The most agent calls in flight at once (each is one SSH channel on the host)."""
    seen = {"now": 0, "most": 0}
    lock = threading.Lock()
    real = remote.call

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(remote, "call", counted)
    return seen


def alice(n: int) -> Participant:
    return Participant(f"Alice {n}", f"alice{n}@example.org", "ACME")


def _locked(user: str) -> bool:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1].startswith("!")


def _at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run every job in its own thread, all released together; each one's result or error."""
    start = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = jobs[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "an operation never returned"
    return results


def _create(ctl: Controller, n: int) -> Callable[[], Any]:
    return lambda: ctl.sessions.create(WORKSHOP, alice(n), location="lab").session


def _cleanup(ctl: Controller, session_id: str) -> Callable[[], Any]:
    return lambda: ctl.sessions.cleanup(session_id)


def _client_saw_the_drop(ctl: Controller) -> None:
    """Wait until the controller's SSH client has seen its connection closed, as it does
    within moments of the host dropping it (paramiko's reader thread gets the EOF)."""
    entry = ctl.connections._entries["lab1"]
    until(lambda: not entry.transport.conn.is_connected,  # type: ignore[attr-defined]
          "the client never noticed its connection was dropped", timeout=30)


def _live(ctl: Controller) -> list[Any]:
    return ctl.store.sessions.find(live=True)


def test_create_and_cleanup_over_ssh_use_one_connection(ssh_lab, ctl):
    server = ssh_lab["sshd"]
    before = server.connections_accepted()
    s = ctl.sessions.create(WORKSHOP, alice(0), location="lab").session
    assert (s.state, s.host) == (SessionState.ACTIVE, "lab1")
    assert (HOMES / s.username / f"{WORKSHOP}/1-Intro.ipynb").exists()
    assert not _locked(s.username)
    ended = ctl.sessions.cleanup(s.id)
    assert ended.state == SessionState.ENDED and _locked(s.username)
    assert list((HOMES / s.username).iterdir()) == []
    assert server.connections_accepted() == before + 1, "one connection for both"


def test_bursts_beyond_sshds_ten_sessions_are_handled_on_the_one_connection(ssh_lab, ctl,
                                                                            in_flight):
    """14 CREATEs at once, then 14 CLEANUPs and 6 CREATEs at once: more than sshd's 10
    sessions per connection are asked for, at most CHANNELS run, every one succeeds."""
    server = ssh_lab["sshd"]
    before = server.connections_accepted()
    first = _at_once([_create(ctl, n) for n in range(1, 15)])
    assert all(getattr(s, "state", s) == SessionState.ACTIVE for s in first), first
    assert {s.host for s in first} == {"lab1"} and len({s.seat for s in first}) == 14

    second = _at_once([_cleanup(ctl, s.id) for s in first]
                      + [_create(ctl, n) for n in range(15, 21)])
    assert all(getattr(s, "state", s) == SessionState.ENDED for s in second[:14]), second
    assert all(getattr(s, "state", s) == SessionState.ACTIVE for s in second[14:]), second
    # A CREATE of the burst may take a seat a CLEANUP of the same burst has just freed: that
    # seat is the new session's now; every other cleaned seat is locked.
    given_again = {s.username for s in second[14:]}
    assert all(_locked(s.username) for s in first if s.username not in given_again)
    assert sorted(s.id for s in _live(ctl)) == sorted(s.id for s in second[14:])

    assert server.connections_accepted() == before, "every call on the open connection"
    assert in_flight["most"] <= connections_module.CHANNELS <= SSHD_DEFAULT_SESSIONS


def test_connections_dropped_by_an_sshd_restart_are_reopened(ssh_lab, ctl):
    server = ssh_lab["sshd"]
    live = _live(ctl)
    assert len(live) == 6
    server.stop()
    server.start()
    _client_saw_the_drop(ctl)
    before = server.connections_accepted()
    results = _at_once([_cleanup(ctl, s.id) for s in live] + [_create(ctl, 21), _create(ctl, 22)])
    assert [getattr(r, "state", r) for r in results[:6]] == [SessionState.ENDED] * 6, results
    assert [getattr(r, "state", r) for r in results[6:]] == [SessionState.ACTIVE] * 2, results
    assert server.connections_accepted() == before + 1, "one new connection, then reused"
    assert ctl.connections.down("lab1") is None


def test_a_stopped_sshd_is_a_clear_error_and_leaves_nothing_half_done(ssh_lab, ctl):
    server = ssh_lab["sshd"]
    active = _live(ctl)
    assert len(active) == 2
    server.stop()
    _client_saw_the_drop(ctl)

    with pytest.raises(NoSeat) as refused:
        ctl.sessions.create(WORKSHOP, alice(30), location="lab")
    assert str(refused.value) == ("no seat free anywhere the workshop may go: no reachable "
                                  "host at lab")
    why = ctl.connections.down("lab1")
    assert why == f"cannot connect to 127.0.0.1:{server.port}: connection refused"
    (attempt,) = ctl.store.sessions.find(state=SessionState.RELEASING)
    assert attempt.state == SessionState.RELEASING, "the attempt is never given as active"
    assert attempt.error == f"host lab1 unreachable during CREATE: {why}"
    assert _locked(attempt.username) and not (HOMES / attempt.username / WORKSHOP).exists()

    with pytest.raises(NoSeat, match="no reachable host at lab"):  # down: not even tried
        ctl.sessions.create(WORKSHOP, alice(31), location="lab")
    waiting = ctl.sessions.cleanup(active[0].id)
    assert waiting.state == SessionState.RELEASING
    assert waiting.error == f"CLEANUP did not finish: {why}"
    assert not _locked(waiting.username), "nothing done on the host yet, nothing claimed"


def test_when_the_sshd_is_back_releases_finish_and_creates_resume(ssh_lab, ctl):
    server = ssh_lab["sshd"]
    server.start()
    before = server.connections_accepted()
    pending = ctl.store.sessions.find(state=SessionState.RELEASING)
    assert len(pending) == 2
    done = ctl.sessions.retry_releases(datetime.now(UTC) + timedelta(hours=1))
    assert sorted(s.id for s in done) == sorted(s.id for s in pending)
    assert all(s.state == SessionState.ENDED for s in done)
    assert all(_locked(s.username) for s in done)
    assert ctl.connections.down("lab1") is None, "a call that went through: the host is up"
    s = ctl.sessions.create(WORKSHOP, alice(40), location="lab").session
    assert (s.state, s.host) == (SessionState.ACTIVE, "lab1")
    assert ctl.sessions.cleanup(s.id).state == SessionState.ENDED
    assert server.connections_accepted() == before + 1
