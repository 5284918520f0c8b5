"""Hosts on their own clocks (issue 24, items 3, 4 and 11), against a real `wodsync daemon`:

1. a slow host — an `ssh` host behind a second loopback sshd whose `ForceCommand` makes every
   agent call wait, as a minutes-long hub install would — never holds back the other host:
   two commits reach the fast host within seconds each while the slow one is busy with the
   first; once free, the slow host gets the newest revision at once, one job at a time;
2. a CREATE on a host still on the old revision (its apply refused: a pool-prefix rename past
   the deletion cap) is made from that old revision, and a workshop only the newer revision
   has is a clear 503 naming the host and both revisions — not a raw `KeyError: getpwnam()`;
3. a real JupyterHub killed with `kill -9` is noticed by the hub probe and restarted by the
   daemon within a few probe intervals, long before the next resync.

Accounts: prefix `wodtb`, uids 54201-54260 (fast 54201-, slow 54211-, far 54221-, hub 54241-).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import time
from pathlib import Path

import pytest

from wodsync.catalog import validate
from wodsync.catalog.loader import Catalog
from wodsync.daemon.probe import probe_hub
from wodsync.engine.connections import Connections

from daemonlab import DaemonProcess
from daemonlab import daemons as daemons  # a fixture (its name, for pytest)
from gitorigin import Origin
from helpers import ended, remove_test_accounts, until
from hubs import HUB_PREFIX, hub_ports, hub_prefix_lock, needs_hub, stop_hub
from sshd import kill_sessions, start_sshd

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
                                reason="needs root and openssh-server (./bootstrap test)")

PREFIX, UID_BASE, UIDS = "wodtb", 54200, range(54201, 54261)
PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOK = ('{"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["Seat {{ STDID }}"]}'
            '], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
# The slow host's ForceCommand: every command it is asked to run (each agent started) waits while
# the hold file exists — a real wait in the path, as a host busy for minutes makes it — then
# runs as sshd would have run it.
WRAPPER = """#!/bin/sh
while [ -e {hold} ]; do sleep 0.2; done
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


def exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def pool(name: str, prefix: str, uid_base: int, last: int, homes: Path) -> str:
    return (f"  {name}:\n    prefix: {prefix}\n    first: 1\n    last: {last}\n"
            f"    uid_base: {uid_base}\n    gid_base: {uid_base}\n    home_root: {homes}\n")


@pytest.fixture
def repo(tmp_path):
    """A git origin with a location and shared catalog files; the module's accounts removed
    before and after."""
    taken = [e.pw_name for e in pwd.getpwall()
             if e.pw_uid in UIDS and not e.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"uids {UIDS.start}-{UIDS.stop - 1} of this module are taken by {taken}")
    remove_test_accounts(PREFIX, UID_BASE)
    tmp_path.chmod(0o755)
    (tmp_path / "homes").mkdir()
    r = Origin(tmp_path)
    r.write("catalog/locations.yaml", "locations:\n  - name: lab\n")
    r.write("catalog/variables.yaml", "BRANDING: Lab\n")
    r.write("catalog/workshops/README.md", "none yet\n")
    yield r
    remove_test_accounts(PREFIX, UID_BASE)


