"""Appliance workshops on real hosts: a hub host (local) and two appliance hosts behind a
loopback sshd (tests/appliancelab.py), converged by the engine, sessions made by the session
service.

After a CREATE the seat's own key, read by the seat's own user from its own `~/.ssh` (as its
ssh kernel would), logs in to its appliance account over real ssh with the host key checked;
after the CLEANUP it no longer does. `per_seat` gives each seat the appliance of its offset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from appliancelab import HOMES, Lab, lab, notebook, ssh_as_seat

from wodsync.controller import open_controller
from wodsync.secrets import Secrets
from wodsync.sessions.service import CreateFailed
from wodsync.store import Participant, SessionState

from helpers import wodsync
from sshd import SSHD

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path(SSHD).exists()
                                or shutil.which("ssh") is None,
                                reason="needs root, sshd and ssh (./bootstrap test)")

WORKSHOPS = {
    "WKSHP-Shared/workshop.yaml":
        "name: Shared\ncapacity: 2\nseats: {first: 1, last: 2}\nlocation: lab\nduration: 1\n"
        "appliance: {hosts: [app1], mode: shared}\n"
        "seat_values: {HTTPPORT: '{{ 8000 + SEAT_OFFSET }}'}\n",
    "WKSHP-Shared/1-Intro.ipynb": notebook(
        "ssh {{ APPLIANCE_USER }}@{{ APPLIANCE_HOST }} port {{ HTTPPORT }}"),
    "WKSHP-PerSeat/workshop.yaml":
        "name: Per seat\ncapacity: 2\nseats: {first: 5, last: 6}\nlocation: lab\nduration: 1\n"
        "appliance: {hosts: [app1, app2], mode: per_seat}\n",
    "WKSHP-PerSeat/1-Intro.ipynb": notebook(
        "ssh {{ APPLIANCE_USER }}@{{ APPLIANCE_HOST }}",
        " WoD: {{ hostvars[inventory_hostname]['IP-WKSHP-PerSeat'] }}"),
}


@pytest.fixture(scope="module")
def applab(tmp_path_factory) -> Iterator[Lab]:
    yield from lab(tmp_path_factory.mktemp("appliance"), WORKSHOPS)


@pytest.fixture
def ctl(applab, tmp_path):
    controller = open_controller(applab.root, tmp_path / "state", None, Secrets())
    yield controller
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def _who(n: int) -> Participant:
    return Participant(f"Ann {n}", f"ann{n}@example.org", "ACME")


def _shadow_locked(user: str) -> bool:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1].startswith("!")


def test_the_seat_s_own_key_logs_in_to_its_appliance_after_create_and_not_after_cleanup(
        applab, ctl, tmp_path):
    s = ctl.sessions.create("WKSHP-Shared", _who(1)).session
    assert (s.state, s.host, s.username) == (SessionState.ACTIVE, "hub1", "wodtq1")
    ssh_dir = HOMES / "wodtq" / "wodtq1" / ".ssh"
    private = ssh_dir / "id_ed25519"
    st = private.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 56201)
    assert (ssh_dir.stat().st_mode & 0o777) == 0o700
    authorized = HOMES / "wodtu" / "wodtu1" / ".ssh" / "authorized_keys"
    assert authorized.read_text() == (ssh_dir / "id_ed25519.pub").read_text()
    text = (HOMES / "wodtq" / "wodtq1" / "WKSHP-Shared/1-Intro.ipynb").read_text()
    assert "ssh wodtu1@127.0.0.1 port 8000" in text

    logged = ssh_as_seat("wodtq1", applab, "wodtu1")
    assert (logged.returncode, logged.stdout.strip()) == (0, "wodtu1"), logged.stderr

    key_body = private.read_text().splitlines()[1]
    db = (tmp_path / "state" / "wodsync.db").read_bytes()
    shown = wodsync("session", "show", s.id, "--json", "--root", applab.root,
                    "--state-dir", tmp_path / "state")
    assert key_body.encode() not in db and key_body not in shown.stdout, \
        "the private key is never stored nor shown"

    ended = ctl.sessions.cleanup(s.id)
    assert ended.state is SessionState.ENDED, ended.error
    refused = ssh_as_seat("wodtq1", applab, "wodtu1")
    assert refused.returncode != 0 and "wodtu1" not in refused.stdout
    assert not authorized.exists() and _shadow_locked("wodtu1")


def test_each_create_makes_a_new_key_and_the_previous_one_no_longer_logs_in(applab, ctl,
                                                                            tmp_path):
    first = ctl.sessions.create("WKSHP-Shared", _who(2)).session
    old = tmp_path / "old_key"
    shutil.copy(HOMES / "wodtq" / first.username / ".ssh" / "id_ed25519", old)
    old.chmod(0o600)
    ctl.sessions.cleanup(first.id)
    second = ctl.sessions.create("WKSHP-Shared", _who(3)).session
    assert second.username == first.username, "the freed seat is given again"
    new = (HOMES / "wodtq" / second.username / ".ssh" / "id_ed25519").read_text()
    assert new != old.read_text()
    account = "wodtu" + second.username.removeprefix("wodtq")
    assert ssh_as_seat(second.username, applab, account).returncode == 0
    with_old = ssh_as_root(applab, old, account)
    assert with_old.returncode != 0, "the previous occupant's key is gone from the appliance"


def ssh_as_root(applab: Lab, key: Path, account: str) -> subprocess.CompletedProcess[str]:
    """ssh with exactly `key` (another occupant's, kept by the test)."""
    return subprocess.run(
        ["ssh", "-p", str(applab.sshd.port), "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
         f"UserKnownHostsFile={applab.tmp / 'known_hosts'}", f"{account}@127.0.0.1", "id"],
        capture_output=True, text=True, timeout=30)


def test_per_seat_gives_each_seat_the_appliance_of_its_offset_and_only_that_one(applab, ctl):
    a = ctl.sessions.create("WKSHP-PerSeat", _who(4)).session
    b = ctl.sessions.create("WKSHP-PerSeat", _who(5)).session
    assert sorted((a.seat, b.seat)) == [5, 6]
    by_seat = {s.seat: s for s in (a, b)}
    first, second = by_seat[5], by_seat[6]
    assert ssh_as_seat(first.username, applab, "wodtu5").stdout.strip() == "wodtu5"
    assert ssh_as_seat(second.username, applab, "wodtuv6").stdout.strip() == "wodtuv6"
    assert ssh_as_seat(first.username, applab, "wodtuv6").returncode != 0
    text = (HOMES / "wodtq" / second.username / "WKSHP-PerSeat/1-Intro.ipynb").read_text()
    assert "ssh wodtuv6@127.0.0.1" in text and "WoD: 127.0.0.1" in text


def test_a_full_apply_keeps_a_live_seat_s_appliance_account_open(applab, ctl, tmp_path):
    s = ctl.sessions.create("WKSHP-Shared", _who(6)).session
    account = "wodtu" + s.username.removeprefix("wodtq")
    applied = wodsync("apply", "--yes", "--root", applab.root, "--state", tmp_path / "state")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert not _shadow_locked(account)
    assert ssh_as_seat(s.username, applab, account).returncode == 0


def test_an_unreachable_appliance_fails_the_create_without_trying_the_other_seats(applab,
                                                                                 tmp_path):
    """An appliance added after the lab converged, at a port nothing listens on."""
    added = [applab.root / "hosts/app3.yaml",
             applab.root / "catalog/workshops/WKSHP-Away/workshop.yaml",
             applab.root / "catalog/workshops/WKSHP-Away/1-Intro.ipynb"]
    added[0].write_text(f"address: 127.0.0.1\nport: 9\nhost_key: {applab.sshd.host_pub}\n"
                        "role: appliance\nlocation: lab\npool: wodtu\n"
                        f"state_dir: {applab.tmp}/state-app3\n")
    added[1].parent.mkdir()
    added[1].write_text("name: Away\ncapacity: 2\nseats: {first: 9, last: 10}\n"
                        "location: lab\nduration: 1\nappliance: {hosts: [app3], mode: shared}\n")
    added[2].write_text(notebook("{{ APPLIANCE_USER }}"))
    controller = open_controller(applab.root, tmp_path / "state", None, Secrets())
    try:
        with pytest.raises(CreateFailed, match="app3") as caught:
            controller.sessions.create("WKSHP-Away", _who(7))
        assert caught.value.session is not None
        assert caught.value.session.state is SessionState.RELEASING
        tried = controller.store.sessions.find(workshop="WKSHP-Away")
        assert len(tried) == 1, "no other seat is tried: they need the same appliance"
    finally:
        controller.close()
        for path in added:
            path.unlink()
        added[1].parent.rmdir()


def test_links_a_previous_occupant_left_at_ssh_are_replaced_never_followed(applab, ctl,
                                                                          tmp_path):
    """A free seat (2) and its appliance account with `~/.ssh` planted as links to folders
    of root's: the CREATE writes real folders, and nothing lands in root's."""
    targets = {}
    for prefix in ("wodtq", "wodtu"):
        target = tmp_path / f"root-only-{prefix}"
        target.mkdir(mode=0o700)
        link = HOMES / prefix / f"{prefix}2" / ".ssh"
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        targets[prefix] = (link, target)
    a = ctl.sessions.create("WKSHP-Shared", _who(8)).session
    b = ctl.sessions.create("WKSHP-Shared", _who(9)).session
    assert {a.seat, b.seat} == {1, 2}
    for link, target in targets.values():
        assert list(target.iterdir()) == [], "nothing is written through the link"
        assert link.is_dir() and not link.is_symlink()
    two = a if a.seat == 2 else b
    assert ssh_as_seat(two.username, applab, "wodtu2").stdout.strip() == "wodtu2"
