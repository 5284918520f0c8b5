"""A real `wodsync daemon` following a real bare repository, for the source's health and the
alerts: the catalog it starts from, the daemon as a process with its API, a signed webhook
poke, and a folder made read-only by a bind mount (root).

No host by default: the source's condition needs none, so these tests create no account.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import requests

from gitorigin import Origin
from helpers import until
from sshd import free_port

API_TOKEN, WEBHOOK_SECRET = "api-" + os.urandom(6).hex(), "hook-" + os.urandom(6).hex()


def lab_repo(folder: Path, prefix: str, uid_base: int, mail: str | None = None) -> Origin:
    """A bare origin whose first commit is a valid catalog with one pool and no host."""
    repo = Origin(folder)
    repo.write("catalog/locations.yaml", "locations:\n  - name: lab\n")
    repo.write("catalog/students.yaml", f"pools:\n  test:\n    prefix: {prefix}\n    first: 1\n"
               f"    last: 2\n    uid_base: {uid_base}\n    gid_base: {uid_base}\n"
               f"    home_root: {folder}/homes\n")
    repo.write("catalog/workshops/README.md", "none yet\n")
    if mail is not None:
        repo.write("catalog/mail.yaml", mail)
    repo.first = repo.commit("a lab")  # type: ignore[attr-defined]
    return repo


class DaemonProc:
    """`wodsync daemon` on a free port, its log beside its state."""

    def __init__(self, repo: Origin, state: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(Path(os.sys.executable).parent / "wodsync"), "daemon", "--repo",
                    str(repo.origin), "--state", str(state), "--listen",
                    f"127.0.0.1:{self.port}", *args]
        self.env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN,
                        WODSYNC_WEBHOOK_SECRET=WEBHOOK_SECRET, **(env or {}))
        self.log = state.parent / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProc:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=log)
        until(self.answers, f"the daemon never answered:\n{self.text()}")
        return self

    def answers(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=2).ok
        except requests.ConnectionError:
            return False

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=10,
                            headers={"Authorization": f"Bearer {API_TOKEN}"})

    def status(self) -> dict:
        answer = self.get("/api/v1/status")
        assert answer.ok, answer.text
        return answer.json()

    def source(self) -> dict:
        return self.status()["repository"] or {}

    def metric(self, name: str) -> float | None:
        """A sample of the exposition (`name` with its labels, as written), or None."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def reconcile(self) -> None:
        """A manual round through the API: every host now, whatever its back-off."""
        requests.post(self.base + "/api/v1/reconcile", timeout=30, headers={
            "Authorization": f"Bearer {API_TOKEN}"}).raise_for_status()

    def poke(self, head: str) -> requests.Response:
        """A signed push of `head` naming no repository (accepted: the repository is a
        path)."""
        raw = json.dumps({"ref": "refs/heads/main", "after": head}).encode()
        signature = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        return requests.post(self.base + "/hooks/git", data=raw, timeout=10, headers={
            "X-GitHub-Event": "push", "Content-Type": "application/json",
            "X-GitHub-Delivery": os.urandom(8).hex(),
            "X-Hub-Signature-256": f"sha256={signature}"})

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def lines(self, pattern: str) -> list[str]:
        return [ln for ln in self.text().splitlines() if re.search(pattern, ln)]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(repo: Origin, state: Path, *args: str,
            env: dict[str, str] | None = None) -> Iterator[DaemonProc]:
    daemon = DaemonProc(repo, state, *args, env=env)
    try:
        yield daemon.start()
    finally:
        daemon.stop()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` bound read-only over itself (even root cannot write in it) while the block
    runs; unmounted after, whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
