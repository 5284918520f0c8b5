"""service, host half: the managed JupyterHub process — whether it runs and with which
fingerprint, starting or restarting it, and the operation `stop_hub`.

The fingerprint a hub was started with is kept beside its data (neither systemd nor the hub
knows it); the controller half (`engine.kinds.service`) compares it with the catalog's and
explains why a restart keeps the students' servers. A restart ends the hub process only: its
servers and the proxy keep running and the new hub adopts them. The kernel's
`net.ipv4.ip_unprivileged_port_start` is observed, so the controller can say when a hub port is
open to students.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypedDict, cast

from wodsync.agent import hubapi, hubtls
from wodsync.agent.factspec import BOOL, DIGEST, INT, TEXT, ListOf, Nullable, Record
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import HostPayload
from wodsync.agent.run import BASE_PATH

KIND = "service"
UNIT = "jupyterhub.service"
STATE_FILE = "wodsync-hub.json"
READY_SECONDS = 90
PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


class _ProbeBase(TypedDict):
    supervisor: str              # systemd | process
    data_dir: str


class Probe(_ProbeBase, total=False):
    tls: hubtls.TlsProbe | None  # the proxy's certificate and key (None: http)


class _Running(TypedDict):
    running: bool


class Facts(_Running, total=False):
    """Whether the hub runs, its pid and the fingerprint it was started with (None when it is
    not running), and the kernel's first unprivileged port (None when unknown)."""

    pid: int | None
    fingerprint: str | None
    unprivileged_port_start: int | None
    tls: hubtls.TlsFacts | None      # the certificate and key as they are on disk now
    tls_started: str | None          # their digest when the running hub (and proxy) started


FACTS = Record({"running": BOOL},
               {"pid": Nullable(INT), "fingerprint": Nullable(DIGEST),
                "unprivileged_port_start": Nullable(INT),
                "tls": Nullable(Record({"digest": Nullable(DIGEST), "problems": ListOf(TEXT)})),
                "tls_started": Nullable(DIGEST)})


class Part(TypedDict):
    supervisor: str
    api: str
    prefix: str
    data_dir: str
    config_path: str
    fingerprint: str
    tls: hubtls.TlsProbe | None


class StopHubRequest(HostPayload):
    """Operation `stop_hub`: the hub to stop, and the token to stop its servers (None: only
    the hub and its proxy are stopped)."""

    supervisor: str
    data_dir: str
    api: str
    token: str | None


class StopHubAnswer(TypedDict):
    hub_was_running: bool
    servers_stopped: list[str]


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def _systemd_pid() -> int | None:
    done = _systemctl("show", "--property", "MainPID", "--value", UNIT)
    try:
        return int(done.stdout.strip()) or None
    except ValueError:
        return None


def _cmdline_has(pid: int | None, needle: bytes) -> bool:
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:  # type: ignore[arg-type]
            return needle in f.read()
    except (OSError, TypeError, ValueError):
        return False


def _is_hub(pid: int | None) -> bool:
    return _cmdline_has(pid, b"jupyterhub")


def _is_proxy(pid: int | None) -> bool:
    """The proxy's pid file may be stale (a reboot): its pid may now be any process's."""
    return _cmdline_has(pid, b"configurable-http-proxy")


