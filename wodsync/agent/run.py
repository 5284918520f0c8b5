"""Running tools on the host: argv lists only, data on stdin, failures with the tool's words.

Nothing here builds a shell line: every command is an argv list, and secrets (passwords, the hub
token) travel on stdin or in the environment of the child, never as arguments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandFailed(RuntimeError):
    """A tool exited non-zero; the message names the tool and ends with its last words."""


def run(argv: Sequence[str], stdin: str | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an argv (never a shell line); a failure raises with the tool's own last words."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=cwd)
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(argv[:4])} did not finish within {timeout} s") from None
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(argv[:4])} exited {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip()[-800:]}")
    return done


def processes_of(uid: int) -> list[int]:
    """PIDs whose real uid is `uid`, read from /proc (no `ps` and no shell). A zombie is not
    counted: it runs nothing and holds nothing, and only its parent (the hub, for a server)
    can reap it."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("State:") and line.split()[1] == "Z":
                        break
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_uid(uid: int, settle: float = 2.0) -> int:
    """End every process of a seat (a terminal, a kernel, a miner the previous occupant left):
    SIGKILL, repeated until none is left or `settle` seconds passed (a fork bomb respawns).
    Returns how many were signalled."""
    if uid == 0:
        raise ValueError("refusing to kill the processes of uid 0")
    killed = 0
    deadline = time.monotonic() + settle
    while True:
        pids = processes_of(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            left = processes_of(uid)
            if left:
                raise RuntimeError(f"{len(left)} processes of uid {uid} survived SIGKILL")
            return killed
        time.sleep(0.01)