def test_a_slow_host_never_holds_back_the_others_and_gets_the_newest_revision_when_free(
        repo, daemons, tmp_path):
    hold = tmp_path / "hold"
    wrapper = tmp_path / "slow-host.sh"
    wrapper.write_text(WRAPPER.format(hold=hold))
    wrapper.chmod(0o755)
    sshd = start_sshd(tmp_path / "sshd", extra=f"ForceCommand {wrapper}\n")
    homes = tmp_path / "homes"

    def students(last: int) -> str:
        return "pools:\n" + pool("fast", f"{PREFIX}f", UID_BASE, last, homes) + \
            pool("slow", f"{PREFIX}s", UID_BASE + 10, last, homes)

    repo.write("catalog/students.yaml", students(3))
    repo.write("hosts/fast.yaml", f"address: localhost\ntransport: local\nlocation: lab\n"
               f"pool: fast\nstate_dir: {tmp_path}/fast-state\n")
    repo.write("hosts/slow.yaml", f"address: 127.0.0.1\nport: {sshd.port}\nuser: root\n"
               f"identity: {sshd.client_key}\nhost_key: {sshd.host_pub}\nlocation: lab\n"
               f"pool: slow\nstate_dir: {tmp_path}/slow-state\n")
    first = repo.commit("two hosts")
    try:
        d = DaemonProcess(repo.origin, tmp_path / "state", "--interval", "1", "--resync",
                          "600", "--probe", "0", "--stop-timeout", "10")
        daemons.append(d.start())
        until(lambda: d.applied("fast") == first and d.applied("slow") == first,
              f"the hosts never converged:\n{d.text()[-3000:]}", timeout=120)
        assert [h["driftCount"] for h in d.hosts().values()] == [0, 0], "a first install"
        hold.touch()  # from now on every agent started on the slow host waits
        # The daemon keeps one agent per host on its connection: cut them (a host busy, as
        # after a reboot), so the slow host's next job starts a new one, which waits.
        kill_sessions(sshd)
        repo.write("catalog/students.yaml", students(4))
        two, pushed = repo.commit("a fourth seat on each host"), time.monotonic()
        until(lambda: d.applied("fast") == two, "the fast host waited for the slow one",
              timeout=60)
        fast_two = time.monotonic() - pushed
        # The slow host's job started on `two` too (recorded as it starts: under load that
        # can come a moment after the fast host finished) and is held there.
        until(lambda: (d.hosts()["slow"]["condition"],
                       d.hosts()["slow"]["lastAttemptedRevision"]) == ("Reconciling", two),
              f"the slow host never started on the new revision: {d.hosts()['slow']}",
              timeout=30)
        repo.write("catalog/students.yaml", students(5))
        three, pushed = repo.commit("a fifth seat on each host"), time.monotonic()
        until(lambda: d.applied("fast") == three, "the second commit waited for the slow "
              "host", timeout=60)
        fast_three = time.monotonic() - pushed
        assert exists(f"{PREFIX}f5") and not exists(f"{PREFIX}s4")
        assert d.hosts()["slow"]["lastAttemptedRevision"] == two, "never started twice"
        assert [r["revision"] for r in d.history("slow")] == [first]
        hold.unlink()
        until(lambda: d.applied("slow") == three,
              "the slow host never got the newest revision", timeout=120)
        assert exists(f"{PREFIX}s5")
        runs = d.history("slow")
        assert [(r["revision"], r["trigger"], r["result"]) for r in runs[1:]] == [
            (two, "commit", "applied"), (three, "commit", "applied")]
        end_of_two = _t(runs[1]["startedAt"]) + runs[1]["durationSeconds"]
        assert _t(runs[2]["startedAt"]) >= end_of_two - 0.01, "one job at a time per host"
        print(f"\nfast host applied each commit in {fast_two:.1f} s and {fast_three:.1f} s "
              f"while the slow host was busy for {runs[1]['durationSeconds']:.1f} s")
    finally:
        hold.unlink(missing_ok=True)
        for x in daemons:
            x.stop()
        sshd.stop()


def test_a_create_uses_the_revision_its_host_applied_and_says_when_a_workshop_is_not_there(
        repo, daemons, tmp_path):
    homes = tmp_path / "homes"
    repo.write("catalog/students.yaml", "pools:\n" + pool("far", f"{PREFIX}p", UID_BASE + 20,
                                                         3, homes))
    repo.write("hosts/far.yaml", f"address: localhost\ntransport: local\nlocation: lab\n"
               f"pool: far\nstate_dir: {tmp_path}/far-state\n")
    add_workshop(repo, "WKSHP-Clock", 1, 2)
    old = repo.commit("a host and a workshop")
    d = DaemonProcess(repo.origin, tmp_path / "state", "--interval", "1", "--resync", "600",
                      "--probe", "0")
    daemons.append(d.start())
    until(lambda: d.applied("far") == old, f"never converged:\n{d.text()[-3000:]}",
          timeout=120)
    repo.write("catalog/students.yaml", "pools:\n" + pool("far", f"{PREFIX}q", UID_BASE + 20,
                                                         3, homes))
    add_workshop(repo, "WKSHP-Later", 3, 3)
    repo.write("catalog/workshops/WKSHP-Clock/1-Intro.ipynb",
               NOTEBOOK.replace("Seat {{", "Renamed seat {{"))
    new = repo.commit("rename the pool's prefix, and a new workshop")
    until(lambda: d.hosts()["far"]["lastAttemptedRevision"] == new
          and d.hosts()["far"]["condition"] == "Stalled", "the rename was never refused")
    far = d.hosts()["far"]
    assert (far["reason"], far["lastAppliedRevision"]) == ("DeletionsRefused", old)
    created = d.post("/api/v1/sessions", {"workshop": "WKSHP-Clock",
                                          "participant": {"email": "ann@example.org"}})
    assert created.status_code == 201, created.text
    session = created.json()
    assert (session["revision"], session["credentials"]["username"]) == (old, f"{PREFIX}p1")
    notebook = (homes / f"{PREFIX}p1/WKSHP-Clock/1-Intro.ipynb").read_text()
    assert "Seat 1" in notebook and "Renamed" not in notebook, "the old revision's notebook"
    later = d.post("/api/v1/sessions", {"workshop": "WKSHP-Later",
                                        "participant": {"email": "bob@example.org"}})
    assert later.status_code == 503, later.text
    assert later.json()["detail"] == (
        f"host far is still on revision {old[:12]}, which has no workshop WKSHP-Later (added "
        f"in revision {new[:12]}, not applied there yet)")
    assert "KeyError" not in d.text()


