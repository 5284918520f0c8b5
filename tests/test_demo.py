"""`wodsync demo`, the README's main job: run for real, then log in as the demo seat."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import socket
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from wodsync.demo.repo import DEMO_EMAIL
from wodsync.mail.sink import read_maildir

from helpers import remove_test_accounts, remove_test_cgroups, until, wodsync, wodsync_argv
from hubs import HUB_PREFIX, hub_prefix_lock, login, read_contents, start_server
from sshd import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                                reason="needs root and /usr/bin/python3 (./bootstrap test)")

PREFIX, UID_BASE = "wodtd", 53000
FOLDER = Path("/opt/wodsync-test/demo")
# System files of the example catalog that the demo converges on this machine: put back after.
SYSTEM_FILES = [Path("/etc/skel/.bashrc"), Path("/etc/sysctl.d/90-wodsync.conf"),
                Path("/etc/security/limits.d/90-wodsync.conf")]
PROJECT = Path(__file__).resolve().parent.parent


API_PORT = free_port()


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `wodsync demo` process (it leaves a daemon running: the process is the point),
    alone with the shared hub venv it may install into (hubs.hub_prefix_lock())."""
    with hub_prefix_lock():
        return subprocess.run(wodsync_argv("demo", "--root", PROJECT, "--dir", FOLDER,
                                           "--hub-prefix", HUB_PREFIX, "--pool-prefix", PREFIX,
                                           "--uid-base", UID_BASE, "--api-port", API_PORT,
                                           *args), capture_output=True, text=True, timeout=900)


def _cleanup(had_group: bool) -> None:
    remove_test_accounts(PREFIX, UID_BASE, () if had_group else ("students",))
    remove_test_cgroups(PREFIX)  # the example catalog's workshops have limits
    shutil.rmtree(FOLDER, ignore_errors=True)


def three_free_ports(count: int = 3) -> int:
    """The first of three (`count`) consecutive free ports below the kernel's ephemeral range:
    the other workers' `free_port()` (an ephemeral port) can never take one of them meanwhile."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for first in range(low - 3000, low - count, count):
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports below the ephemeral range")


@pytest.fixture
def port():
    saved = {p: p.read_bytes() if p.exists() else None for p in SYSTEM_FILES}
    had_group = "students" in {g.gr_name for g in grp.getgrall()}
    _cleanup(had_group)
    port = three_free_ports(4)  # the hub's three, then the mail sink's
    yield port
    demo("--port", str(port), "--mail-port", str(port + 3), "--stop")
    _cleanup(had_group)
    for path, data in saved.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


def _mails_to(maildir: Path, address: str) -> list[EmailMessage]:
    if not (maildir / "new").is_dir():
        return []
    return [m for m in read_maildir(maildir) if address in str(m["To"])]


def test_demo_brings_up_a_hub_a_seat_logs_in_and_reads_its_workshop(port):
    first = demo("--port", str(port), "--mail-port", str(port + 3), "--json")
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    creds = json.loads(first.stdout)
    assert set(creds) == {"url", "username", "password", "state", "root", "session", "api",
                          "api_token", "repo", "register", "mailbox"}
    assert creds["url"] == f"http://127.0.0.1:{port}/" and creds["username"] == f"{PREFIX}1"
    assert creds["register"] == f"{creds['api']}/register"
    page = requests.get(creds["register"], timeout=30)
    assert page.status_code == 200 and "Python 101" in page.text, "the registration page"
    mailbox = Path(creds["mailbox"])
    until(lambda: _mails_to(mailbox, DEMO_EMAIL), "the demo session's credentials mail "
          "reaches the demo's Maildir", timeout=60)
    (mail,) = _mails_to(mailbox, DEMO_EMAIL)
    assert creds["password"] in mail.get_body(("plain",)).get_content(), "the credentials mail"

    base = creds["url"].rstrip("/")
    session, xsrf = login(base, creds["username"], creds["password"])
    start_server(session, base, creds["username"], xsrf)
    nb = read_contents(session, base, creds["username"],
                       "WKSHP-Python101/1-Python-Basics.ipynb")
    source = "".join("".join(c["source"]) for c in nb["content"]["cells"])
    assert "{{" not in source and f"{PREFIX}1" in source
    shown = wodsync("session", "show", creds["session"], "--state", creds["state"], "--root",
                    creds["root"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "active", "the demo seat is a real session"

    again = demo("--port", str(port), "--mail-port", str(port + 3), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout) == creds, "a rerun hands out the same seat and password"

    status = requests.get(f"{creds['api']}/api/v1/status", timeout=10, headers={
        "Authorization": f"Bearer {creds['api_token']}"}).json()
    (host,) = status["hosts"]
    assert host["condition"] == "Ready" and host["lastAppliedRevision"]
    workshop = Path(creds["repo"]) / "catalog/workshops/WKSHP-Python101/workshop.yaml"
    workshop.write_text(workshop.read_text().replace("capacity: 40", "capacity: 39"))
    subprocess.run(["git", "-C", creds["repo"], "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qam", "one seat less"], check=True)
    deployed = demo("--port", str(port), "--mail-port", str(port + 3), "--json")
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert json.loads(deployed.stdout) == creds, "a commit deployed; the session is kept"
    seats = {w["key"]: w for w in requests.get(f"{creds['api']}/api/v1/workshops",
                                               timeout=10).json()}
    assert seats["WKSHP-Python101"]["capacity"] == 39, "the commit is what the daemon serves"

    stopped = demo("--port", str(port), "--mail-port", str(port + 3), "--stop")
    assert stopped.returncode == 0 and "stopped the demo daemon" in stopped.stderr
    assert "stopped the mail sink" in stopped.stderr
    assert "stopped the demo hub (1 servers)" in stopped.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/hub/api/", timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port + 3), timeout=5).close()

    restarted = demo("--port", str(port), "--mail-port", str(port + 3), "--json")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr[-2000:]
    assert json.loads(restarted.stdout) == creds, "after --stop, the same seat and password"
    assert "Error" not in restarted.stderr
    login(base, creds["username"], creds["password"])
