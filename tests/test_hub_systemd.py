"""A hub run by systemd: the unit is rendered from templates/hub/, reloaded when it changes, and
the hub restarted only when its configuration, unit or versions changed.

systemd cannot run on this test machine (no systemd as PID 1), so `tests/fakes/systemctl`
stands in for it, keeping systemd's behaviour that matters here: units are read at
daemon-reload, restart ends the main process only (KillMode=process), MainPID is reported.
The unit itself is checked by systemd's own `systemd-analyze verify`, which needs no PID 1.
Everything else — JupyterHub, the proxy, accounts — is real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wodsync.catalog import validate
from wodsync.engine.desired import desired_state
from wodsync.engine.reconcile import host_job
from wodsync.secrets import Secrets
from wodsync.store import open_store

from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync
from hubs import PROXY, HubApi, hub_ports, hub_prefix_lock, needs_hub, stop_hub, write_lab

FAKES = Path(__file__).parent / "fakes"
pytestmark = needs_hub

PREFIX, UID_BASE = "wodts", 54000
TOKEN = "wodsync-systemd-token-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-hubsd")


def _cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE, ("wodtsgrp",))
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def systemd_hub(tmp_path_factory):
    """One local host whose hub runs as a systemd unit, under the fake `systemctl` of
    tests/fakes (it logs its calls in `systemd`), 50 seats."""
    _cleanup()
    tmp = tmp_path_factory.mktemp("hubsd")
    systemd = tmp / "systemd"
    (systemd / "units").mkdir(parents=True)
    ports = hub_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 1\n    last: 50\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n")
    write_lab(tmp / "repo", tmp, pool, ports,
              f"  service: systemd\n  unit_dir: {systemd}/units\n  proxy: {PROXY}\n")
    env = dict(os.environ, WODT_HUB_TOKEN=TOKEN, FAKE_SYSTEMD_DIR=str(systemd),
               PATH=f"{FAKES}:{os.environ['PATH']}")
    yield {"root": tmp / "repo", "systemd": systemd, "env": env,
           "api": HubApi(ports["hub_port"], TOKEN)}
    pid = systemd / "jupyterhub.service.pid"
    if pid.exists():
        subprocess.run(["kill", pid.read_text()], check=False)
    stop_hub(tmp / "hubdata", range(UID_BASE, UID_BASE + 60))  # seats 1-58
    _cleanup()


def wodsync(systemd_hub, *args: str) -> subprocess.CompletedProcess[str]:
    """`apply` may install into the shared hub venv: hubs.hub_prefix_lock() says why."""
    if args[0] != "apply":
        return run_wodsync(*args, "--root", systemd_hub["root"], env=systemd_hub["env"])
    with hub_prefix_lock():
        return run_wodsync(*args, "--root", systemd_hub["root"], env=systemd_hub["env"])


def calls(systemd_hub) -> list[str]:
    log = systemd_hub["systemd"] / "calls.log"
    return [c for c in log.read_text().splitlines() if not c.startswith("show")] \
        if log.exists() else []


def test_the_unit_is_installed_reloaded_and_started(systemd_hub):
    applied = wodsync(systemd_hub, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert calls(systemd_hub) == ["daemon-reload", "enable --quiet jupyterhub.service",
                          "restart jupyterhub.service"]
    unit = (systemd_hub["systemd"] / "units/jupyterhub.service").read_text()
    assert "KillMode=process" in unit and "/bin/jupyterhub -f " in unit
    assert {f"{PREFIX}{n}" for n in range(1, 51)} <= set(systemd_hub["api"].users())
    assert wodsync(systemd_hub, "plan").returncode == 0


def test_the_installed_unit_passes_systemd_analyze_verify(systemd_hub):
    """The fake `systemctl` loads any unit; on a host, systemd's own parser would. Its checker,
    `systemd-analyze verify`, runs without systemd as PID 1: it parses the unit as installed,
    loads its dependencies (network-online.target, multi-user.target from this machine's units)
    and checks that ExecStart is executable (the hub venv the apply made). Every directive of
    the unit verifies offline. A misspelled key or value (`KillMode=procss`) is only a warning
    there, "ignoring", with exit status 0: so any output at all fails the test as well."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: Debian's systemd package has it (./bootstrap test)"
    unit = systemd_hub["systemd"] / "units/jupyterhub.service"
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


def test_no_change_no_systemctl_a_config_change_one_restart(systemd_hub):
    before = len(calls(systemd_hub))
    assert wodsync(systemd_hub, "apply", "--yes").returncode == 0
    assert len(calls(systemd_hub)) == before
    host = systemd_hub["root"] / "hosts/lab.yaml"
    host.write_text(host.read_text() + "  admins: [root]\n")
    applied = wodsync(systemd_hub, "apply", "--yes")
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert calls(systemd_hub)[before:] == ["enable --quiet jupyterhub.service",
                                   "restart jupyterhub.service"]
    assert "root" in systemd_hub["api"].users()


def test_a_changed_unit_is_reloaded_before_the_restart(systemd_hub):
    before = len(calls(systemd_hub))
    template = systemd_hub["root"] / "templates/hub/jupyterhub.service.j2"
    template.write_text(template.read_text().replace("RestartSec=5", "RestartSec=7"))
    plan = json.loads(wodsync(systemd_hub, "plan", "--json").stdout)[0]["plan"]["changes"]
    assert {a["address"] for a in plan} == {
        f"file:{systemd_hub['systemd']}/units/jupyterhub.service", "service:jupyterhub"}
    assert wodsync(systemd_hub, "apply", "--yes").returncode == 0
    assert calls(systemd_hub)[before:] == ["daemon-reload", "enable --quiet jupyterhub.service",
                                   "restart jupyterhub.service"]
    assert "RestartSec=7" in (systemd_hub["systemd"] / "loaded/jupyterhub.service").read_text()
    assert wodsync(systemd_hub, "plan").returncode == 0


def test_a_hub_stopped_under_systemd_converges_in_one_apply(systemd_hub):
    """`systemctl stop` behind wodsync's back and a group change meanwhile: one apply, exit 0."""
    subprocess.run(["systemctl", "stop", "jupyterhub.service"], env=systemd_hub["env"], check=True)
    students = systemd_hub["root"] / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 50", "last: 55")
                        + "    group: wodtsgrp\n")
    applied = wodsync(systemd_hub, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert calls(systemd_hub)[-1] == "restart jupyterhub.service"
    assert len(systemd_hub["api"].groups()["wodtsgrp"]) == 55
    assert wodsync(systemd_hub, "plan").returncode == 0


def test_a_preview_from_the_hubs_exported_facts_plans_as_the_live_plan(systemd_hub, tmp_path,
                                                                       monkeypatch):
    """Facts observed from this real hub through the agent, stored as the daemon stores them
    and exported by `wodsync facts export`: `plan --facts` plans what the live plan does,
    with every hub kind changing — three more seats (hub users to create, the pool's hub group
    to grow), a hub user deleted behind wodsync's back, and a changed unit (the service
    restarts). Hand-written facts (test_plan_hub.py) cannot show that what the agent really
    reports survives the export. The one documented difference: the hub's configuration
    embeds its token, so the preview says it does not compare it (a note of its own)."""
    assert systemd_hub["api"].call("DELETE", f"/users/{PREFIX}3").status_code == 204
    students = systemd_hub["root"] / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 55", "last: 58"))
    unit = systemd_hub["root"] / "templates/hub/jupyterhub.service.j2"
    unit.write_text(unit.read_text().replace("RestartSec=7", "RestartSec=9"))

    for name, value in systemd_hub["env"].items():  # the agent runs here, under the fake systemctl
        monkeypatch.setenv(name, value)
    catalog, found = validate(systemd_hub["root"])
    assert not [d for d in found if d.is_error], found
    observed = host_job(desired_state(catalog, "lab", Secrets(env=systemd_hub["env"])), apply=False)
    assert observed.error is None and observed.facts is not None, observed.error
    state = tmp_path / "daemon"
    with open_store(state_dir=state) as store:
        store.status.put_facts("lab", {"facts": observed.facts,
                                       "digests": observed.plan.digests},
                               revision="0" * 40)
    exported = run_wodsync("facts", "export", tmp_path / "facts", "--state", state,
                           env=systemd_hub["env"])
    assert exported.returncode == 0, exported.stdout + exported.stderr

    preview = _plan_of(wodsync(systemd_hub, "plan", "--json", "--facts", str(tmp_path / "facts")))
    live = _plan_of(wodsync(systemd_hub, "plan", "--json"))
    for key in ("changes", "summary", "errors", "refused", "digests"):
        assert preview[key] == live[key], (key, preview[key], live[key])
    config = f"{systemd_hub['root'].parent}/hubconf/jupyterhub_config.py"
    assert [n for n in preview["notes"] if n not in live["notes"]] == [
        f"{config} embeds secrets: compared with placeholders, so content is not compared "
        "here, nor the hub's restart fingerprint; a change to a template shows in "
        "`wodsync review`"]
    hub = {(c["action"], c["address"]) for c in live["changes"]
           if c["address"].split(":")[0] in ("service", "hub_user", "hub_group")}
    assert hub == {("update", "service:jupyterhub"), ("create", f"hub_user:{PREFIX}3"),
                   *{("create", f"hub_user:{PREFIX}{n}") for n in (56, 57, 58)},
                   ("update", "hub_group:wodtsgrp")}


def _plan_of(done: subprocess.CompletedProcess[str]) -> dict:
    """The one host's plan of `wodsync plan --json` (exit 2: changes are pending)."""
    assert done.returncode in (0, 2), done.stdout[-2000:] + done.stderr[-2000:]
    (only,) = json.loads(done.stdout)
    return only["plan"]
