"""Sessions through the HTTP API (`wodsync serve`) with a real JupyterHub: PAM logins with the
returned password, the seat's own notebook through the contents API, CLEANUP and RESET, bad
input refused, a server killed during a CREATE."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

import apiserver
from hubs import (
    HUB_PREFIX,
    PROXY,
    hub_ports,
    hub_prefix_lock,
    login,
    read_contents,
    start_server,
    stop_hub,
)
from sessionlab import HOMES, cleanup_accounts, wodsync, write_catalog

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or PROXY is None or shutil.which("shc") is None,
    reason="needs root, configurable-http-proxy and shc (./bootstrap test)")

API_TOKEN = "wodsync-api-" + os.urandom(8).hex()
HUB_TOKEN = "wodsync-hub-" + os.urandom(8).hex()


def _env() -> dict[str, str]:
    return dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, HUB_LAB1_TOKEN=HUB_TOKEN)


class Server(apiserver.Server):
    def __init__(self, root: Path, state: Path) -> None:
        super().__init__(root, state, _env(), API_TOKEN)

    def call(self, method: str, path: str, token: str | None = API_TOKEN,
             **kw) -> requests.Response:
        return super().call(method, path, token=token, **kw)

    def chunked(self, size: int) -> requests.Response:
        """A body streamed without a Content-Length: the limit must hold while reading."""
        def body():
            for _ in range(size // 4096 + 1):
                yield b"x" * 4096
        return requests.post(self.base + "/api/v1/sessions", data=body(), timeout=30,
                             headers={"Authorization": f"Bearer {API_TOKEN}",
                                      "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def api_lab(tmp_path_factory):
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("sessapi")
    root = tmp / "repo"
    ports = hub_ports()
    hub = (f"hub:\n  service: process\n  prefix: {HUB_PREFIX}\n  proxy: {PROXY}\n"
           f"  config_dir: {tmp}/hubconf\n  data_dir: {tmp}/hubdata\n  ip: 127.0.0.1\n"
           f"  port: {ports['port']}\n  hub_port: {ports['hub_port']}\n"
           f"  proxy_api_port: {ports['proxy_api_port']}\n"
           "  token: {secret: HUB_LAB1_TOKEN}\n  spawn_limit: 1\n")
    write_catalog(root, tmp, hub=hub)
    slow = root / "catalog/workshops/WKSHP-Slow"
    slow.mkdir()
    (slow / "workshop.yaml").write_text(
        "name: Slow\ncapacity: 2\nseats: {first: 36, last: 37}\nlocation: lab\nduration: 1\n"
        "hooks: {create: scripts/create.sh}\n")
    (slow / "1-Intro.ipynb").write_text((root / "catalog/workshops/WKSHP-Sess/1-Intro.ipynb")
                                        .read_text())
    (slow / "scripts").mkdir()
    (slow / "scripts/create.sh").write_text(
        f"#!/bin/bash\ntouch {tmp}/slow-started\n"
        f"for i in $(seq 600); do [ -e {tmp}/slow-gate ] && exit 0; sleep 0.1; done\n")
    with hub_prefix_lock():
        applied = wodsync(root, tmp, "apply", "--yes", env=_env(), timeout=900)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    server = Server(root, tmp / "state").start()
    yield {"root": root, "tmp": tmp, "server": server,
           "hub": f"http://127.0.0.1:{ports['port']}"}
    server.stop()
    stop_hub(tmp / "hubdata", range(58000, 58200))
    cleanup_accounts()


def _create(server: Server, workshop: str = "WKSHP-Sess", email: str = "ann@example.org",
            **kw) -> requests.Response:
    return server.call("POST", "/api/v1/sessions", json={
        "workshop": workshop, "participant": {"name": "Ann", "email": email,
                                              "company": "ACME"}}, **kw)


def _count(api_lab) -> int:
    done = wodsync(api_lab["root"], api_lab["tmp"] / "state", "session", "list", "--json",
                   env=_env())
    return len(json.loads(done.stdout))


def test_a_created_seat_logs_in_to_the_hub_and_reads_its_own_notebook(api_lab):
    answer = _create(api_lab["server"])
    assert answer.status_code == 201, answer.text
    s = answer.json()
    user, password = s["credentials"]["username"], s["credentials"]["password"]
    assert s["state"] == "active" and s["hub_url"].endswith(f":{api_lab['hub'].rsplit(':', 1)[1]}/")
    browser, xsrf = login(api_lab["hub"], user, password)
    start_server(browser, api_lab["hub"], user, xsrf)
    nb = read_contents(browser, api_lab["hub"], user, "WKSHP-Sess/1-Intro.ipynb")
    assert nb["content"]["cells"][0]["source"] == f"# Seat {s['seat']} of WKSHP-Sess"
    shown = api_lab["server"].call("GET", f"/api/v1/sessions/{s['id']}").json()
    assert [e["to_state"] for e in shown["history"]] == ["creating", "active"]
    groups = requests.get(api_lab["hub"] + "/hub/api/groups/WKSHP-Sess", timeout=30, headers={
        "Authorization": f"token {HUB_TOKEN}"}).json()
    assert groups["users"] == [user]
    _assert_server_runs_nice(user)
    ended = api_lab["server"].call("DELETE", f"/api/v1/sessions/{s['id']}")
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert ended.json()["credentials"] is None, "an ended session shows no credentials"
    with pytest.raises(AssertionError, match="login of"):
        login(api_lab["hub"], user, password)
    assert list((HOMES / user).iterdir()) == []


def _assert_server_runs_nice(user: str) -> None:
    """The seat's server runs at `hub.server_nice` (10 by default), and so does its session's
    autogroup: a starting server never holds a core the hub or the next CREATE needs."""
    import pwd

    from wodsync.agent.run import processes_of

    servers = []
    for pid in processes_of(pwd.getpwnam(user).pw_uid):
        with contextlib.suppress(OSError):
            if b"jupyterhub-singleuser" in Path(f"/proc/{pid}/cmdline").read_bytes():
                servers.append(pid)
    assert servers, f"no server of {user} runs"
    for pid in servers:
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "10", autogroup.read_text()


def test_a_reset_workshop_keeps_the_home_until_reset(api_lab):
    s = _create(api_lab["server"], "WKSHP-Reset", "held@example.org").json()
    user = s["credentials"]["username"]
    cleaned = api_lab["server"].call("DELETE", f"/api/v1/sessions/{s['id']}").json()
    assert cleaned["state"] == "held"
    assert (HOMES / user / "WKSHP-Reset/1-Intro.ipynb").exists()
    with pytest.raises(AssertionError, match="login of"):
        login(api_lab["hub"], user, s["credentials"]["password"])
    reset = wodsync(api_lab["root"], api_lab["tmp"] / "state", "session", "reset", s["id"],
                    env=_env())
    assert reset.returncode == 0, reset.stderr
    assert list((HOMES / user).iterdir()) == []


def test_bad_requests_get_a_clear_4xx_and_write_nothing(api_lab):
    server = api_lab["server"]
    before = _count(api_lab)
    assert _create(server, "WKSHP-Nope").status_code == 404
    assert _create(server, "WKSHP-Off").json()["detail"] == "workshop 'WKSHP-Off' is not active"
    assert _create(server, email="not-an-email").status_code == 422
    missing = server.call("POST", "/api/v1/sessions", json={"workshop": "WKSHP-Sess"})
    assert missing.status_code == 422 and "participant" in missing.text
    extra = server.call("POST", "/api/v1/sessions", json={
        "workshop": "WKSHP-Sess", "participant": {"email": "a@b.org"}, "admin": True})
    assert extra.status_code == 422
    huge = requests.post(server.base + "/api/v1/sessions", data=b"x" * 200_000, timeout=30,
                         headers={"Authorization": f"Bearer {API_TOKEN}",
                                  "Content-Type": "application/json"})
    assert huge.status_code == 413
    assert server.chunked(200_000).status_code == 413
    assert _create(server, token=None).status_code == 401
    assert _create(server, token="wrong").status_code == 401
    assert server.call("GET", "/api/v1/sessions/abc", token=None).status_code == 401
    assert server.call("GET", "/api/v1/sessions/abcdef123456").status_code == 404
    assert _count(api_lab) == before


def test_duplicates_and_a_full_workshop_are_409(api_lab):
    server = api_lab["server"]
    (api_lab["tmp"] / "slow-gate").touch()
    try:
        first = _create(server, "WKSHP-Slow", "dup@example.org")
        assert first.status_code == 201, first.text
        again = _create(server, "WKSHP-Slow", "DUP@example.org")
        assert again.status_code == 409 and again.json()["session"]["id"] == first.json()["id"]
        assert _create(server, "WKSHP-Slow", "two@example.org").status_code == 201
        full = _create(server, "WKSHP-Slow", "three@example.org")
        assert full.status_code == 409 and "no seat free" in full.json()["detail"]
    finally:
        (api_lab["tmp"] / "slow-gate").unlink()
        for s in json.loads(wodsync(api_lab["root"], api_lab["tmp"] / "state", "session", "list",
                                    "--json", env=_env()).stdout):
            if s["state"] == "active" and s["workshop"] == "WKSHP-Slow":
                wodsync(api_lab["root"], api_lab["tmp"] / "state", "session", "purge", s["id"],
                        env=_env())


def test_the_portal_feed_is_public(api_lab):
    workshops = requests.get(api_lab["server"].base + "/api/v1/workshops", timeout=30).json()
    by_key = {w["key"]: w for w in workshops}
    assert "WKSHP-Off" not in by_key
    assert by_key["WKSHP-Sess"]["seats_left"] <= 20 and by_key["WKSHP-Sess"]["duration"] == 2
    assert requests.get(api_lab["server"].base + "/api/v1/replays", timeout=30).json() == []
    assert requests.get(api_lab["server"].base + "/docs", timeout=30).status_code == 200


def _server_of(api_lab, user: str) -> dict | None:
    model = requests.get(f"{api_lab['hub']}/hub/api/users/{user}", timeout=30, headers={
        "Authorization": f"token {HUB_TOKEN}"}).json()
    return (model.get("servers") or {}).get("")


def test_servers_a_busy_hub_deferred_are_asked_for_again(api_lab, tmp_path, monkeypatch):
    """The hub starts one server at a time here (spawn_limit 1). Four CREATEs at once, one
    lane: the first leaves alone and its server starts; the three others leave in one call,
    and at least the last two servers are deferred (429). `start_deferred` asks for them
    again until the hub has room — except the one whose session was cleaned up meanwhile."""
    from wodsync.controller import open_controller
    from wodsync.secrets import Secrets
    from wodsync.store import Participant

    monkeypatch.setenv("HUB_LAB1_TOKEN", HUB_TOKEN)
    ctl = open_controller(api_lab["root"], api_lab["tmp"] / "state", None, Secrets())
    burst = ctl.sessions.burst
    burst.lanes = 1
    carry, calls = burst._call, []

    def held_first(name, host, payload):
        if not calls:
            deadline = time.monotonic() + 60
            while burst.waiting(name) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
        calls.append(len(payload["seats"]))
        return carry(name, host, payload)

    burst._call = held_first
    made: list = []
    threads = [threading.Thread(target=lambda n=n: made.append(ctl.sessions.create(
        "WKSHP-Sess", Participant("Dee", f"dee{n}@example.org", "ACME")).session))
        for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert calls == [1, 3] and len(made) == 4
        waiting = ctl.sessions.deferred().get("lab1", [])
        assert len(waiting) >= 2, waiting
        ctl.close()  # a restart in the middle of the burst: the list is in the store
        ctl = open_controller(api_lab["root"], api_lab["tmp"] / "state", None, Secrets())
        assert ctl.sessions.deferred().get("lab1", []) == waiting
        by_user = {s.username: s for s in made}
        for user in waiting:
            history = ctl.store.sessions.events(by_user[user].id)
            assert "server start deferred" in history[-1].message
            assert _server_of(api_lab, user) is None
        gone = by_user[waiting[-1]]
        ctl.sessions.cleanup(gone.id)
        deadline = time.monotonic() + 90
        while ctl.sessions.deferred() and time.monotonic() < deadline:
            ctl.sessions.start_deferred()
            time.sleep(1)
        assert ctl.sessions.deferred() == {}
        for user in waiting[:-1]:
            assert _server_of(api_lab, user) is not None, f"{user}: its server was asked for"
        assert _server_of(api_lab, gone.username) is None, "a cleaned-up seat gets no server"
    finally:
        for s in made:
            ctl.sessions.purge(s.id, "test teardown")
        ctl.close()


def test_a_server_killed_during_a_create_leaves_no_seat_behind(api_lab, tmp_path):
    """kill -9 mid-CREATE, restart: the session is released at once, its seat free, never
    given twice."""
    server = Server(api_lab["root"], tmp_path / "state").start()
    started = api_lab["tmp"] / "slow-started"
    started.unlink(missing_ok=True)
    def doomed() -> None:
        with contextlib.suppress(requests.ConnectionError):  # the server is killed meanwhile
            _create(server, "WKSHP-Slow", "kill@example.org")

    thread = threading.Thread(target=doomed)
    thread.start()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the CREATE never reached its hook"
    server.stop(signal.SIGKILL)
    thread.join(timeout=60)
    (api_lab["tmp"] / "slow-gate").touch()
    try:
        restarted = Server(api_lab["root"], tmp_path / "state").start()
        try:
            def states() -> list[str]:
                return [s["state"] for s in json.loads(wodsync(
                    api_lab["root"], tmp_path / "state", "session", "list", "--json",
                    env=_env()).stdout)]

            deadline = time.monotonic() + 60  # released by the expiry loop's first round
            while states() != ["ended"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert states() == ["ended"]
            assert not (api_lab["tmp"] / "state-lab1/seats/wodtx36.json").exists()
            shadow = Path("/etc/shadow").read_text()
            assert "\nwodtx36:!" in shadow, "the half-made seat's password is locked"
            again = _create(restarted, "WKSHP-Slow", "kill@example.org")
            assert again.status_code == 201 and again.json()["seat"] == 36
            wodsync(api_lab["root"], tmp_path / "state", "session", "purge", again.json()["id"],
                    env=_env())
        finally:
            restarted.stop()
    finally:
        (api_lab["tmp"] / "slow-gate").unlink()
