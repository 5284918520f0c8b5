"""A real `wodsync daemon` process for tests: started on a free port with an API token,
its status, metrics and log read back, stopped (SIGKILL at the end of a test that failed).

Tests start it on a git origin (`gitorigin.Origin`) and drive it as an operator would: commits
to the origin, the session API, the status and metrics endpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import until, wodsync_argv
from sshd import free_port

API_TOKEN = "api-" + os.urandom(8).hex()


class DaemonProcess:
    def __init__(self, origin: Path, state: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = wodsync_argv("daemon", "--repo", origin, "--state", state, "--listen",
                                 f"127.0.0.1:{self.port}", *args)
        self.log = state.parent / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, WODSYNC_WEBHOOK_SECRET="")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=log)
        until(self.ready, f"the daemon never got ready:\n{self.text()[-3000:]}")
        return self

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=10,
                            headers={"Authorization": f"Bearer {API_TOKEN}"})

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base + path, json=body, timeout=120,
                             headers={"Authorization": f"Bearer {API_TOKEN}"})

    def ready(self) -> bool:
        try:
            return self.get("/readyz").ok
        except requests.ConnectionError:
            return False

    def hosts(self) -> dict[str, dict[str, Any]]:
        """The status of each host, by name."""
        return {h["host"]: h for h in self.get("/api/v1/status").json()["hosts"]}

    def history(self, host: str) -> list[dict[str, Any]]:
        """The host's reconciliations, oldest first."""
        view = self.get(f"/api/v1/status?host={host}").json()
        return list(reversed(view["reconciliations"]))

    def applied(self, host: str) -> str | None:
        return self.hosts().get(host, {}).get("lastAppliedRevision")

    def metrics(self) -> str:
        return self.get("/metrics").text

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=180)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts: stopped (SIGTERM, then SIGKILL) whatever happened."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc and d.proc.poll() is None:
            print(f"\n---- daemon on port {d.port}: status {d.get('/api/v1/status').text[:3000]}"
                  f"\n---- its log:\n{d.text()[-4000:]}")
        try:
            d.stop()
        except subprocess.TimeoutExpired:
            d.stop(signal.SIGKILL)
