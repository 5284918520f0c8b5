"""The daemon's host jobs on the host's kept connection: one persistent agent answers every
resync (no connection and no python3 started per job), drift is still found and repaired
through it, and an agent killed between two resyncs is replaced by the next job; a host file
edited in a way that does not change how the host is reached keeps its connection.

Real accounts on this machine as a `local` host (prefix `wodqg`, uids 43501-43503), a real git
origin, the daemon's loops in this process (a test drives their rounds)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess

import pytest

from wodsync.catalog.models import Host
from wodsync.daemon.loop import Daemon as Loops
from wodsync.daemon.loop import Settings
from wodsync.engine.connections import Connections
from wodsync.engine.desired import desired_state
from wodsync.engine.persistent import PersistentAgent
from wodsync.engine.reconcile import observe
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.git import GitSource
from wodsync.source.revision import Current
from wodsync.store import Trigger, open_store

from gitorigin import local_lab
from helpers import remove_test_accounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

PREFIX, UID_BASE, SEATS = "wodqg", 43500, 3


def _taken_by_others() -> list[str]:
    """Accounts in this module's uid range that are not its own."""
    return [p.pw_name for p in pwd.getpwall() if UID_BASE < p.pw_uid <= UID_BASE + SEATS
            and not p.pw_name.startswith(PREFIX)]


@pytest.fixture
def repo(tmp_path):
    taken = _taken_by_others()
    if taken:
        pytest.fail(f"uids {UID_BASE + 1}-{UID_BASE + SEATS} are taken by {taken}")
    remove_test_accounts(PREFIX, UID_BASE)
    r = local_lab(tmp_path, PREFIX, UID_BASE, SEATS)
    yield r
    remove_test_accounts(PREFIX, UID_BASE)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _agent(loops: Loops) -> PersistentAgent:
    """The persistent agent on the local host's kept connection (the seat operations' one)."""
    host = loops.current().catalog.hosts["local"]
    with loops.sessions.connections.transport("local", host) as transport:
        agent = transport.agent
    assert isinstance(agent, PersistentAgent), "no agent on the kept connection"
    return agent


def _results(loops: Loops) -> list[str]:
    """The local host's reconciliations, oldest first: their results."""
    return [r.result.value for r in reversed(loops.store.status.reconciliations("local"))]


def test_resyncs_share_one_agent_and_still_find_drift(repo, tmp_path):
    state = tmp_path / "state"
    store = open_store(state_dir=state)
    current = Current()
    loops = Loops(GitSource(str(repo.origin), "main", state), store, Secrets(),
                  SessionService(store, current), current, Settings())
    try:
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        assert all(_exists(f"{PREFIX}{n}") for n in range(1, SEATS + 1))
        agent = _agent(loops)
        first_pid = agent.pid
        loops.reconcile_round(Trigger.RESYNC)
        loops.reconcile_round(Trigger.RESYNC)
        assert _results(loops) == ["applied", "no-op", "no-op"]
        assert (agent.starts, agent.pid) == (1, first_pid), \
            "a resync started an agent of its own"

        subprocess.run(["userdel", f"{PREFIX}2"], check=True)
        (tmp_path / "motd").write_text("edited by hand\n")
        loops.reconcile_round(Trigger.RESYNC)
        assert _exists(f"{PREFIX}2"), "the deleted seat was not found missing"
        assert (tmp_path / "motd").read_text().startswith("Welcome to local")
        assert _results(loops)[-1] == "applied" and agent.starts == 1
        assert loops.store.status.host("local").drift_count == 1

        os.kill(first_pid, signal.SIGKILL)  # the agent gone between two resyncs
        loops.reconcile_round(Trigger.RESYNC)
        assert _results(loops)[-1] == "no-op", "the job after a killed agent failed"
        assert agent.starts == 2 and agent.pid not in (None, first_pid)

        desired = desired_state(loops.current().catalog, "local", Secrets())
        with loops.sessions.connections.transport("local", desired.host) as transport:
            seen = observe(transport, desired)
        assert set(seen.timings) == {*desired.want, "digests"}
        assert all(isinstance(v, float) and v >= 0 for v in seen.timings.values())
    finally:
        loops.sessions.connections.close()
        loops.source.close()
        store.close()


def test_a_host_file_edit_keeps_the_connection_unless_it_changes_how_the_host_is_reached():
    """A new revision's host (other variables, another state folder) and the host a seat
    operation takes from the revision the host applied share one connection; another address
    or key is a new one (the old one closed)."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzfOlzAboCD63XDt919hOsKiQP5cZgs8+hiyJVx3GXU"
    applied = Host(address="192.0.2.10", host_key=key, location="lab", pool="test")
    deployed = applied.model_copy(update={"variables": {"BRANDING": "New"},
                                          "state_dir": "/var/lib/wodsync-2"})
    moved = applied.model_copy(update={"address": "192.0.2.11"})
    connections = Connections()
    try:
        with connections.transport("h", applied) as first:
            pass
        with connections.transport("h", deployed) as second:
            pass
        assert second is first
        with connections.transport("h", moved) as third:
            pass
        assert third is not first
    finally:
        connections.close()
