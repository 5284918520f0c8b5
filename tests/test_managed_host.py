"""Hosts record who manages them: issue 24's case, reproduced against a real daemon, a real
JupyterHub and real seats — `apply --yes` run by hand without the daemon's store, on a host
the daemon manages, used to plan with no sessions and empty a workshop's hub group of its live
sessions. It is now refused on the host itself, whatever store it was given; `plan` still
works and says who manages the host; `--force-manager` goes on, logged on the host. The seats
the host records in use keep their group whoever plans (the daemon's own apply, racing a
CREATE, emptied it too). And
through the engine on real seats: a daemon records itself even with nothing to change, and a
daemon of another store takes a host over only when forced."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import requests

from wodsync.catalog import validate
from wodsync.engine.desired import desired_state
from wodsync.engine.manager import Applier
from wodsync.engine.reconcile import host_job
from wodsync.secrets import Secrets

from gitorigin import Origin
from helpers import until
from helpers import wodsync as run_wodsync
from hubs import hub_ports, hub_prefix_lock, needs_hub, stop_hub
from sshd import free_port
from storelab import (
    API_TOKEN,
    HUB_TOKEN,
    PREFIX,
    SEAT_UIDS,
    SEATS,
    WORKSHOP,
    catalog_files,
    claim_accounts,
    env,
    hub_lines,
    remove_accounts,
    write_catalog,
)

FIRST_INSTALL_S = 900  # a fresh machine installs JupyterHub and the proxy first


class Daemon:
    """`wodsync daemon` following the lab's origin, as a process of its own."""

    def __init__(self, origin: Origin, state: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / "daemon.log"
        self.cmd = [str(Path(os.sys.executable).parent / "wodsync"), "daemon", "--repo",
                    str(origin.origin), "--state", str(state), "--listen",
                    f"127.0.0.1:{self.port}", "--interval", "2"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=env(), stdout=log, stderr=log)
        return self

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.base + path, timeout=120,
                                headers={"Authorization": f"Bearer {API_TOKEN}"}, **kw)

    def host(self) -> dict | None:
        try:
            hosts = self.api("GET", "/api/v1/status").json()["hosts"]
        except (requests.ConnectionError, ValueError, KeyError):
            return None
        return next((h for h in hosts if h["host"] == "lab"), None)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=180)


def test_a_daemon_records_itself_with_nothing_to_change_and_another_takes_over_if_forced(
        tmp_path):
    """(First in the module: it uses the lab's accounts before the hub lab makes them.)
    Through the engine and the agent on real seats (no hub): a converged host gets the
    record at the daemon's first job; a daemon of another store is refused, the record kept;
    forced, it takes the host over, logged on the host."""
    if os.geteuid() != 0:
        pytest.skip("real seats need root (./bootstrap test)")
    claim_accounts()
    try:
        root = tmp_path / "repo"
        write_catalog(root, tmp_path)
        catalog, _ = validate(root)
        desired = desired_state(catalog, "lab", Secrets())
        first = host_job(desired, apply=True)  # an apply with no store: no daemon manages it
        assert first.ok and first.converged and first.manager is None, first.error
        record_file = tmp_path / "hoststate/manager.json"
        assert not record_file.exists()

        ours = Applier.daemon("a" * 32, "sqlite")
        claimed = host_job(desired, apply=True, applier=ours)
        assert claimed.ok and not claimed.plan.has_changes, claimed.error
        assert json.loads(record_file.read_text())["store"] == "a" * 32, "written anyway"

        theirs = host_job(desired, apply=True, applier=Applier.daemon("b" * 32, "postgresql"))
        assert f"host lab: {record_file}: this host is managed by wodsync daemon on" in \
            (theirs.error or "") and "from another store (bbbb" in theirs.error
        assert json.loads(record_file.read_text())["store"] == "a" * 32

        taken = host_job(desired, apply=True,
                         applier=Applier.daemon("b" * 32, "postgresql", force=True))
        assert taken.ok, taken.error
        record = json.loads(record_file.read_text())
        assert record["store"] == "b" * 32 and "postgresql store" in record["description"]
        logged = json.loads((tmp_path / "hoststate/manager.log").read_text().splitlines()[-1])
        assert logged["event"] == "taken over" and logged["manager"]["store"] == "a" * 32
        observed = host_job(desired, apply=False)
        assert observed.manager == record, "plan (read-only) says who manages the host"
    finally:
        remove_accounts()


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    """A host the daemon converged, with three live sessions in the workshop's hub group."""
    claim_accounts()
    tmp = tmp_path_factory.mktemp("managed")
    ports = hub_ports()
    origin = Origin(tmp / "git")
    for rel, text in catalog_files(tmp, hub_lines(tmp, ports)).items():
        origin.write(rel, text)
    head = origin.commit("the lab")
    daemon = Daemon(origin, tmp / "controller")
    try:
        with hub_prefix_lock():
            daemon.start()
            until(lambda: (daemon.host() or {}).get("lastAppliedRevision") == head,
                  "the daemon never converged the lab: " + daemon.log.read_text()[-3000:]
                  if daemon.log.exists() else "", timeout=FIRST_INSTALL_S)
        sessions = [daemon.api("POST", "/api/v1/sessions", json={
            "workshop": WORKSHOP, "participant": {"email": f"p{n}@example.org"}})
            for n in range(3)]
        assert [s.status_code for s in sessions] == [201] * 3, [s.text for s in sessions]
        yield {"tmp": tmp, "root": origin.work, "daemon": daemon, "ports": ports,
               "users": sorted(s.json()["credentials"]["username"] for s in sessions),
               "sessions": [s.json()["id"] for s in sessions]}
        for sid in [s.json()["id"] for s in sessions]:
            daemon.api("POST", f"/api/v1/sessions/{sid}/purge")
    finally:
        daemon.stop()
        stop_hub(tmp / "hubdata", SEAT_UIDS)
        remove_accounts()


