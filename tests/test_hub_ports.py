"""The hub's ports against a student on the same host, tried as the student would.

A real JupyterHub, proxy and PAM, and real seat accounts: every attack runs as a process with a
seat's uid. A seat keeps trying to listen on the hub's port while the hub restarts or is
stopped (the proxy, still running, would hand it every login form), and on the proxy's API and
public ports while the proxy is replaced (the hub would hand it the proxy's token); it calls the
proxy's API and looks for its token. Then a seat logs in and uses its own server as usual.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from wodsync.agent.kinds import service
from wodsync.catalog import validate
from wodsync.catalog.models import Hub
from wodsync.engine.desired import desired_state
from wodsync.engine.plan import plan_host
from wodsync.secrets import Placeholders

from facts import converged
from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync
from hubs import (
    PROJECT,
    PROXY,
    hub_prefix_lock,
    login,
    needs_hub,
    privileged_ports,
    read_contents,
    start_server,
    stop_hub,
    write_lab,
)

PREFIX, UID_BASE, SEATS = "wodtp", 57000, 50          # seats' uids: 57001-57050
TOKEN = "wodsync-ports-token-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-hubports")
ADMINS = "  admins: [root]\n"

# Run as a seat: keeps trying to listen on 127.0.0.1 at the given ports until its stdin closes,
# keeps whatever reaches it, and says so on stdout (one JSON line).
LISTENER = r"""
import errno, json, os, select, socket, sys
ports, held, refused, got, tries = [int(p) for p in sys.argv[1:]], {}, {}, [], 0
def attempt(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(64)
    except OSError as e:
        s.close()
        name = errno.errorcode.get(e.errno, str(e.errno))
        refused[name] = refused.get(name, 0) + 1
        return
    held[port] = s
def take(s):
    conn, _ = s.accept()
    conn.settimeout(2)
    try:
        got.append(conn.recv(65536).decode("latin-1"))
    except OSError:
        pass
    conn.close()
first = True
while True:
    for port in ports:
        if port not in held:
            tries += 1
            attempt(port)
    if first:
        print("ready", flush=True)
        first = False
    ready, _, _ = select.select([sys.stdin, *held.values()], [], [], 0.005)
    if sys.stdin in ready:
        break
    for s in ready:
        take(s)
print(json.dumps({"uid": os.getuid(), "tries": tries, "held": sorted(held),
                  "refused": refused, "got": got}))
"""

# Run as a seat: what it can learn of the proxy's token.
SNOOP = r"""
import json, os, sys, urllib.error, urllib.request
api, pid = sys.argv[1:]
out = {"uid": os.getuid()}
for name, headers in (("anonymous", {}), ("guessed", {"Authorization": "token " + "0" * 64})):
    req = urllib.request.Request(api + "/api/routes", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            out[name] = [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        out[name] = [e.code, e.read().decode()]
try:
    out["environ"] = open(f"/proc/{pid}/environ", "rb").read().decode()
except OSError as e:
    out["environ"] = type(e).__name__
print(json.dumps(out))
"""


def _cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wodsync(*args, "--root", root, env=dict(os.environ, WODT_HUB_TOKEN=TOKEN))


def applied(hub_host: dict[str, Any]) -> str:
    done = wodsync(hub_host["root"], "apply", "--yes")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stderr


def seat(n: int) -> pwd.struct_passwd:
    return pwd.getpwnam(f"{PREFIX}{n}")


def seat_popen(who: pwd.struct_passwd, code: str, *args: object,
               **kw: Any) -> subprocess.Popen[str]:
    """`/usr/bin/python3 -c code` with the seat's uid and gid only, as its own shell would."""
    return subprocess.Popen(["/usr/bin/python3", "-c", code, *map(str, args)], text=True,
                            user=who.pw_uid, group=who.pw_gid, extra_groups=[], cwd="/",
                            env={"PATH": "/usr/bin:/bin", "HOME": who.pw_dir}, **kw)


class Listener:
    """A seat's process trying to listen on ports for as long as the `with` block lasts."""

    def __init__(self, who: pwd.struct_passwd, *ports: int) -> None:
        self.proc = seat_popen(who, LISTENER, *ports, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Listener:
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=60)
        self.result = json.loads(out)


def set_password(n: int) -> str:
    """A seat's password, set anew: an apply locks seats that hold no session."""
    password = f"Ports-Seat-{n}-{os.urandom(4).hex()}"
    subprocess.run(["chpasswd"], input=f"{PREFIX}{n}:{password}\n", text=True, check=True)
    return password


def pid_of(hub_host: dict[str, Any], what: str) -> int:
    if what == "hub":
        return json.loads((hub_host["data"] / "wodsync-hub.json").read_text())["pid"]
    return int((hub_host["data"] / "jupyterhub-proxy.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def end(pid: int) -> None:
    """SIGTERM, then wait for the process to be gone (it frees its ports on the way)."""
    os.kill(pid, 15)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"process {pid} did not end"


def proxy_token(hub_host: dict[str, Any]) -> str:
    """As root: the token in the running proxy's environment."""
    env = Path(f"/proc/{pid_of(hub_host, 'proxy')}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in env
                if v.startswith(b"CONFIGPROXY_AUTH_TOKEN="))


def routes(hub_host: dict[str, Any], token: str) -> requests.Response:
    return requests.get(f"{hub_host['proxy_api']}/api/routes", timeout=30,
                        headers={"Authorization": f"token {token}"})


def toggle_restart(hub_host: dict[str, Any]) -> str:
    """A configuration change (hub admins on or off): the apply restarts the hub."""
    host = hub_host["root"] / "hosts/lab.yaml"
    text = host.read_text()
    host.write_text(text.replace(ADMINS, "") if ADMINS in text else text + ADMINS)
    return applied(hub_host)


@pytest.fixture(scope="module")
def hub_host(tmp_path_factory):
    """One local host with a managed hub on free ports below 1024, as a fresh host's are."""
    _cleanup_accounts()
    tmp = tmp_path_factory.mktemp("hubports")
    root, data = tmp / "repo", tmp / "hubdata"
    ports = privileged_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n")
    with hub_prefix_lock():
        first = wodsync(root, "apply", "--yes")
    yield {"root": root, "data": data, "ports": ports, "first_apply": first,
           "base": f"http://127.0.0.1:{ports['port']}",
           "proxy_api": f"http://127.0.0.1:{ports['proxy_api_port']}"}
    stop_hub(data, range(UID_BASE + 1, UID_BASE + SEATS + 1))
    _cleanup_accounts()


@needs_hub
def test_a_fresh_host_runs_the_hub_with_no_port_open_to_students(hub_host):
    first = hub_host["first_apply"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "started the hub" in first.stderr
    assert "open to students" not in first.stdout
    assert not (hub_host["data"] / "proxy-auth-token").exists(), "the proxy's token is on disk"
    assert routes(hub_host, proxy_token(hub_host)).status_code == 200


@needs_hub
def test_a_seat_cannot_take_the_hubs_ports_while_the_hub_restarts_and_logins_still_work(hub_host):
    """The old hub ends, the new one replaces the proxy: the hub's port and the public port
    are both free for a moment."""
    proxy = pid_of(hub_host, "proxy")
    with Listener(seat(2), hub_host["ports"]["hub_port"], hub_host["ports"]["port"]) as attacker:
        assert "restarted the hub" in toggle_restart(hub_host)
        session, _ = login(hub_host["base"], f"{PREFIX}1", set_password(1))
    result = attacker.result
    assert result["uid"] == UID_BASE + 2 and result["tries"] > 1
    assert result["held"] == [] and result["got"] == []
    assert set(result["refused"]) == {"EACCES"}
    assert session.get(f"{hub_host['base']}/hub/home", timeout=30).status_code == 200
    assert pid_of(hub_host, "proxy") != proxy, "the new hub was expected to replace its proxy"


@needs_hub
def test_a_seat_cannot_take_the_hubs_port_while_the_hub_is_stopped(hub_host):
    """The hub dies; its proxy keeps routing `/` to the hub's port until the next start."""
    end(pid_of(hub_host, "hub"))
    assert alive(pid_of(hub_host, "proxy"))
    with Listener(seat(2), hub_host["ports"]["hub_port"]) as attacker:
        page = requests.get(f"{hub_host['base']}/hub/login", timeout=30)
        assert page.status_code != 200, "a login page came from somewhere while the hub was down"
        assert "started the hub" in applied(hub_host)
        login(hub_host["base"], f"{PREFIX}1", set_password(1))
    assert attacker.result["held"] == [] and attacker.result["got"] == []
    assert attacker.result["uid"] == UID_BASE + 2 and attacker.result["tries"] > 1


@needs_hub
def test_a_seat_cannot_take_the_proxys_ports_while_the_proxy_is_replaced(hub_host):
    """Hub and proxy both stopped; the next start makes a proxy and sends it its token."""
    end(pid_of(hub_host, "hub"))
    end(pid_of(hub_host, "proxy"))
    ports = (hub_host["ports"]["proxy_api_port"], hub_host["ports"]["port"])
    with Listener(seat(3), *ports) as attacker:
        assert "started the hub" in applied(hub_host)
    assert attacker.result["held"] == [] and attacker.result["got"] == []
    assert set(attacker.result["refused"]) == {"EACCES"} and attacker.result["tries"] > 2
    assert routes(hub_host, proxy_token(hub_host)).status_code == 200


@needs_hub
def test_a_seat_gets_nothing_from_the_proxys_api(hub_host):
    api = hub_host["proxy_api"]
    snoop = seat_popen(seat(4), SNOOP, api, pid_of(hub_host, "proxy"), stdout=subprocess.PIPE)
    out = json.loads(snoop.communicate(timeout=60)[0])
    assert out["uid"] == UID_BASE + 4
    assert out["anonymous"][0] == 403 and out["guessed"][0] == 403
    assert "/user/" not in out["anonymous"][1] + out["guessed"][1]
    assert out["environ"] == "PermissionError"


@needs_hub
def test_the_proxys_token_is_new_after_a_proxy_restart(hub_host):
    before, proxy = proxy_token(hub_host), pid_of(hub_host, "proxy")
    assert "restarted the hub" in toggle_restart(hub_host)
    after = proxy_token(hub_host)
    assert pid_of(hub_host, "proxy") != proxy
    assert after != before and len(after) == 64
    assert routes(hub_host, before).status_code == 403
    assert routes(hub_host, after).status_code == 200
    written = [f for f in (*hub_host["data"].rglob("*"),
                           *hub_host["root"].parent.joinpath("hubconf").rglob("*"))
               if f.is_file() and after.encode() in f.read_bytes()]
    assert written == [], "the proxy's token is written on disk"


@needs_hub
def test_a_seats_own_server_works_through_the_proxy_across_a_restart(hub_host):
    """Students' servers listen on random high ports; the proxy still routes to them."""
    user = f"{PREFIX}5"
    home = HOMES / user
    (home / "notes.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    os.chown(home / "notes.ipynb", UID_BASE + 5, UID_BASE + 5)
    session, xsrf = login(hub_host["base"], user, set_password(5))
    start_server(session, hub_host["base"], user, xsrf)
    assert read_contents(session, hub_host["base"], user, "notes.ipynb")["type"] == "notebook"
    assert "restarted the hub" in toggle_restart(hub_host)
    assert read_contents(session, hub_host["base"], user, "notes.ipynb")["type"] == "notebook"


@needs_hub
def test_a_stale_proxy_pid_file_never_gets_another_process_killed(hub_host):
    """After a reboot the proxy's old pid may be a student's process (or a daemon's): the hub
    starting must not stop it."""
    end(pid_of(hub_host, "hub"))
    end(pid_of(hub_host, "proxy"))
    bystander = seat_popen(seat(6), "import time; time.sleep(600)")
    try:
        (hub_host["data"] / "jupyterhub-proxy.pid").write_text(str(bystander.pid))
        assert "started the hub" in applied(hub_host)
        assert bystander.poll() is None, "the hub stopped a process that was not its proxy"
        assert pid_of(hub_host, "proxy") != bystander.pid
    finally:
        bystander.kill()
        bystander.wait()


def test_stopping_the_hub_spares_a_process_named_by_a_stale_proxy_pid_file(tmp_path):
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (tmp_path / "jupyterhub-proxy.pid").write_text(str(bystander.pid))
        done = service.stop_hub({"supervisor": "process", "data_dir": str(tmp_path),
                                    "api": "http://127.0.0.1:9/hub/api"}, None)
        assert done == {"hub_was_running": False, "servers_stopped": []}
        assert bystander.poll() is None
        assert not (tmp_path / "jupyterhub-proxy.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


# ---- the plan and the model, no hub ------------------------------------------------------------

def test_a_fresh_hubs_ports_are_all_below_1024():
    hub = Hub()
    assert all(port < 1024 for _, port in hub.ports())
    assert hub.unprivileged_ports() == []
    moved = Hub(port=8000, hub_port=8081, proxy_api_port=802)
    assert moved.unprivileged_ports() == [("port", 8000), ("hub_port", 8081)]
    assert moved.unprivileged_ports(start=0) == moved.ports()


def test_the_schema_documents_the_new_defaults():
    schema = json.loads((PROJECT / "schemas/host.schema.json").read_text())
    hub = next(d for d in schema["$defs"].values() if "hub_port" in d.get("properties", {}))
    assert {k: hub["properties"][k]["default"] for k in ("port", "hub_port", "proxy_api_port")} \
        == {"port": 80, "hub_port": 81, "proxy_api_port": 82}


def test_the_agent_observes_which_ports_students_may_take():
    facts = service.observe({"supervisor": "process", "data_dir": "/nonexistent"}, None)
    kernel = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    assert facts["unprivileged_port_start"] == int(kernel)
    assert facts["running"] is False


def port_notes(repo, kernel_start: int | None) -> list[str]:
    """The plan of the example host `hub-emea` (default ports 80, 81, 82) when its kernel reports
    `kernel_start` (None: an agent that does not report it)."""
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    d = desired_state(catalog, "hub-emea", Placeholders())
    facts = converged(d)
    facts["service"]["unprivileged_port_start"] = kernel_start
    plan = plan_host(d, facts)
    assert plan.errors == [] and plan.changes == []
    return [n for n in plan.notes if "open to students" in n]


def test_a_hub_port_students_can_take_is_a_plan_note(repo):
    repo.replace("hosts/hub-emea.yaml", "hub:\n", "hub:\n  port: 8000\n  hub_port: 8081\n")
    notes = port_notes(repo, 1024)
    assert [n.split(" is open")[0] for n in notes] == ["hub.port 8000", "hub.hub_port 8081"]
    assert notes[0].endswith("; use a port below 1024")


def test_a_kernel_letting_students_take_low_ports_is_a_note_unless_the_plan_fixes_it(repo):
    notes = port_notes(repo, 0)
    assert [n.split(" is open")[0] for n in notes] == \
        ["hub.port 80", "hub.hub_port 81", "hub.proxy_api_port 82"]
    assert notes[1].endswith("set `net.ipv4.ip_unprivileged_port_start: 1024` in the host's "
                             "`sysctl`")
    assert "is 0" in notes[1] and all("ip_unprivileged_port_start: 1024" in n for n in notes)
    repo.replace("hosts/hub-emea.yaml", "sysctl:\n",
                 "sysctl:\n  net.ipv4.ip_unprivileged_port_start: 1024\n")
    assert port_notes(repo, 0) == [], "the plan's own sysctl closes the low ports"


def test_an_agent_that_does_not_report_the_kernels_limit_gets_no_note(repo):
    assert port_notes(repo, None) == []