def _state(probe: Probe) -> Facts:
    """Running or not, and the fingerprint the running hub was started with."""
    recorded: dict[str, Any]
    try:
        with open(os.path.join(probe["data_dir"], STATE_FILE), encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = {"pid": None, "fingerprint": None, "tls": None}
    if probe["supervisor"] == "systemd":
        recorded["pid"] = _systemd_pid()
        running = bool(recorded["pid"])
    else:
        running = _is_hub(recorded.get("pid"))
    state = cast(Facts, {"pid": recorded.get("pid"), "fingerprint": recorded.get("fingerprint"),
                         "tls_started": recorded.get("tls"), "running": running})
    if not running:
        state["fingerprint"] = state["tls_started"] = None
    return state


def _unprivileged_port_start() -> int | None:
    try:
        with open("/proc/sys/" + PORT_SYSCTL.replace(".", "/"), encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def observe(probe: Probe, host: HostSide) -> Facts:
    facts = _state(probe)
    facts["unprivileged_port_start"] = _unprivileged_port_start()
    tls = probe.get("tls")
    facts["tls"] = hubtls.check(tls) if tls else None
    return facts


def _env(prefix: str) -> dict[str, str]:
    node_bin = os.path.join(prefix, "node", "node_modules", ".bin")
    return {"PATH": f"{prefix}/bin:{node_bin}:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root"}


def _terminate(pid: int) -> None:
    """SIGTERM the hub process only: its servers and the proxy keep running."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _is_hub(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_hub(pid):
        os.kill(pid, signal.SIGKILL)


def _record(part: Part, pid: int | None, tls: str | None) -> None:
    """The fingerprint the hub starts with, and the digest of the certificate its new proxy
    reads (read before the start: a renewal racing it is seen at the next plan)."""
    with open(os.path.join(part["data_dir"], STATE_FILE), "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "fingerprint": part["fingerprint"], "tls": tls}, f)


def _tls_digest(part: Part) -> str | None:
    tls = part.get("tls")
    return hubtls.check(tls)["digest"] if tls else None


Died = Callable[[], "str | None"]


def _start_process(part: Part) -> tuple[int, Died]:
    tls = _tls_digest(part)
    logfile = os.path.join(part["data_dir"], "jupyterhub.log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([os.path.join(part["prefix"], "bin", "jupyterhub"), "-f",
                                 part["config_path"]], cwd=part["data_dir"],
                                env=_env(part["prefix"]), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _record(part, proc.pid, tls)

    def died() -> str | None:
        if proc.poll() is None:
            return None
        with open(logfile, encoding="utf-8", errors="replace") as f:
            return f"the hub exited {proc.returncode} at start:\n{f.read()[-1500:]}"

    return proc.pid, died


def _start_unit(part: Part) -> tuple[int | None, Died]:
    """systemd: enable, then restart (KillMode=process in the unit: the hub process only)."""
    tls = _tls_digest(part)
    for args in (("enable", "--quiet", UNIT), ("restart", UNIT)):
        done = _systemctl(*args)
        if done.returncode != 0:
            raise RuntimeError(f"systemctl {' '.join(args)} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
    pid = _systemd_pid()
    _record(part, pid, tls)
    return pid, lambda: None if _systemd_pid() else \
        f"{UNIT} is not running: see `journalctl -u {UNIT}`"


def _wait_ready(api: str, died: Died) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        reason = died()
        if reason:
            raise RuntimeError(reason)
        if hubapi.answers(api):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the hub did not answer on {api} within {READY_SECONDS} s")


def start(part: Part, host: HostSide) -> None:
    state = _state({"supervisor": part["supervisor"], "data_dir": part["data_dir"]})
    os.makedirs(part["data_dir"], mode=0o700, exist_ok=True)
    host.progress(("restarting" if state["running"] else "starting") + " the hub, waiting "
                  "until it answers")
    pid: int | None
    if part["supervisor"] == "systemd":
        pid, died = _start_unit(part)
    else:
        old = state.get("pid")
        if state["running"] and old:
            _terminate(old)
        pid, died = _start_process(part)
    _wait_ready(part["api"], died)
    host.say(("restarted" if state["running"] else "started") + f" the hub (pid {pid})")


def stop_hub(payload: StopHubRequest, host: HostSide | None) -> StopHubAnswer:
    """Operation `stop_hub`: the students' servers (through the API), the hub, its proxy."""
    stopped = []
    state = _state({"supervisor": payload["supervisor"], "data_dir": payload["data_dir"]})
    token = payload.get("token")
    if state["running"] and token:
        for user in hubapi.paged(payload["api"], token, "/users"):
            if user.get("servers") or user.get("server"):
                hubapi.stop_server(payload["api"], token, user["name"])
                stopped.append(user["name"])
    pid = state.get("pid")
    if state["running"] and payload["supervisor"] == "systemd":
        _systemctl("stop", UNIT)
    elif state["running"] and pid:
        _terminate(pid)
    proxy = os.path.join(payload["data_dir"], "jupyterhub-proxy.pid")
    try:
        with open(proxy, encoding="utf-8") as f:
            proxy_pid = int(f.read().strip())
        if _is_proxy(proxy_pid):
            os.kill(proxy_pid, signal.SIGTERM)
        os.unlink(proxy)
    except (OSError, ValueError):
        pass
    return {"hub_was_running": state["running"], "servers_stopped": stopped}


PHASES = ((70, "start", start),)
