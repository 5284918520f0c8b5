"""The demo's background processes (the daemon, the mail sink), found and stopped through a pid
file: one way for both, so neither ever signals a pid that now names another program."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def running(pid_file: Path, *words: str) -> int | None:
    """The pid the file names, when that process is alive and each of `words` is one of its
    arguments (a recycled pid names another program: None)."""
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if all(w.encode() in argv for w in words) else None


def terminate(pid_file: Path, *words: str, timeout: float) -> bool:
    """SIGTERM the process, wait up to `timeout` seconds, then SIGKILL; the pid file goes.
    True when one was running."""
    pid = running(pid_file, *words)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pid_file, *words) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if running(pid_file, *words) == pid:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid is not None
