"""A real JupyterHub for tests: free ports, its API, a student's browser session, clean stop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sshd import free_port

PAGINATION = "application/jupyterhub-pagination+json"
# World-readable, outside root's home and pytest's private temp dirs: students' servers run
# from it. Kept between runs so a rerun does not download JupyterHub again.
HUB_PREFIX = "/opt/wodsync-test/hub"


PROJECT = Path(__file__).resolve().parent.parent
PROXY = shutil.which("configurable-http-proxy")
# What a test with a real hub needs; ./bootstrap test installs it.
needs_hub = pytest.mark.skipif(
    os.geteuid() != 0 or PROXY is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, /usr/bin/python3 and configurable-http-proxy (./bootstrap test)")


@contextlib.contextmanager
def hub_prefix_lock() -> Iterator[None]:
    """The hub environment at HUB_PREFIX to oneself while wodsync may install into it.

    Every hub test's catalog uses that one prefix; the first apply on a fresh machine makes
    the venv and installs JupyterHub there, and two such applies at once (two pytest-xdist
    workers) would install over each other. Later applies find it made and only look."""
    lock = Path(HUB_PREFIX).with_name("hub.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def hub_ports() -> dict[str, int]:
    return {"port": free_port(), "hub_port": free_port(), "proxy_api_port": free_port()}


def privileged_ports() -> dict[str, int]:
    """Free ports below 1024, where only root may listen, as a hub's defaults are.

    Taken from 300-599, clear of well-known services and of 600-1023 where NFS and RPC
    daemons pick reserved ports at random (bindresvport, sunrpc)."""
    found = []
    for port in random.sample(range(300, 600), 300):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("", port))
            found.append(port)
        if len(found) == 3:
            return dict(zip(("port", "hub_port", "proxy_api_port"), found, strict=True))
    raise AssertionError("no three free ports in 300-599")


def write_lab(root: Path, tmp: Path, pool: str, ports: dict[str, int], hub_extra: str) -> None:
    """A one-host catalog: a local host with a managed hub, a pool, one 50-seat workshop.

    `pool` is the pool's YAML body, `hub_extra` more lines of the host's `hub:` mapping.
    """
    files = {
        "catalog/workshops/WKSHP-Lab/workshop.yaml":
            "name: Lab\ncapacity: 50\nseats: {first: 1, last: 50}\nlocation: lab\n"
            "duration: 4\n",
        "catalog/workshops/WKSHP-Lab/1-Intro.ipynb":
            '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n',
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  test:\n{pool}",
        "catalog/variables.yaml": "BRANDING: Lab\n",
        "hosts/lab.yaml": f"address: localhost\ntransport: local\nlocation: lab\npool: test\n"
                          f"state_dir: {tmp}/state\nhub:\n  prefix: {HUB_PREFIX}\n"
                          f"  config_dir: {tmp}/hubconf\n  data_dir: {tmp}/hubdata\n"
                          f"  ip: 127.0.0.1\n  port: {ports['port']}\n"
                          f"  hub_port: {ports['hub_port']}\n"
                          f"  proxy_api_port: {ports['proxy_api_port']}\n"
                          f"  token: {{secret: WODT_HUB_TOKEN}}\n{hub_extra}",
    }
    for template in (PROJECT / "templates/hub").glob("*.j2"):
        files[f"templates/hub/{template.name}"] = template.read_text()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


class HubApi:
    """The hub REST API with the wodsync service token, as an operator script would use it."""

    def __init__(self, hub_port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{hub_port}/hub/api"
        self.headers = {"Authorization": f"token {token}"}

    def call(self, method: str, path: str, accept: str = "application/json",
             **kw: Any) -> requests.Response:
        return requests.request(method, self.base + path, timeout=30,
                                headers={**self.headers, "Accept": accept}, **kw)

    def users(self) -> list[str]:
        page = self.call("GET", "/users?limit=10000", PAGINATION).json()
        return [u["name"] for u in page["items"]]

    def groups(self) -> dict[str, list[str]]:
        page = self.call("GET", "/groups?limit=10000", PAGINATION).json()
        return {g["name"]: g["users"] for g in page["items"]}


def login(base: str, user: str, password: str) -> tuple[requests.Session, str]:
    """Log in like a browser: the login form with its `_xsrf` field, then PAM checks it."""
    s = requests.Session()
    form = s.get(f"{base}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text).group(1)
    done = s.post(f"{base}/hub/login", data={"username": user, "password": password,
                                             "_xsrf": xsrf}, allow_redirects=False, timeout=60)
    if done.status_code != 302:
        raise AssertionError(f"login of {user} failed: HTTP {done.status_code}")
    return s, s.cookies.get("_xsrf", xsrf)


def start_server(s: requests.Session, base: str, user: str, xsrf: str) -> None:
    """Start the student's own server with their hub session, and wait until it is ready."""
    api = f"{base}/hub/api/users/{user}"
    started = s.post(f"{api}/server", headers={"X-XSRFToken": xsrf}, timeout=60)
    assert started.status_code in (201, 202, 400), started.text
    deadline = time.monotonic() + 150
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = s.get(api, headers={"X-XSRFToken": xsrf}, timeout=30).json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the server of {user} did not become ready; the hub says: "
                         f"{json.dumps(model)[:1500]}")


def read_contents(s: requests.Session, base: str, user: str, path: str) -> dict[str, Any]:
    """A file through the Jupyter contents API of the student's server.

    The browser page first: it goes through the hub's OAuth and leaves the server's cookies
    (session and `_xsrf`), which API calls then present.
    """
    page = s.get(f"{base}/user/{user}/lab", timeout=60)
    assert page.status_code == 200, (page.status_code, page.url)
    xsrf = s.cookies.get("_xsrf", path=f"/user/{user}/") or ""
    got = s.get(f"{base}/user/{user}/api/contents/{path}?content=1",
                headers={"X-XSRFToken": xsrf}, timeout=60)
    assert got.status_code == 200, (got.status_code, got.text[:300])
    return got.json()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)


def stop_hub(data_dir: Path, uid_range: range) -> None:
    """The hub, its proxy and every process of the test seats.

    `uid_range` is the test's seats and nothing more: other tests' seats, a private
    PostgreSQL, a guard lab, run at the same time under uids near them."""
    state = data_dir / "wodsync-hub.json"
    if state.exists():
        _kill(json.loads(state.read_text())["pid"])
    proxy = data_dir / "jupyterhub-proxy.pid"
    if proxy.exists() and proxy.read_text().strip().isdigit():
        _kill(int(proxy.read_text()))
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, StopIteration, ValueError):
            uid = int(next(ln for ln in status.read_text().splitlines()
                           if ln.startswith("Uid:")).split()[1])
            if uid in uid_range:
                os.kill(int(status.parent.name), signal.SIGKILL)
