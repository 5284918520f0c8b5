"""Idle servers stopped for the right reasons, with a real JupyterHub: two seats' servers that
the hub has not seen active since they started, both quiet on the CPU; one runs a kernel busy
in a silent `time.sleep` (no output, nothing the hub would call activity) and survives the idle
timeout; the other is stopped — its session stays.

Accounts `wodtn21`-`wodtn24` (uids 53521-53524, this session's guard block; `test_guard.py`
says why it is not 60501-60550), homes under /home/wodsync-test-guard-idle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from wodsync.agent.run import kill_uid
from wodsync.store import Participant, SessionState

from helpers import remove_test_accounts, until, wodsync
from hubs import (
    HUB_PREFIX,
    PROXY,
    HubApi,
    hub_ports,
    hub_prefix_lock,
    needs_hub,
    stop_hub,
    write_lab,
)

pytestmark = needs_hub

PREFIX, UID_BASE = "wodtn", 53500
SEATS = range(UID_BASE + 21, UID_BASE + 25)
TOKEN = "wodsync-guard-idle-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-guard-idle")
IDLE = 3.0  # seconds: the catalog's idle timeout


def _cleanup() -> None:
    for uid in SEATS:  # userdel refuses a user whose processes still run
        kill_uid(uid)
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def hub_lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    from pwd import getpwall

    taken = [e.pw_name for e in getpwall() if e.pw_uid in SEATS and
             not e.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"the uids of this test are taken by {taken}")
    _cleanup()
    HOMES.mkdir(mode=0o755, exist_ok=True)
    tmp = tmp_path_factory.mktemp("guard-idle")
    root = tmp / "repo"
    ports = hub_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 21\n    last: 24\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n")
    (root / "catalog/workshops/WKSHP-Lab/workshop.yaml").write_text(
        "name: Lab\ncapacity: 4\nseats: {first: 21, last: 24}\nlocation: lab\nduration: 4\n")
    (root / "catalog/guard.yaml").write_text(
        f"interval: 5\nidle: {{timeout: {IDLE}, cpu_percent: 30}}\n")
    with hub_prefix_lock():
        applied = wodsync("apply", "--yes", "--root", root,
                          env=dict(os.environ, WODT_HUB_TOKEN=TOKEN))
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    from wodsync.controller import open_controller
    from wodsync.guard.actions import Sentinel
    from wodsync.secrets import Secrets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WODT_HUB_TOKEN", TOKEN)
        ctl = open_controller(root, tmp / "ctl", None, Secrets())
        try:
            yield {"ctl": ctl, "sentinel": Sentinel(ctl.sessions), "tmp": tmp, "root": root,
                   "api": HubApi(ports["hub_port"], TOKEN),
                   "base": f"http://127.0.0.1:{ports['port']}"}
        finally:
            ctl.close()
            stop_hub(tmp / "hubdata", SEATS)
            _cleanup()


def _server(api: HubApi, user: str) -> dict[str, Any] | None:
    model = api.call("GET", f"/users/{user}").json()
    return (model.get("servers") or {}).get("")


def _busy_kernel(lab: dict[str, Any], user: str) -> str:
    """A kernel on the seat's server, running a cell that sleeps without a word: busy, silent.
    Started through the server's API (the service token may: `access:servers`), the cell sent
    on the kernel's own channels by jupyter_client from the hub environment."""
    headers = {"Authorization": f"token {TOKEN}"}
    url = f"{lab['base']}/user/{user}/api/kernels"
    started = requests.post(url, headers=headers, json={"name": "python3"}, timeout=60)
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    connection = HOMES / user / f".local/share/jupyter/runtime/kernel-{kernel}.json"
    until(connection.exists, f"the connection file of {user}'s kernel", timeout=60)
    script = ("import sys, jupyter_client\n"
              "c = jupyter_client.BlockingKernelClient(connection_file=sys.argv[1])\n"
              "c.load_connection_file(); c.start_channels(); c.wait_for_ready(timeout=60)\n"
              "c.execute('import time; time.sleep(600)')\n"
              "while c.get_iopub_msg(timeout=30)['content'].get('execution_state') != 'busy':"
              " pass\n")
    subprocess.run([f"{HUB_PREFIX}/bin/python", "-c", script, str(connection)], check=True,
                   timeout=120)

    def state() -> str:
        found = requests.get(url, headers=headers, timeout=30).json()
        return next(k["execution_state"] for k in found if k["id"] == kernel)

    until(lambda: state() == "busy", f"the kernel of {user} busy", timeout=30)
    return kernel


