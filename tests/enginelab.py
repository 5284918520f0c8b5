"""A one-host lab for engine tests: a loopback sshd and a catalog with a 20-seat test pool.

Test accounts use the prefix `wodt` and uids 50001-50999; the fixture removes them before and
after each test. Tests import the fixtures from here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import remove_test_accounts, wodsync, wodsync_argv
from sshd import start_sshd

NEEDS = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
                                reason="needs root and openssh-server (./bootstrap test)")

PREFIX, UID_BASE, GROUP = "wodt", 50000, "wodtgrp"
SYSCTL = "net.ipv4.tcp_keepalive_time"


def _sysctl() -> str:
    return Path("/proc/sys/" + SYSCTL.replace(".", "/")).read_text().strip()


def _cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def lab(tmp_path, sshd):
    """A catalog with one host (the loopback sshd) and a 20-seat test pool."""
    _cleanup_accounts()
    original = _sysctl()
    root = tmp_path / "repo"
    w = lambda rel, text: (root / rel).parent.mkdir(parents=True, exist_ok=True) or \
        (root / rel).write_text(text)  # noqa: E731
    w("catalog/workshops/README.md", "none yet\n")
    w("catalog/locations.yaml", "locations:\n  - name: lab\n")
    w("catalog/students.yaml", f"pools:\n  test:\n    prefix: {PREFIX}\n    first: 1\n"
      f"    last: 20\n    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n"
      f"    home_root: {tmp_path}/homes\n    group: {GROUP}\n")
    w("catalog/variables.yaml", "BRANDING: Lab\n")
    w("catalog/system.yaml", f"files:\n  - template: test.conf.j2\n"
      f"    path: {tmp_path}/etc/wodsync-test.conf\n    mode: '0640'\n"
      f"    on_change: [touch, {tmp_path}/changed]\n")
    w("templates/test.conf.j2", "# {{ BRANDING }} on {{ host.name }}\nseats={{ pool.last }}\n")
    w("hosts/lab1.yaml", f"address: 127.0.0.1\nport: {sshd.port}\nuser: root\n"
      f"identity: {sshd.client_key}\nhost_key: {sshd.host_pub}\nlocation: lab\npool: test\n"
      f"state_dir: {tmp_path}/state\nsysctl:\n  {SYSCTL}: {original}\n")
    yield root
    _cleanup_accounts()
    Path("/proc/sys/" + SYSCTL.replace(".", "/")).write_text(original)


def lab_shadow() -> list[str]:
    """The lab's own lines of /etc/shadow: other test modules' accounts change beside it."""
    return [line for line in Path("/etc/shadow").read_text().splitlines()
            if line.startswith(PREFIX) and line.split(":", 1)[0][len(PREFIX):].isdigit()]


def wodsync_command(root: Path, *args: str) -> list[str]:
    """The real executable's argv, for the tests about a `wodsync` process."""
    return wodsync_argv(*args, "--root", root)


def run(root: Path, *args: str, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`wodsync ARGS --root ROOT`, run in this process (tests/helpers.py says why)."""
    return wodsync(*args, "--root", root, env=env, stdin=stdin)


def plan_json(root: Path, *extra: str) -> list[dict]:
    done = run(root, "plan", "--json", *extra)
    assert done.returncode in (0, 1, 2) and done.stdout, done.stdout + done.stderr
    return json.loads(done.stdout)


def held_apply(lab: Path, tmp_path: Path) -> subprocess.Popen[str]:
    """`wodsync apply` running, held in the lab file's on_change command (holding the host)
    until `tmp_path / "gate"` exists."""
    import time

    gate = tmp_path / "gate"
    hook = tmp_path / "hold.sh"
    hook.write_text(f"touch {tmp_path}/holding\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n")
    system = lab / "catalog/system.yaml"
    system.write_text(system.read_text().replace(f"[touch, {tmp_path}/changed]",
                                                 f"[sh, {hook}]"))
    proc = subprocess.Popen(wodsync_command(lab, "apply", "--yes"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "holding").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "holding").exists(), "the apply never reached its command"
    return proc
