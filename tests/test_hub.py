"""The JupyterHub side of a host against a real JupyterHub, proxy, PAM and Linux accounts.

The hub environment is created by wodsync itself (venv of /usr/bin/python3, JupyterHub from
PyPI) at a fixed world-readable prefix reused between runs; configurable-http-proxy is the one
`./bootstrap test` installs with npm. Local transport: the SSH path is the engine tests'.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ended, remove_test_accounts, until
from helpers import wodsync as run_wodsync
from hubs import (
    HUB_PREFIX,
    PROXY,
    HubApi,
    hub_ports,
    hub_prefix_lock,
    login,
    needs_hub,
    read_contents,
    start_server,
    stop_hub,
    write_lab,
)
from wheels import kernel_wheel

pytestmark = needs_hub

PREFIX, UID_BASE, SEATS, GROUP = "wodth", 52000, 200, "wodthgrp"
TOKEN = "wodsync-test-token-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-hub")


def _cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
    shutil.rmtree(HOMES, ignore_errors=True)


def wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wodsync(*args, "--root", root, env=dict(os.environ, WODT_HUB_TOKEN=TOKEN))


def plan_actions(root: Path) -> list[tuple[str, str]]:
    done = wodsync(root, "plan", "--json")
    assert done.returncode in (0, 2), done.stdout + done.stderr
    return [(a["action"], a["address"]) for a in json.loads(done.stdout)[0]["plan"]["changes"]]


@pytest.fixture(scope="module")
def hub_host(tmp_path_factory):
    """A catalog with one local host running a managed hub, 200 seats, one workshop."""
    _cleanup_accounts()
    tmp = tmp_path_factory.mktemp("hub")
    root, data = tmp / "repo", tmp / "hubdata"
    ports = hub_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n    group: {GROUP}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n"
                                      f"  find_links: [{tmp}/wheels]\n")
    kernel_wheel(tmp / "wheels", "wodtest-kernel", "1.0", "wodtest")
    with hub_prefix_lock():
        applied = wodsync(root, "apply", "--yes")
    yield {"root": root, "data": data, "api": HubApi(ports["hub_port"], TOKEN),
           "base": f"http://127.0.0.1:{ports['port']}", "first_apply": applied}
    stop_hub(data, range(UID_BASE, UID_BASE + 1000))
    with hub_prefix_lock():
        subprocess.run([f"{HUB_PREFIX}/bin/python", "-m", "pip", "uninstall", "-y", "-q",
                        "wodtest-kernel"], capture_output=True, check=False)
    shutil.rmtree(f"{HUB_PREFIX}/share/jupyter/kernels/wodtest2", ignore_errors=True)
    _cleanup_accounts()


def test_fresh_host_converges_with_hub_users_and_groups_in_one_bulk_call(hub_host):
    first = hub_host["first_apply"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "+ service:jupyterhub" in first.stdout
    assert "~ hub_user:*  (hub not running: users are checked after it starts)" in first.stdout
    assert f"created {SEATS} hub users" in first.stderr
    users = hub_host["api"].users()
    assert {f"{PREFIX}{n}" for n in range(1, SEATS + 1)} <= set(users)
    groups = hub_host["api"].groups()
    assert len(groups[GROUP]) == SEATS and groups["WKSHP-Lab"] == [], "no session yet"
    log = (hub_host["data"] / "jupyterhub.log").read_text()
    assert log.count("POST /hub/api/users ") == 1
    assert wodsync(hub_host["root"], "plan").returncode == 0


def test_hub_user_deleted_behind_wodsyncs_back_is_restored(hub_host):
    assert hub_host["api"].call("DELETE", f"/users/{PREFIX}7").status_code == 204
    # Deleting a hub user also drops it from its groups: both are drift.
    assert set(plan_actions(hub_host["root"])) == {
        ("update", f"hub_group:{GROUP}"),
        ("create", f"hub_user:{PREFIX}7")}
    assert wodsync(hub_host["root"], "apply", "--yes").returncode == 0
    assert f"{PREFIX}7" in hub_host["api"].users()
    assert f"{PREFIX}7" in hub_host["api"].groups()[GROUP]


def test_hub_user_not_created_by_wodsync_is_never_deleted(hub_host):
    subprocess.run(["useradd", "-u", str(UID_BASE + 900), "-M", f"{PREFIX}900"], check=True)
    assert hub_host["api"].call("POST", f"/users/{PREFIX}900").status_code == 201
    done = wodsync(hub_host["root"], "plan", "--json")
    result = json.loads(done.stdout)[0]["plan"]
    assert not any(a["address"] == f"hub_user:{PREFIX}900" for a in result["changes"])
    assert any("not created by wodsync" in n for n in result["notes"])
    assert wodsync(hub_host["root"], "apply", "--yes").returncode in (0, 2)
    assert f"{PREFIX}900" in hub_host["api"].users()


def _hub_pid(hub_host) -> int:
    return json.loads((hub_host["data"] / "wodsync-hub.json").read_text())["pid"]


def test_seat_logs_in_with_its_password_and_its_server_survives_a_restart(hub_host):
    user = f"{PREFIX}3"
    home = HOMES / user
    (home / "WKSHP-Lab").mkdir()
    (home / "WKSHP-Lab/1-Intro.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
    subprocess.run(["chpasswd"], input=f"{user}:Seat-Pass-3x\n", text=True, check=True)
    session, xsrf = login(hub_host["base"], user, "Seat-Pass-3x")
    start_server(session, hub_host["base"], user, xsrf)
    nb = read_contents(session, hub_host["base"], user, "WKSHP-Lab/1-Intro.ipynb")
    assert nb["type"] == "notebook" and nb["content"]["nbformat"] == 4
    with pytest.raises(AssertionError):
        login(hub_host["base"], user, "wrong-password")

    before = _hub_pid(hub_host)
    assert wodsync(hub_host["root"], "apply", "--yes").returncode == 0
    assert _hub_pid(hub_host) == before, "no configuration change must mean no restart"
    host = hub_host["root"] / "hosts/lab.yaml"
    host.write_text(host.read_text() + "  admins: [root]\n")
    assert ("update", "service:jupyterhub") in plan_actions(hub_host["root"])
    applied = wodsync(hub_host["root"], "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stderr.count("restarted the hub") == 1
    assert _hub_pid(hub_host) != before
    again = read_contents(session, hub_host["base"], user, "WKSHP-Lab/1-Intro.ipynb")
    assert again["name"] == "1-Intro.ipynb", "the student's server died with the hub"


def test_kernel_added_to_a_workshop_is_planned_and_installed(hub_host):
    """From the wheel the fixture built, with no package index at all."""
    host = hub_host["root"] / "hosts/lab.yaml"
    host.write_text(host.read_text() + "  no_index: true\n")
    ws = hub_host["root"] / "catalog/workshops/WKSHP-Lab/workshop.yaml"
    ws.write_text(ws.read_text() + "kernels:\n  - name: wodtest\n    pip: [wodtest-kernel==1.0]\n"
                  "  - name: wodtest2\n    install: [python, -m, ipykernel, install, "
                  "--sys-prefix, --name, wodtest2]\n")
    actions = plan_actions(hub_host["root"])
    assert ("create", "package:pip/wodtest-kernel") in actions
    assert ("create", "kernel:wodtest") in actions
    assert ("create", "kernel:wodtest2") in actions
    applied = wodsync(hub_host["root"], "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    listed = subprocess.run([f"{HUB_PREFIX}/bin/jupyter", "kernelspec", "list", "--json"],
                            capture_output=True, text=True, check=True)
    assert {"wodtest", "wodtest2"} <= set(json.loads(listed.stdout)["kernelspecs"])
    assert wodsync(hub_host["root"], "plan").returncode == 0


def test_shrinking_the_pool_stops_servers_then_deletes_hub_users_and_accounts(hub_host):
    user = f"{PREFIX}{SEATS}"
    subprocess.run(["chpasswd"], input=f"{user}:Seat-Pass-200\n", text=True, check=True)
    session, xsrf = login(hub_host["base"], user, "Seat-Pass-200")
    start_server(session, hub_host["base"], user, xsrf)
    students = hub_host["root"] / "catalog/students.yaml"
    students.write_text(students.read_text().replace(f"last: {SEATS}", f"last: {SEATS - 2}"))
    actions = set(plan_actions(hub_host["root"]))
    assert {("delete", f"hub_user:{PREFIX}{SEATS}"), ("delete", f"account:{PREFIX}{SEATS}"),
            ("delete", f"hub_user:{PREFIX}{SEATS - 1}")} <= actions
    applied = wodsync(hub_host["root"], "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert user not in hub_host["api"].users()
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    assert wodsync(hub_host["root"], "plan").returncode == 0


def test_apt_packages_are_observed_with_dpkg(hub_host):
    host = hub_host["root"] / "hosts/lab.yaml"
    original = host.read_text()
    host.write_text(original + "packages:\n  apt: [passwd, wodsync-no-such-package]\n")
    try:
        actions = plan_actions(hub_host["root"])
    finally:
        host.write_text(original)
    assert actions == [("create", "package:apt/wodsync-no-such-package")]


def test_a_stopped_hub_is_started_and_converged_in_one_apply(hub_host):
    """A hub (and its proxy) stopped behind wodsync's back while the catalog changed a group:
    one apply starts it, reads its users and groups once it answers, converges — exit 0."""
    state = json.loads((hub_host["data"] / "wodsync-hub.json").read_text())
    stopped = [state["pid"]]
    proxy = hub_host["data"] / "jupyterhub-proxy.pid"
    if proxy.exists():
        stopped.append(int(proxy.read_text()))
    for pid in stopped:
        os.kill(pid, 15)
    # Stopped means exited: a plan run at once would still find the hub ending.
    until(lambda: all(ended(pid) for pid in stopped), "the hub did not stop on SIGTERM")
    students = hub_host["root"] / "catalog/students.yaml"
    students.write_text(students.read_text().replace(f"last: {SEATS - 2}", f"last: {SEATS + 3}"))
    done = wodsync(hub_host["root"], "plan")
    assert "hub not running: users are checked after it starts" in done.stdout
    assert "ERROR" not in done.stdout, done.stdout
    applied = wodsync(hub_host["root"], "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert "started the hub" in applied.stderr
    assert len(hub_host["api"].groups()[GROUP]) == SEATS + 3, "the membership change is applied"
    assert {f"{PREFIX}{n}" for n in range(1, SEATS + 4)} <= set(hub_host["api"].users())
    assert wodsync(hub_host["root"], "plan").returncode == 0


def test_moving_the_hubs_ports_converges_without_an_error(hub_host):
    """The hub API does not answer on its new port until the restart the plan makes: an
    error of the first observation that the apply resolves is no failure."""
    from sshd import free_port

    host = hub_host["root"] / "hosts/lab.yaml"
    text = host.read_text()
    old = next(ln for ln in text.splitlines() if ln.strip().startswith("hub_port:"))
    new_port = free_port()
    host.write_text(text.replace(old, f"  hub_port: {new_port}"))
    applied = wodsync(hub_host["root"], "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    assert "ERROR" not in applied.stdout and "restarted the hub" in applied.stderr
    assert HubApi(new_port, TOKEN).users(), "the hub answers on its new port"
    assert wodsync(hub_host["root"], "plan").returncode == 0
