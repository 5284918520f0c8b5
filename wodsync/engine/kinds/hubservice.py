"""service: the managed JupyterHub process, under systemd or started by wodsync itself.

The hub is restarted only when the fingerprint of what it runs (its configuration, its unit,
the JupyterHub and proxy versions) differs from the one it was started with, which wodsync keeps
beside the hub's data (neither systemd nor the hub knows it). The configuration turns
`cleanup_servers` and `cleanup_proxy` off, and systemd's unit uses `KillMode=process`, so a
restart ends the hub process only: students' servers keep running and the new hub adopts them.
The proxy keeps routing while the hub is down; the new hub then replaces it (JupyterHub 6 stops
the proxy of its pid file and starts another). A hub that is not running is started (self-heal).

Students share the host with the hub's ports, and whoever listens on one while its owner is
down gets that owner's traffic: the hub's port (the proxy sends it `/`, the login forms with
Linux passwords), the proxy's API port (the hub sends it the proxy's token) and the public port
(browsers). All three are below 1024 by default, where only root may listen, even while the hub
or the proxy is down — simpler and sturdier than the alternatives for JupyterHub 6.1 with
configurable-http-proxy 4.6: a Unix socket for the hub needs a proxy that routes to sockets
(4.6 cannot), and an `iptables` owner rule needs a firewall wodsync would share with the host's
own, and closes the API port only (a rule cannot stop anyone from listening).
The proxy's token is new at every proxy start and never stored (the hub's configuration makes
it), so a token seen once is worthless after the next restart. The kernel decides what
"privileged" means (`net.ipv4.ip_unprivileged_port_start`, 0 in some containers): it is
observed, and a hub port a student could take is a plan note.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wodsync.agent import hubapi
from wodsync.agent.run import BASE_PATH
from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "service"
NAME = "jupyterhub"
UNIT = "jupyterhub.service"
STATE_FILE = "wodsync-hub.json"
READY_SECONDS = 90
PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


@dataclass(frozen=True)
class HubService:
    supervisor: str              # systemd | process
    api: str
    prefix: str
    data_dir: str
    config_path: str
    fingerprint: str
    ports: tuple[tuple[str, int], ...] = ()    # (field, port) of the hub's three ports


@dataclass(frozen=True)
class ServiceChange:
    start: str                   # start | restart


DATA = ServiceChange


def desired(ctx: DesiredContext) -> HubService | None:
    from wodsync.engine import hubwant

    hub = ctx.host.hub
    if hub is None or not hub.manage:
        return None
    pip, _ = hubwant.requirements(ctx.catalog, ctx.host)
    files = [f.data for f in ctx.hub_files.values()]
    return HubService(hub.service, hub.api, hub.prefix, hub.data_dir,
                      f"{hub.config_dir}/jupyterhub_config.py",
                      hubwant.fingerprint(files, pip.get("jupyterhub", ""), hubwant.npm(hub)),
                      tuple(hub.ports()))


def probe(want: HubService) -> dict[str, Any]:
    return {"supervisor": want.supervisor, "data_dir": want.data_dir}


# ---- host side --------------------------------------------------------------------------------

def _systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def _systemd_pid():
    done = _systemctl("show", "--property", "MainPID", "--value", UNIT)
    try:
        return int(done.stdout.strip()) or None
    except ValueError:
        return None


def _cmdline_has(pid, needle):
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return needle in f.read()
    except (OSError, TypeError, ValueError):
        return False


def _is_hub(pid):
    return _cmdline_has(pid, b"jupyterhub")


def _is_proxy(pid):
    """The proxy's pid file may be stale (a reboot): its pid may now be any process's."""
    return _cmdline_has(pid, b"configurable-http-proxy")


def _state(probe):
    """Running or not, and the fingerprint the running hub was started with."""
    try:
        with open(os.path.join(probe["data_dir"], STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {"pid": None, "fingerprint": None}
    if probe["supervisor"] == "systemd":
        state["pid"] = _systemd_pid()
        state["running"] = bool(state["pid"])
    else:
        state["running"] = _is_hub(state.get("pid"))
    if not state["running"]:
        state["fingerprint"] = None
    return state


def _unprivileged_port_start():
    try:
        with open("/proc/sys/" + PORT_SYSCTL.replace(".", "/"), encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    state = _state(probe)
    state["unprivileged_port_start"] = _unprivileged_port_start()
    return state


def _port_start(plan: PlanContext) -> int | None:
    """The kernel's limit as it will be once this plan's sysctl values are written, else as
    observed; None when unknown (an older agent, or no such sysctl)."""
    for value in ((plan.want.get("sysctl") or {}).get(PORT_SYSCTL),
                  plan.facts[KIND].get("unprivileged_port_start")):
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def _check_ports(plan: PlanContext, want: HubService) -> None:
    """A note per hub port a student could listen on while the hub or its proxy is down."""
    start = _port_start(plan)
    if start is None:
        return
    for name, port in want.ports:
        if port < start:
            continue
        fixes = ["use a port below 1024"] if port >= 1024 else []
        if start < 1024:
            fixes.append(f"set `{PORT_SYSCTL}: 1024` in the host's `sysctl`")
        plan.notes.append(
            f"hub.{name} {port} is open to students ({PORT_SYSCTL} is {start}): one listening "
            "there while the hub or its proxy restarts receives their traffic (login forms, "
            f"the proxy's token); {' and '.join(fixes)}")


def diff(plan: PlanContext) -> None:
    want: HubService = plan.want[KIND]
    state = plan.facts[KIND]
    _check_ports(plan, want)
    if not state.get("running"):
        plan.add(Action.CREATE, KIND, NAME, "not running", ServiceChange("start"))
    elif state.get("fingerprint") != want.fingerprint:
        plan.add(Action.UPDATE, KIND, NAME, "configuration or version changed: restart "
                 "(student servers keep running)", ServiceChange("restart"))
    else:
        plan.noop(KIND, NAME, f"is running (pid {state.get('pid')}) with this configuration")


def batch(want: HubService, changes: list[Any]) -> dict[str, Any]:
    return {"supervisor": want.supervisor, "api": want.api, "prefix": want.prefix,
            "data_dir": want.data_dir, "config_path": want.config_path,
            "fingerprint": want.fingerprint}


def _env(prefix):
    node_bin = os.path.join(prefix, "node", "node_modules", ".bin")
    return {"PATH": f"{prefix}/bin:{node_bin}:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root"}


def _terminate(pid):
    """SIGTERM the hub process only: its servers and the proxy keep running."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _is_hub(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_hub(pid):
        os.kill(pid, signal.SIGKILL)


