"""A workshop's checks on the host: each script run as the seat's own user, scored step by step.

A check decides whether the student did the exercise, so it looks at what the student made, as
the student: it runs with the seat's uid and gid, no supplementary group, never root, in the
seat's home, with a fixed environment (`check_env`), in a process group of its own that is
killed at `check_timeout` — and killed anyway once the script exits, so nothing it started
outlives it. Exit 0 is a pass; the first line of its output starting with `FAIL:` is the
message shown to the student. Its output is read with a bound (`OUTPUT_CAP`).

The script arrives as data on the request and is never rendered. It is not written anywhere a
student could reach: its bytes go into a sealed memfd (`memfd_create` with every seal set,
so not even its creator can change it any more), which the interpreter named by the script's
`#!` line (`/bin/sh` without one) opens as `/dev/fd/N`. Feeding the script on stdin instead
would let any command of the script that reads stdin eat the rest of the script; a file in a
root-owned folder would need a folder the seat can enter but never write, and its cleanup. The
same runner runs the `solve` scripts of the content CI: the scripts are only data.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import pwd
import select
import signal
import subprocess
import time
from typing import Dict, List, Optional, Tuple

from wodsync.agent import accountsdb, records
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import (
    CheckResult,
    CheckScript,
    Seat,
    SeatCheckAnswer,
    SeatCheckRequest,
)
from wodsync.agent.run import BASE_PATH

OUTPUT_CAP = 64 * 1024      # bytes of a check's output kept (the rest is read and dropped)
MESSAGE_CAP = 500           # characters of the student's message
DEFAULT_TIMEOUT = 30.0
_SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


def check_env(user: pwd.struct_passwd, payload: Seat) -> Dict[str, str]:
    """All a check sees of its environment: nothing of root's, nothing of the agent's."""
    return {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
            "PATH": BASE_PATH, "LANG": "C.UTF-8", "WORKSHOP": payload["workshop"],
            "STUDENT": user.pw_name}


def interpreter(script: bytes) -> List[str]:
    """The argv before the script's path: its `#!` line split on blanks (as the kernel reads
    it, but allowing `env NAME`), `/bin/sh` without one."""
    if not script.startswith(b"#!"):
        return ["/bin/sh"]
    line = script[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not line:
        raise ValueError("empty #! line")
    return line


def sealed(script: bytes) -> int:
    """A memfd holding `script`, sealed against every change; the caller closes it."""
    fd = os.memfd_create("wodsync-check", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(script)
        while view:
            view = view[os.write(fd, view):]
        seals = 0
        for name in _SEALS:
            seals |= getattr(fcntl, name)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        return fd
    except BaseException:
        os.close(fd)
        raise


def fail_message(output: bytes) -> Optional[str]:
    """The first line starting with `FAIL:`, without it, bounded; None when there is none."""
    for line in output.decode("utf-8", "replace").splitlines():
        if line.startswith("FAIL:"):
            return line[len("FAIL:"):].strip()[:MESSAGE_CAP]
    return None


def _exited(pid: int) -> bool:
    """The child has exited — without reaping it, so its process group id stays ours to kill."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read_bounded(chunks: List[bytes], kept: int, data: bytes) -> int:
    room = OUTPUT_CAP - kept
    if room > 0:
        chunks.append(data[:room])
    return kept + min(len(data), max(room, 0))


def _watch(proc: "subprocess.Popen[bytes]", deadline: float) -> Tuple[bytes, bool]:
    """Output (bounded) until the script exits or the deadline passes; whether it timed out.
    The group is killed in both cases, before the child is reaped."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: List[bytes] = []
    kept = 0
    timed_out = False
    while True:
        if _exited(proc.pid):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        if ready:
            data = os.read(fd, 65536)
            if data:
                kept = _read_bounded(chunks, kept, data)
    _kill_group(proc.pid)
    proc.wait()
    while select.select([fd], [], [], 0.2)[0]:  # what it wrote just before it ended
        data = os.read(fd, 65536)
        if not data:
            break
        kept = _read_bounded(chunks, kept, data)
    return b"".join(chunks), timed_out


def run_script(script: bytes, user: pwd.struct_passwd, env: Dict[str, str],
               timeout: float) -> Tuple[bool, str]:
    """Run one script as `user`; (passed, message for the student)."""
    try:
        argv = interpreter(script)
    except ValueError as exc:
        return False, f"the check could not run: {exc}"
    fd = sealed(script)
    try:
        proc = subprocess.Popen(
            [*argv, f"/dev/fd/{fd}"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=user.pw_dir, env=env, pass_fds=(fd,),
            user=user.pw_uid, group=user.pw_gid, extra_groups=[], start_new_session=True)
    except OSError as exc:
        return False, f"the check could not run: {exc.strerror or exc}"
    finally:
        os.close(fd)
    try:
        output, timed_out = _watch(proc, time.monotonic() + timeout)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    message = fail_message(output)
    if timed_out:
        return False, message or f"did not finish within {timeout:g} s"
    if proc.returncode == 0:
        return True, ""
    return False, message or f"failed (exit {proc.returncode})"


def run_checks(scripts: List[CheckScript], user: pwd.struct_passwd, payload: Seat
               ) -> List[CheckResult]:
    """Each script in order, each in its own time budget; one failing never stops the next."""
    env = check_env(user, payload)
    timeout = float(payload.get("check_timeout") or DEFAULT_TIMEOUT)
    results: List[CheckResult] = []
    for check in scripts:
        start = time.monotonic()
        passed, message = run_script(base64.b64decode(check["data"]), user, env, timeout)
        results.append({"name": check["name"], "points": check["points"], "passed": passed,
                        "message": message, "seconds": round(time.monotonic() - start, 3)})
    return results


def check(payload: SeatCheckRequest, host: HostSide) -> SeatCheckAnswer:
    """Operation `seat_check`: the scripts run on the seat of a live session — only while the
    host records the seat given to that very session (never another participant's work)."""
    with records.locked(payload["state_dir"], [payload["user"]], 30.0):
        record = records.read(payload["state_dir"], payload["user"]) or {}
    if record.get("session") != payload["session"] or record.get("state") != "active":
        raise RuntimeError(f"seat {payload['user']} is not in use by session "
                           f"{payload['session']} on this host")
    user = accountsdb.seat_account(payload["user"], payload["uid"])
    return {"steps": run_checks(payload.get("checks") or [], user, payload)}


OPERATIONS = {"seat_check": check}