def add_workshop(repo: Origin, key: str, first: int, last: int) -> None:
    repo.write(f"catalog/workshops/{key}/workshop.yaml",
               f"name: {key}\ncapacity: {last - first + 1}\nseats: {{first: {first}, last: "
               f"{last}}}\nlocation: lab\nduration: 1\n")
    repo.write(f"catalog/workshops/{key}/1-Intro.ipynb", NOTEBOOK)


@needs_hub
def test_a_hub_killed_is_restarted_by_the_probe_long_before_the_resync(repo, daemons,
                                                                        tmp_path):
    """The hub host is an `ssh` host (this machine through a loopback sshd), so the probe
    goes through an SSH tunnel; the same hub probed as a `local` host answers too."""
    ports = hub_ports()
    data = tmp_path / "hubdata"
    sshd = start_sshd(tmp_path / "sshd")
    repo.write("catalog/students.yaml", "pools:\n" + pool("hub", f"{PREFIX}h", UID_BASE + 40,
                                                         2, tmp_path / "homes"))
    repo.write("hosts/hubhost.yaml",
               f"address: 127.0.0.1\nport: {sshd.port}\nuser: root\n"
               f"identity: {sshd.client_key}\nhost_key: {sshd.host_pub}\nlocation: lab\n"
               f"pool: hub\nstate_dir: {tmp_path}/hub-state\nhub:\n  service: process\n"
               f"  prefix: {HUB_PREFIX}\n  config_dir: {tmp_path}/hubconf\n"
               f"  data_dir: {data}\n  ip: 127.0.0.1\n  port: {ports['port']}\n"
               f"  hub_port: {ports['hub_port']}\n"
               f"  proxy_api_port: {ports['proxy_api_port']}\n")
    for template in (PROJECT / "templates/hub").glob("*.j2"):
        repo.write(f"templates/hub/{template.name}", template.read_text())
    first = repo.commit("a host with a hub")
    up = 'wodsync_hub_up{host="hubhost"} 1.0'
    try:
        d = DaemonProcess(repo.origin, tmp_path / "state", "--interval", "3600", "--resync",
                          "3600", "--probe", "2")
        with hub_prefix_lock():  # the first apply may install into the shared hub prefix
            daemons.append(d.start())
            until(lambda: d.applied("hubhost") == first and up in d.metrics(),
                  f"the hub never came up:\n{d.text()[-3000:]}", timeout=600)
        host = errors_free(repo.work).hosts["hubhost"]
        with contextlib.closing(Connections()) as connections:
            assert probe_hub(connections, "hubhost", host) is None
            local = host.model_copy(update={"transport": "local"})
            assert probe_hub(connections, "local", local) is None
        pid = json.loads((data / "wodsync-hub.json").read_text())["pid"]
        os.kill(pid, 9)
        killed = time.monotonic()
        until(lambda: ended(pid), "the hub did not die")
        until(lambda: 'wodsync_hub_up{host="hubhost"} 0.0' in d.metrics(),
              "the probe never saw the hub down", timeout=30)
        until(lambda: up in d.metrics(), f"the hub was not restarted:\n{d.text()[-3000:]}",
              timeout=120)
        seconds = time.monotonic() - killed
        runs = d.history("hubhost")
        assert (runs[-1]["trigger"], runs[-1]["result"]) == ("probe", "applied"), runs
        again = json.loads((data / "wodsync-hub.json").read_text())["pid"]
        assert again != pid and not ended(again)
        assert "hub of hubhost is down" in d.text()
        print(f"\nhub killed -> restarted and answering in {seconds:.1f} s "
              "(probe every 2 s, resync 3600 s)")
    finally:
        for x in daemons:
            x.stop()
        stop_hub(data, UIDS)
        sshd.stop()
        shutil.rmtree(tmp_path / "hubconf", ignore_errors=True)


def errors_free(root: Path) -> Catalog:
    catalog, found = validate(root)
    assert catalog is not None, [d.text() for d in found if d.is_error]
    return catalog


def _t(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