def _record(part, pid):
    with open(os.path.join(part["data_dir"], STATE_FILE), "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "fingerprint": part["fingerprint"]}, f)


def _start_process(part):
    logfile = os.path.join(part["data_dir"], "jupyterhub.log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([os.path.join(part["prefix"], "bin", "jupyterhub"), "-f",
                                 part["config_path"]], cwd=part["data_dir"],
                                env=_env(part["prefix"]), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _record(part, proc.pid)

    def died():
        if proc.poll() is None:
            return None
        with open(logfile, encoding="utf-8", errors="replace") as f:
            return f"the hub exited {proc.returncode} at start:\n{f.read()[-1500:]}"

    return proc.pid, died


def _start_unit(part):
    """systemd: enable, then restart (KillMode=process in the unit: the hub process only)."""
    for args in (("enable", "--quiet", UNIT), ("restart", UNIT)):
        done = _systemctl(*args)
        if done.returncode != 0:
            raise RuntimeError(f"systemctl {' '.join(args)} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
    pid = _systemd_pid()
    _record(part, pid)
    return pid, lambda: None if _systemd_pid() else \
        f"{UNIT} is not running: see `journalctl -u {UNIT}`"


def _wait_ready(api, died):
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        reason = died()
        if reason:
            raise RuntimeError(reason)
        if hubapi.answers(api):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the hub did not answer on {api} within {READY_SECONDS} s")


def start(part, host):
    state = _state(part)
    os.makedirs(part["data_dir"], mode=0o700, exist_ok=True)
    if part["supervisor"] == "systemd":
        pid, died = _start_unit(part)
    else:
        if state["running"]:
            _terminate(state["pid"])
        pid, died = _start_process(part)
    _wait_ready(part["api"], died)
    host.say(("restarted" if state["running"] else "started") + f" the hub (pid {pid})")


def stop_hub(payload, host):
    """Operation `stop_hub`: the students' servers (through the API), the hub, its proxy."""
    stopped = []
    state = _state(payload)
    if state["running"] and payload.get("token"):
        for user in hubapi.paged(payload["api"], payload["token"], "/users"):
            if user.get("servers") or user.get("server"):
                hubapi.stop_server(payload["api"], payload["token"], user["name"])
                stopped.append(user["name"])
    if state["running"] and payload["supervisor"] == "systemd":
        _systemctl("stop", UNIT)
    elif state["running"]:
        _terminate(state["pid"])
    proxy = os.path.join(payload["data_dir"], "jupyterhub-proxy.pid")
    try:
        with open(proxy, encoding="utf-8") as f:
            pid = int(f.read().strip())
        if _is_proxy(pid):
            os.kill(pid, signal.SIGTERM)
        os.unlink(proxy)
    except (OSError, ValueError):
        pass
    return {"hub_was_running": state["running"], "servers_stopped": stopped}


PHASES = ((70, "start", start),)
