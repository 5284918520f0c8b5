"""One writer per host: an exclusive `flock` on `<state_dir>/lock` for the whole of an apply.

Two applies on one host (two operators, or the daemon and an operator) would interleave their
`userdel`s and run `on_change` commands twice. An apply holds the lock exclusively for its
whole call; seat operations (sessions) hold it shared, so they run side by side but never
during an apply. A waiter gives up after a bounded time and names the holder (pid, operation,
since when), which the holder writes into the lock file. The kernel drops the lock when the
holder dies, so a killed apply never leaves the host locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

LOCK_FILE = "lock"


class HostBusy(Exception):
    """Another wodsync call holds the host."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 512).decode(errors="replace").strip() or "held by seat operations"
    except OSError:
        return "holder unknown"


@contextlib.contextmanager
def hold(state_dir: str, op: str, exclusive: bool = True, timeout: float = 30.0,
         stop: threading.Event | None = None) -> Iterator[None]:
    """Hold the host lock for `op`; wait up to `timeout` seconds, then raise HostBusy — or
    HostBusy at once when `stop` is set meanwhile (the controller no longer wants the call)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HostBusy(f"host busy ({_holder(fd)}); waited {timeout:g} s") from None
                if stop is not None and stop.is_set():
                    raise HostBusy(f"host busy ({_holder(fd)}); stopped waiting: the "
                                   "controller asked to stop") from None
                time.sleep(0.05)
        if exclusive:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{op} by PID {os.getpid()} since {since}".encode(), 0)
        yield
        if exclusive:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
