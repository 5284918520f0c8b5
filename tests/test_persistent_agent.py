"""The persistent agent (agent/server.py, engine/persistent.py), on this machine and over a real
sshd: one long-lived python3 per transport, requests answered out of order, restarted when it
died — transparently for a request it never got, never for one it may have begun — and no
host lock held across requests."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from wodsync.agent.hostlock import LOCK_FILE
from wodsync.catalog.models import Host
from wodsync.engine import remote
from wodsync.engine.persistent import AgentGone
from wodsync.engine.transport import Cancel, LocalTransport, SSHTransport, Transport

from sshd import start_sshd


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sshd = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield sshd
    sshd.stop()


@pytest.fixture(params=["local", "ssh"])
def transport(request, server):
    if request.param == "local":
        made: Transport = LocalTransport()
    else:
        host = Host(address="127.0.0.1", port=server.port, user="root",
                    identity=str(server.client_key), host_key=server.host_pub,
                    location="lab", pool="p")
        made = SSHTransport("lab1", host)
    yield made
    made.close()


def _payload(tmp_path: Path) -> dict:
    return {"state_dir": str(tmp_path / "state"), "owner": "host lab1"}


def _apply(tmp_path: Path, lock_timeout: float) -> dict:
    return {**_payload(tmp_path), "batch": {}, "expect": {}, "probes": {},
            "lock_timeout": lock_timeout}


def _agent_pid(transport: Transport, tmp_path: Path) -> int:
    remote.call(transport, "version", _payload(tmp_path))
    agent = remote.persistent_agent(transport)
    assert agent is not None and agent.pid is not None
    return agent.pid


def _held_lock(tmp_path: Path) -> int:
    """The host lock, taken by this test as another writer would hold it."""
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    fd = os.open(tmp_path / "state" / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"apply by the test", 0)
    return fd


def _opened_by(pid: int, path: Path) -> bool:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if fd.readlink() == path:
                return True
        except OSError:
            continue
    return False


def _wait(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_one_agent_answers_many_requests_and_they_pass_each_other(transport, tmp_path):
    """Every call goes to the same agent process; a request waiting for the host lock does not
    hold back one that needs no lock: the second is answered first."""
    pid = _agent_pid(transport, tmp_path)
    fd = _held_lock(tmp_path)
    answers: list[str] = []
    slow = threading.Thread(target=lambda: answers.append(
        "apply" if remote.call(transport, "apply", _apply(tmp_path, 30)) else ""))
    slow.start()
    _wait(lambda: _opened_by(pid, tmp_path / "state" / LOCK_FILE), "the apply waits for the lock")
    assert remote.call(transport, "version", _payload(tmp_path))["protocol"]
    answers.append("version")
    os.close(fd)
    slow.join(30)
    assert answers == ["version", "apply"]
    assert _agent_pid(transport, tmp_path) == pid
    assert remote.persistent_agent(transport).starts == 1


def test_the_agents_children_never_write_into_the_wire(transport, tmp_path):
    """The agent keeps the protocol streams to itself: what its children inherit as stdin and
    stdout is /dev/null."""
    pid = _agent_pid(transport, tmp_path)
    assert Path(f"/proc/{pid}/fd/0").readlink() == Path("/dev/null")
    assert Path(f"/proc/{pid}/fd/1").readlink() == Path("/dev/null")


def test_no_lock_is_held_across_requests(transport, tmp_path):
    """An apply through the agent takes the host lock for its own call only: right after it,
    another writer gets the lock at once; and while another holds it, the agent's apply
    waits and names the holder, as a one-shot call does."""
    remote.call(transport, "apply", _apply(tmp_path, 5))
    fd = os.open(tmp_path / "state" / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the agent kept it
    os.pwrite(fd, b"apply by the test", 0)
    with pytest.raises(remote.HostError, match=r"host busy \(apply by the test"):
        remote.call(transport, "apply", _apply(tmp_path, 0.3))
    os.close(fd)


def test_an_agent_killed_mid_request_fails_that_request_and_never_runs_it_again(
        transport, tmp_path):
    """kill -9 of the agent while an apply waits for the lock: the call fails at once
    (AgentGone), the apply is not sent to the next agent (the lock, released, is never taken
    by it), and the next request starts a new agent."""
    pid = _agent_pid(transport, tmp_path)
    fd = _held_lock(tmp_path)
    failed: list[BaseException] = []

    def apply() -> None:
        try:
            remote.call(transport, "apply", _apply(tmp_path, 60))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=apply)
    thread.start()
    _wait(lambda: _opened_by(pid, tmp_path / "state" / LOCK_FILE), "the apply waits for the lock")
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert failed and isinstance(failed[0], AgentGone), failed
    assert time.monotonic() - started < 10
    assert "never sent again" in str(failed[0])
    os.close(fd)  # the lock is free: an apply sent again would take it and write its holder
    new = _agent_pid(transport, tmp_path)
    time.sleep(0.5)
    assert new != pid
    assert (tmp_path / "state" / LOCK_FILE).read_bytes() == b"apply by the test"
    assert remote.persistent_agent(transport).starts == 2


def test_a_dead_agent_is_replaced_for_the_next_request(transport, tmp_path):
    """Killed between requests (the host's OOM killer, an operator): the next call is answered
    by a new agent, transparently."""
    pid = _agent_pid(transport, tmp_path)
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not Path(f"/proc/{pid}").exists()
          or "zombie" in Path(f"/proc/{pid}/status").read_text(), "the agent is gone")
    assert remote.call(transport, "version", _payload(tmp_path))["protocol"]
    assert _agent_pid(transport, tmp_path) != pid


def test_a_cancelled_request_stops_and_the_agent_serves_on(transport, tmp_path):
    """Cancel.hard (a second Ctrl-C) stops that request at its next safe point — here its wait
    for the lock — while the agent stays up for the others."""
    pid = _agent_pid(transport, tmp_path)
    fd = _held_lock(tmp_path)
    cancel = Cancel()
    failed: list[BaseException] = []

    def apply() -> None:
        try:
            remote.call(transport, "apply", _apply(tmp_path, 120), cancel)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=apply)
    thread.start()
    _wait(lambda: _opened_by(pid, tmp_path / "state" / LOCK_FILE), "the apply waits for the lock")
    cancel.hard.set()
    thread.join(30)
    assert not thread.is_alive()
    assert failed and "asked to stop" in str(failed[0]), failed
    os.close(fd)
    assert _agent_pid(transport, tmp_path) == pid


def test_one_shot_calls_remain_the_fallback(tmp_path, monkeypatch):
    """`WODSYNC_AGENT=oneshot`: every call a python3 of its own, as before; no agent kept."""
    monkeypatch.setenv(remote.AGENT_MODE, "oneshot")
    transport = LocalTransport()
    assert remote.call(transport, "version", _payload(tmp_path))["protocol"]
    assert transport.agent is None


def test_the_agent_ends_with_its_controller(tmp_path):
    """The transport closed (the controller gone): the agent ends."""
    transport = LocalTransport()
    pid = _agent_pid(transport, tmp_path)
    transport.close()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text().lower()
