"""The API for tests: `wodsync serve` in a process of its own, ready when /healthz answers, or
an application served in a thread of the test process (`serving`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import uvicorn
from fastapi import FastAPI

from sshd import free_port

START_WAIT_S = 30.0  # an upper bound for uvicorn to listen, not a performance figure


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The application on a loopback port in a thread, for as long as the block runs."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Server:
    def __init__(self, root: Path, state: Path, env: dict[str, str], api_token: str,
                 expiry_interval: float = 3600) -> None:
        self.root, self.state, self.port = root, state, free_port()
        self.env, self.token, self.expiry_interval = env, api_token, expiry_interval
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Server:
        cmd = [str(Path(os.sys.executable).parent / "wodsync"), "serve", "--root",
               str(self.root), "--state", str(self.state), "--listen",
               f"127.0.0.1:{self.port}", "--expiry-interval", str(self.expiry_interval)]
        self.log = (self.state.parent / f"serve-{self.port}.log").open("a")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=self.log,
                                     text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=5).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not up, or busy starting
                time.sleep(0.1)
        raise AssertionError("wodsync serve did not start: "
                             + (self.state.parent / f"serve-{self.port}.log").read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def call(self, method: str, path: str, token: str | None = "", **kw) -> requests.Response:
        """`token` "" (default): the server's API token; None: no Authorization header."""
        token = self.token if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return requests.request(method, self.base + path, headers=headers, timeout=120, **kw)
