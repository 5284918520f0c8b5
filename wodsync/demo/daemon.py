"""The demo's daemon: `wodsync daemon` following the demo repository, started in a session of
its own (it outlives the `wodsync demo` that started it, as the hub does), and the API calls the
demo makes to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wodsync.demo.pidfile import running, terminate
from wodsync.demo.repo import CONTROLLER_STATE, DemoError
from wodsync.progress import LOGGER as PROGRESS_LOGGER
from wodsync.progress import Progress

PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
READY_SECONDS = 1200.0  # the first run installs JupyterHub from PyPI
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Api:
    base: str
    token: str

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json", **(headers or {})})
        try:
            with _OPENER.open(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def alive(self) -> bool:
        try:
            return self.call("GET", "/healthz")[0] == 200
        except OSError:
            return False


def _pid(folder: Path) -> int | None:
    return running(folder / PID_FILE, "daemon")


def start(folder: Path, repo: Path, secrets_file: Path, api: Api, listen: str,
          force_manager: bool = False) -> None:
    """Start the daemon unless it already runs; wait until it answers. A host another
    store's daemon manages stalls it (`wait_converged` says so) unless `force_manager`."""
    if _pid(folder) and api.alive():
        return
    log = (folder / LOG_FILE).open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wodsync", "daemon", "--repo", str(repo), "--branch", "main",
         "--state", str(folder / CONTROLLER_STATE), "--listen", listen, "--secrets",
         str(secrets_file), "--interval", "5", "--resync", "120",
         *(["--force-manager"] if force_manager else []),
         # JSON lines: the demo follows the daemon's progress lines in its log (follow_log)
         "--log-json"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("WODSYNC_")})
    (folder / PID_FILE).write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while not api.alive():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"the demo daemon did not start; see {folder / LOG_FILE}:\n"
                            + (folder / LOG_FILE).read_text()[-1500:])
        time.sleep(0.2)


def follow_log(log: Path, progress: Progress) -> Callable[[], None]:
    """A poll that hands the daemon's new progress lines (JSON, logger `wodsync.progress`)
    to `progress`; lines written before the call are not shown."""
    offset = log.stat().st_size if log.exists() else 0

    def poll() -> None:
        nonlocal offset
        try:
            with log.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        offset += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("logger") == PROGRESS_LOGGER:
                progress.update(str(event.get("host")), event.get("phase"),
                                str(event.get("detail") or ""), event.get("done"),
                                event.get("total"))

    return poll


def wait_converged(api: Api, host: str, revision: str, say: Callable[[str], None],
                   log: Path, progress: Progress | None = None) -> None:
    """Until the host converged at `revision` after now (a status from before — a hub since
    stopped — does not count); a Stalled host at that revision is the demo's error. The
    daemon's progress lines meanwhile go to `progress`."""
    since = datetime.now(UTC)
    deadline, last = time.monotonic() + READY_SECONDS, ""
    poll = follow_log(log, progress or Progress())
    while time.monotonic() < deadline:
        poll()
        code, status = api.call("GET", "/api/v1/status")
        hosts = {h["host"]: h for h in (status or {}).get("hosts", [])} if code == 200 else {}
        h = hosts.get(host)
        if h and h["lastAppliedRevision"] == revision and h["condition"] == "Ready" and \
                h["lastSuccess"] and _time(h["lastSuccess"]) >= since:
            return
        if h and h["condition"] == "Stalled" and h["lastAttemptedRevision"] == revision:
            raise DemoError(f"the demo host is Stalled ({h['reason']}): {h['message']}; see "
                            f"{log}")
        line = f"{h['condition']}: {h['message']}" if h else "waiting for the first revision"
        if line != last:
            say(line)
            last = line
        time.sleep(0.5)
    raise DemoError(f"the demo host did not converge within {READY_SECONDS:.0f} s; see {log}")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stop(folder: Path) -> bool:
    """SIGTERM the daemon and wait for it (its batch in flight finishes); True when one was
    running."""
    return terminate(folder / PID_FILE, "daemon", timeout=180)
