"""The host side of the hub: shipped with agent.py (into the same namespace), standard library only.

The hub REST API usually listens on loopback only, so it is called from here, inside the same
observe/apply round trips as everything else; the service token arrives in the payload on stdin
and never appears on a command line. Packages are observed from the environment's files
(dist-info folders, kernelspec folders, package.json, dpkg), which is what `pip list`,
`jupyter kernelspec list` and `npm ls` read, without starting an interpreter for each.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # on the host, agent.py is loaded into the same namespace
    from wodsync.engine.agent import _run, _save_inventory

PAGINATION = "application/jupyterhub-pagination+json"
UNIT = "jupyterhub.service"
SERVICE_STATE = "wodsync-hub.json"
KERNEL_DIRS = ("share/jupyter/kernels",)
SYSTEM_KERNEL_DIRS = ("/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HUB_READY_SECONDS = 90
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HubApiError(Exception):
    """The hub answered with an HTTP error (as opposed to not answering at all)."""


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _request(h, method, path, body=None, accept="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(h["api"].rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": "token " + h["token"],
                                          "Content-Type": "application/json",
                                          "Accept": accept})
    try:
        with _OPENER.open(req, timeout=60) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise HubApiError(f"{method} {path}: HTTP {exc.code} {detail}") from None
    return json.loads(raw) if raw else None


def _paged(h, path):
    """Every item of a listing: without the pagination media type the hub stops at 200."""
    items, offset = [], 0
    while True:
        page = _request(h, "GET", f"{path}?offset={offset}&limit=10000", accept=PAGINATION)
        items += page["items"]
        following = (page.get("_pagination") or {}).get("next")
        if not following:
            return items
        offset = following["offset"]


def _api_facts(h):
    try:
        users = [u["name"] for u in _paged(h, "/users")]
        groups = {g["name"]: sorted(g.get("users", [])) for g in _paged(h, "/groups")}
    except HubApiError as exc:
        return {"ok": False, "down": False, "error": str(exc)}
    except (OSError, ValueError) as exc:
        return {"ok": False, "down": True, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "users": users, "groups": groups}


def _site_packages(prefix):
    return glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages"))


def _pip_facts(prefix):
    if not os.path.exists(os.path.join(prefix, "bin", "python")):
        return None
    found = {}
    for site in _site_packages(prefix):
        for entry in os.listdir(site):
            if entry.endswith(".dist-info"):
                name, _, version = entry[:-len(".dist-info")].rpartition("-")
                found[_canonical(name)] = version
    return found


def _apt_facts(names):
    if not names:
        return {}
    bare = [n.split("=", 1)[0] for n in names]
    if not shutil.which("dpkg-query"):
        return dict.fromkeys(bare)
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Status}\n",
                           *bare], capture_output=True, text=True)
    found = dict.fromkeys(bare)
    for line in done.stdout.splitlines():
        package, version, status = [*line.split("\t"), "", ""][:3]
        if status.endswith(" installed"):
            found[package] = version
    return found


def _npm_facts(prefix, names):
    found = {}
    for name in names:
        try:
            with open(os.path.join(prefix, "node", "node_modules", name, "package.json"),
                      encoding="utf-8") as f:
                found[name] = json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            found[name] = None
    return found


def _kernel_facts(prefix):
    dirs = [os.path.join(prefix, d) for d in KERNEL_DIRS] + list(SYSTEM_KERNEL_DIRS)
    names = set()
    for d in dirs:
        names.update(os.path.basename(os.path.dirname(p))
                     for p in glob.glob(os.path.join(d, "*", "kernel.json")))
    return sorted(names)


def _service_state(h):
    """Running or not, and the fingerprint of what the running hub was started with (kept by
    wodsync beside the hub's data: neither systemd nor the hub knows it)."""
    try:
        with open(os.path.join(h["data_dir"], SERVICE_STATE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {"pid": None, "fingerprint": None}
    if h["supervisor"] == "systemd":
        state["pid"] = _systemd_pid()
        state["running"] = bool(state["pid"])
    else:
        state["running"] = _is_hub(state.get("pid"))
    if not state["running"]:
        state["fingerprint"] = None
    return state


def _systemctl(*args):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True)


def _systemd_pid():
    done = _systemctl("show", "--property", "MainPID", "--value", UNIT)
    try:
        return int(done.stdout.strip()) or None
    except ValueError:
        return None


def _is_hub(pid):
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return b"jupyterhub" in f.read()
    except (OSError, TypeError, ValueError):
        return False


def _closed_on_path(path):
    """The first folder on the way to `path` (symlinks resolved) that students cannot enter."""
    target = os.path.realpath(path)
    current = "/"
    for part in target.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def observe_hub(h):
    python = os.path.join(h["prefix"], "bin", "python")
    facts = {"pip": _pip_facts(h["prefix"]), "apt": _apt_facts(h["apt"]),
             "closed": _closed_on_path(python) if os.path.exists(python) else None,
             "npm": _npm_facts(h["prefix"], h["npm"]),
             "kernels": _kernel_facts(h["prefix"]) if h["kernels"] else None,
             "service": _service_state(h) if h["manage"] else None, "api": None}
    if h["token"]:
        facts["api"] = _api_facts(h)
    return facts


def _hub_env(h):
    node_bin = os.path.join(h["prefix"], "node", "node_modules", ".bin")
    return {"PATH": f"{h['prefix']}/bin:{node_bin}:{BASE_PATH}", "LANG": "C.UTF-8",
            "HOME": "/root"}


def install_packages(h, log):
    """apt, then the venv, then pip (one call), npm and kernel installers, as planned."""
    if h["apt"]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        _run(["apt-get", "install", "-y", "-qq", *h["apt"]], env=env)
        log.append(f"apt installed {len(h['apt'])} packages")
    if h["venv"]:
        os.makedirs(os.path.dirname(h["prefix"]), mode=0o755, exist_ok=True)
        _run([h["python"], "-m", "venv", h["prefix"]])
        log.append(f"created the hub environment {h['prefix']}")
    if h["pip"]:
        links = [arg for path in h["find_links"] for arg in ("--find-links", path)]
        links += ["--no-index"] if h["no_index"] else []
        _run([os.path.join(h["prefix"], "bin", "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", *links, *h["pip"]])
        log.append(f"pip installed {len(h['pip'])} packages")
    if h["npm"]:
        specs = [f"{name}@{version}" for name, version in sorted(h["npm"].items())]
        _run(["npm", "install", "--prefix", os.path.join(h["prefix"], "node"),
              "--no-audit", "--no-fund", *specs])
        log.append(f"npm installed {len(specs)} packages")
    for argv in h["kernel_install"]:
        tool = argv[0]
        if tool in ("python", "jupyter"):
            tool = os.path.join(h["prefix"], "bin", tool)
        _run([tool, *argv[1:]], env=_hub_env(h))
        log.append(f"ran kernel installer {' '.join(argv)}")


def _stop_hub(pid):
    """SIGTERM the hub process only: with cleanup_servers/cleanup_proxy off in its config,
    students' servers and the proxy keep running and the next hub adopts them."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _is_hub(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_hub(pid):
        os.kill(pid, signal.SIGKILL)


def _start_hub(h, log):
    state = _service_state(h)
    os.makedirs(h["data_dir"], mode=0o700, exist_ok=True)
    if h["supervisor"] == "systemd":
        _start_unit(h, state, log)
        return
    if state["running"]:
        _stop_hub(state["pid"])
    logfile = os.path.join(h["data_dir"], "jupyterhub.log")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([os.path.join(h["prefix"], "bin", "jupyterhub"), "-f",
                                 h["config_path"]], cwd=h["data_dir"], env=_hub_env(h),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(os.path.join(h["data_dir"], SERVICE_STATE), "w", encoding="utf-8") as f:
        json.dump({"pid": proc.pid, "fingerprint": h["fingerprint"]}, f)
    _wait_ready(h, proc, logfile)
    log.append(("restarted" if state["running"] else "started") + f" the hub (pid {proc.pid})")


def _start_unit(h, state, log):
    """systemd: enable, then restart (KillMode=process in the unit: the hub process only)."""
    for args in (("enable", "--quiet", UNIT), ("restart", UNIT)):
        done = _systemctl(*args)
        if done.returncode != 0:
            raise RuntimeError(f"systemctl {' '.join(args)} exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
    pid = _systemd_pid()
    with open(os.path.join(h["data_dir"], SERVICE_STATE), "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "fingerprint": h["fingerprint"]}, f)
    _wait_ready(h, None, None)
    log.append(("restarted" if state["running"] else "started") + f" the hub ({UNIT}, pid {pid})")


def _hub_died(proc, logfile):
    """The reason a just started hub is gone, or None while it runs."""
    if proc is None:
        if _systemd_pid():
            return None
        return f"{UNIT} is not running: see `journalctl -u {UNIT}`"
    if proc.poll() is None:
        return None
    with open(logfile, encoding="utf-8", errors="replace") as f:
        return f"the hub exited {proc.returncode} at start:\n{f.read()[-1500:]}"


def _wait_ready(h, proc, logfile):
    """Ready means the API answers 200, not that a port is open."""
    deadline = time.monotonic() + HUB_READY_SECONDS
    while time.monotonic() < deadline:
        died = _hub_died(proc, logfile)
        if died:
            raise RuntimeError(died)
        try:
            with _OPENER.open(h["api"].rstrip("/") + "/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the hub did not answer on {h['api']} within {HUB_READY_SECONDS} s")


def _quote(name):
    return urllib.parse.quote(name, safe="")


def _sync_users(h, inventory, log):
    created = h["create_users"]
    if created:
        inventory["hub_users"] = sorted(set(inventory.get("hub_users", [])) | set(created))
        _save_inventory(h["state_dir"], inventory)
        try:
            _request(h, "POST", "/users", {"usernames": created})
        except HubApiError as exc:
            if "HTTP 409" not in str(exc):  # all of them exist already: nothing to do
                raise
        log.append(f"created {len(created)} hub users")


def _stop_server(h, name):
    """Stop a user's server and wait until the hub says it stopped (a stop may be pending)."""
    try:
        _request(h, "DELETE", f"/users/{_quote(name)}/server")
    except HubApiError as exc:
        if "HTTP 400" not in str(exc) and "HTTP 404" not in str(exc):  # 400: not running
            raise
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            user = _request(h, "GET", f"/users/{_quote(name)}")
        except HubApiError:
            return
        if not user.get("server") and not user.get("pending"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the server of {name} did not stop within 60 s")


def retire_hub_users(h, inventory, log):
    """Stop the servers of hub users wodsync made and delete them — before their accounts
    go, since `userdel` refuses an account whose processes still run."""
    if not h["token"]:
        return
    mine = set(inventory.get("hub_users", []))
    gone = [u for u in h["delete_users"] if u in mine]
    for name in gone:
        _stop_server(h, name)
        try:
            _request(h, "DELETE", f"/users/{_quote(name)}")
        except HubApiError as exc:
            if "HTTP 404" not in str(exc):
                raise
    if gone:
        inventory["hub_users"] = sorted(mine - set(gone))
        log.append(f"deleted {len(gone)} hub users (servers stopped first)")


def _sync_groups(h, inventory, log):
    groups = h["groups"]
    inventory["hub_groups"] = sorted(set(inventory.get("hub_groups", []))
                                     | set(groups["create"]))
    for name, members in sorted(groups["create"].items()):
        _request(h, "POST", f"/groups/{_quote(name)}", {"users": members})
    for name, change in sorted(groups["change"].items()):
        if change["add"]:
            _request(h, "POST", f"/groups/{_quote(name)}/users", {"users": change["add"]})
        if change["remove"]:
            _request(h, "DELETE", f"/groups/{_quote(name)}/users", {"users": change["remove"]})
    mine = set(inventory["hub_groups"])
    for name in groups["delete"]:
        if name in mine:
            _request(h, "DELETE", f"/groups/{_quote(name)}")
    inventory["hub_groups"] = sorted(mine - set(groups["delete"]))
    count = len(groups["create"]) + len(groups["change"]) + len(groups["delete"])
    if count:
        log.append(f"synced {count} hub groups")


def stop_hub(h):
    """Stop what the managed hub runs: students' servers (through the API), the hub, its proxy."""
    stopped = []
    state = _service_state(h)
    if state["running"] and h["token"]:
        for user in _paged(h, "/users"):
            if user.get("servers") or user.get("server"):
                _stop_server(h, user["name"])
                stopped.append(user["name"])
    if state["running"] and h["supervisor"] == "systemd":
        _systemctl("stop", UNIT)
    elif state["running"]:
        _stop_hub(state["pid"])
    proxy = os.path.join(h["data_dir"], "jupyterhub-proxy.pid")
    try:
        with open(proxy, encoding="utf-8") as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGTERM)
        os.unlink(proxy)
    except (OSError, ValueError):
        pass
    return {"hub_was_running": state["running"], "servers_stopped": stopped}


def apply_hub(h, inventory, log):
    """After accounts and files: (re)start the hub if planned, then users and groups."""
    if h["service"]:
        _start_hub(h, log)
    if h["token"]:
        _sync_users(h, inventory, log)
        _sync_groups(h, inventory, log)
