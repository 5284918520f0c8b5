"""Several fake hosts, each in its own network and mount namespace, converged in parallel."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import wodsync as run_wodsync
from netns import FakeHost, netns_available, start_host
from sshd import keygen

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not netns_available(),
    reason="needs root, openssh-server and network namespaces (./bootstrap test)")

PREFIX, UID_BASE = "wodtm", 51000


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hosts")
    key = workdir / "client_key"
    keygen(key)
    started: list[FakeHost] = []
    try:
        for index in (1, 2):
            started.append(start_host(index, workdir, key))
        yield started
    finally:
        for host in started:
            host.stop()


@pytest.fixture
def fleet(tmp_path, hosts):
    """A catalog whose two hosts are the namespaced sshds, sharing one 30-seat pool."""
    root = tmp_path / "repo"
    files = {
        "catalog/workshops/README.md": "none yet\n",
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  test:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: 30\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: /home\n",
        "catalog/variables.yaml": "BRANDING: Fleet\n",
        "catalog/system.yaml": "files:\n  - template: motd.j2\n    path: /etc/motd\n",
        "templates/motd.j2": "Welcome to {{ host.name }} ({{ BRANDING }})\n",
    }
    for host in hosts:
        files[f"hosts/{host.name}.yaml"] = (
            f"address: {host.address}\nuser: root\nidentity: {host.sshd.client_key}\n"
            f"host_key: {host.sshd.host_pub}\nlocation: lab\npool: test\n"
            f"state_dir: /etc/wodsync-state\n")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    yield root
    for host in hosts:
        for n in range(1, 31):
            host.run("userdel", f"{PREFIX}{n}")
            host.run("rm", "-rf", f"/home/{PREFIX}{n}")
        host.run("rm", "-rf", "/etc/wodsync-state", "/etc/motd")


def wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wodsync(*args, "--root", root)


def test_hosts_converge_in_parallel_each_with_its_own_accounts(fleet, hosts):
    applied = wodsync(fleet, "apply", "--yes", "--parallel", "2")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for host in hosts:
        passwd = (host.root / "etc/passwd").read_text()
        assert f"\n{PREFIX}30:x:{UID_BASE + 30}:" in passwd
        assert (host.root / "etc/motd").read_text() == f"Welcome to {host.name} (Fleet)\n"
        assert (host.root / f"home/{PREFIX}7").stat().st_uid == UID_BASE + 7
        assert host.run("id", "-u", f"{PREFIX}7").stdout.strip() == str(UID_BASE + 7)
    assert PREFIX not in Path("/etc/passwd").read_text()
    assert wodsync(fleet, "plan").returncode == 0


def test_drift_on_one_host_is_planned_and_fixed_on_that_host_only(fleet, hosts):
    assert wodsync(fleet, "apply", "--yes").returncode == 0
    first, second = hosts
    assert second.run("userdel", f"{PREFIX}3").returncode == 0
    done = wodsync(fleet, "plan", "--json")
    assert done.returncode == 2, done.stderr
    plans = {r["host"]: r["plan"]["changes"] for r in json.loads(done.stdout)}
    assert plans[first.name] == []
    assert {a["address"] for a in plans[second.name]} == {f"account:{PREFIX}3"}
    assert wodsync(fleet, "apply", "--yes", "--host", second.name).returncode == 0
    assert wodsync(fleet, "check").returncode == 0