def test_a_busy_silent_kernel_keeps_its_server_and_an_idle_server_is_stopped(hub_lab):
    ctl, api = hub_lab["ctl"], hub_lab["api"]
    busy = ctl.sessions.create("WKSHP-Lab", Participant("B", "busy@example.org")).session
    idle = ctl.sessions.create("WKSHP-Lab", Participant("I", "idle@example.org")).session
    for s in (busy, idle):
        until(lambda s=s: (_server(api, s.username) or {}).get("ready"),
              f"the server of {s.username} ready", timeout=120)
    _busy_kernel(hub_lab, busy.username)
    shutil.rmtree(hub_lab["tmp"] / "state/guard", ignore_errors=True)

    stopped: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not stopped and time.monotonic() < deadline:
        report = hub_lab["sentinel"].run("lab")
        assert report.errors == [], report.errors
        stopped += [{"seat": e.username, "outcome": e.outcome, "rule": e.rule,
                     "session": e.session_id, **e.evidence} for e in report.events]
        time.sleep(1.0)
    assert [(e["rule"], e["seat"], e["outcome"], e["session"]) for e in stopped] == \
        [("idle", idle.username, "stopped", idle.id)]
    assert float(stopped[0]["age"]) >= IDLE, "the hub saw no activity for the idle timeout"
    until(lambda: _server(api, idle.username) is None, "the idle server stopped", timeout=60)
    assert (_server(api, busy.username) or {}).get("ready"), "the busy kernel's server runs on"
    assert ctl.store.sessions.get(idle.id).state is SessionState.ACTIVE, "the session stays"
    time.sleep(IDLE + 1)
    assert hub_lab["sentinel"].run("lab").events == [], "past the timeout again: still busy"
    assert (_server(api, busy.username) or {}).get("ready")
    assert json.loads(json.dumps(ctl.store.guard.events("lab")[0].evidence))["type"] == "idle"


def test_a_rule_whose_action_is_stop_server_stops_the_server_and_keeps_the_session(hub_lab):
    """An old kernel under `action: stop_server`: the seat's server is stopped (its kernel
    with it) through the hub, the session stays active."""
    from wodsync.controller import open_controller
    from wodsync.guard.actions import Sentinel
    from wodsync.secrets import Secrets

    api = hub_lab["api"]
    guard = hub_lab["root"] / "catalog/guard.yaml"
    guard.write_text("rules:\n  - {name: old-kernels, type: kernel_age, hours: 0.0003, "
                     "action: stop_server}\n")
    ctl = open_controller(hub_lab["root"], hub_lab["tmp"] / "ctl", None, Secrets())
    try:
        s = ctl.sessions.create("WKSHP-Lab", Participant("K", "kernel@example.org")).session
        until(lambda: (_server(api, s.username) or {}).get("ready"),
              f"the server of {s.username} ready", timeout=120)
        requests.post(f"{hub_lab['base']}/user/{s.username}/api/kernels", timeout=60,
                      headers={"Authorization": f"token {TOKEN}"}, json={"name": "python3"})
        time.sleep(1.5)  # past 0.0003 h = 1.08 s
        found = [e for e in Sentinel(ctl.sessions).run("lab").events if e.username == s.username]
        assert [(e.rule, e.action, e.outcome, e.session_id) for e in found] == \
            [("old-kernels", "stop_server", "stopped", s.id)]
        assert "ipykernel" in found[0].evidence["cmdline"]
        until(lambda: _server(api, s.username) is None, "the server stopped", timeout=60)
        assert ctl.store.sessions.get(s.id).state is SessionState.ACTIVE
    finally:
        ctl.close()