def group_members(lab) -> list[str]:
    """The workshop's hub group, as the hub itself answers."""
    answer = requests.get(f"http://127.0.0.1:{lab['ports']['port']}/hub/api/groups/{WORKSHOP}",
                          headers={"Authorization": f"token {HUB_TOKEN}"}, timeout=30)
    assert answer.ok, answer.text
    return sorted(answer.json()["users"])


def apply_elsewhere(lab, *args: str):
    """`wodsync apply --yes` as an operator runs it by hand: the catalog's clone, and a state
    folder with no store (not the daemon's `--db`)."""
    return run_wodsync("apply", "--yes", "--root", lab["root"], "--state",
                       lab["tmp"] / "elsewhere", *args, env=env())


@needs_hub
def test_the_daemon_records_itself_on_the_host_root_only_and_without_its_url(managed):
    record_file = managed["tmp"] / "hoststate/manager.json"
    record = json.loads(record_file.read_text())
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600 and record_file.stat().st_uid == 0
    assert record["description"].startswith("wodsync daemon on ") and "sqlite" in \
        record["description"]
    assert len(record["store"]) == 32 and "/" not in record_file.read_text()
    assert group_members(managed) == managed["users"]


@needs_hub
def test_an_apply_without_the_daemons_store_is_refused_and_the_hub_group_keeps_its_members(
        managed):
    planned = run_wodsync("plan", "--root", managed["root"], "--state",
                          managed["tmp"] / "elsewhere", env=env())
    out = planned.stdout + planned.stderr
    # Without the store the sessions are unknown, but the host records their seats in use:
    # the plan leaves them (their hub group with them) alone.
    assert planned.returncode == 0, out
    for user in managed["users"]:
        assert f"seat {user} holds session " in out and "unknown to the store: left alone" in out
    assert "lab: managed by wodsync daemon on" in planned.stderr

    refused = apply_elsewhere(managed)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1, out
    assert f"{managed['tmp']}/hoststate/manager.json: this host is managed by wodsync " \
           "daemon on" in out, out
    assert "--force-manager" in out and "without a store" in out
    assert group_members(managed) == managed["users"], "the live sessions stay in the group"
    assert not (managed["tmp"] / "hoststate/manager.log").exists(), "nothing was forced"


@needs_hub
def test_with_force_manager_the_apply_goes_on_and_is_logged_on_the_host(managed):
    """Forced, the apply makes its changes (here: a seat an operator put into the workshop's
    group by hand goes); the seats the host holds keep their group."""
    stray = f"{PREFIX}{SEATS}"
    added = requests.post(
        f"http://127.0.0.1:{managed['ports']['port']}/hub/api/groups/{WORKSHOP}/users",
        headers={"Authorization": f"token {HUB_TOKEN}"}, json={"users": [stray]}, timeout=30)
    assert added.ok, added.text
    assert stray in group_members(managed)
    forced = apply_elsewhere(managed, "--force-manager")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert group_members(managed) == managed["users"], "the stray seat went, the held stayed"
    lines = (managed["tmp"] / "hoststate/manager.log").read_text().splitlines()
    logged = json.loads(lines[-1])
    assert logged["event"] == "forced" and logged["by"].startswith("wodsync apply by ")
    assert logged["by_store"] is None
    assert logged["manager"]["description"].startswith("wodsync daemon on ")
    record = json.loads((managed["tmp"] / "hoststate/manager.json").read_text())
    assert record == logged["manager"], "forcing an apply does not take the host over"

