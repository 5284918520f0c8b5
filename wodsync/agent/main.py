"""The agent's entry point on the host: one request in, one JSON answer out.

Only the operations listed in `OPERATIONS` can be called — a request naming anything else is
refused — and a request of another protocol version is refused by name, so a controller and an
agent of different wodsync releases never half-understand each other. Each operation's request
and answer are typed in `agent.protocol`. While the call runs, its stdin stays open; when the
controller closes it (Ctrl-C, a lost connection) the call is asked to stop at its next safe
point.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Dict

from wodsync.agent import (
    PROTOCOL,
    appliance,
    batch,
    checks,
    ends,
    guard,
    liveupdate,
    manager,
    seats,
    server,
)
from wodsync.agent.host import HostSide, to_stderr
from wodsync.agent.kinds import OPERATIONS as KIND_OPERATIONS
from wodsync.agent.kinds import egress
from wodsync.agent.manager import ManagerRecord
from wodsync.agent.protocol import (
    Answer,
    ApplyAnswer,
    ApplyRequest,
    HostPayload,
    ManageRequest,
    ObserveAnswer,
    ObserveRequest,
    VersionAnswer,
)

Operation = Callable[[Any, HostSide], Mapping[str, Any]]
Report = Callable[[Dict[str, Any]], None]


def _observe(payload: ObserveRequest, host: HostSide) -> ObserveAnswer:
    return batch.observe(payload, host)


def _apply(payload: ApplyRequest, host: HostSide) -> ApplyAnswer:
    return batch.apply(payload, host)


def _manage(payload: ManageRequest, host: HostSide) -> ManagerRecord:
    return manager.claim(payload)


def _version(payload: HostPayload, host: HostSide) -> VersionAnswer:
    return {"protocol": PROTOCOL, "python": sys.version.split()[0]}


OPERATIONS: dict[str, Operation] = {
    "observe": _observe, "apply": _apply, "version": _version, **KIND_OPERATIONS,
    "manage": _manage, **seats.OPERATIONS, **ends.OPERATIONS, **guard.OPERATIONS,
    **appliance.OPERATIONS, **checks.OPERATIONS, **liveupdate.OPERATIONS}


# What one-shot calls compute once per call and a long-lived agent must ask again per request.
PER_REQUEST_CACHES: list[Callable[[], None]] = [egress.backend.cache_clear]


def _watch_stdin(host: HostSide, fd: int) -> None:
    """EOF on stdin means the controller no longer wants this call. Raw reads of the file
    descriptor: a thread blocked in `sys.stdin`'s buffered reader would hold its lock and
    abort the interpreter at exit."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    host.stop_requested.set()


def serve(request: Any, stdin_fd: int | None = None, stop: threading.Event | None = None,
          report: Report | None = None) -> Answer:
    """Answer one request as a JSON-ready dict; errors are data, never tracebacks. The call
    is asked to stop when `stdin_fd` ends (one-shot) or `stop` is set (persistent agent).
    When the request asks for progress it goes to `report` (default: stderr, one-shot)."""
    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        got = request.get("protocol") if isinstance(request, dict) else None
        return {"ok": False, "error": f"protocol mismatch: the controller speaks version "
                                      f"{got}, this agent {PROTOCOL}; use one wodsync release"}
    op = OPERATIONS.get(request.get("op"))  # type: ignore[arg-type]
    if op is None:
        return {"ok": False, "error": f"unknown operation {request.get('op')!r} (known: "
                                      f"{', '.join(sorted(OPERATIONS))})"}
    payload = request.get("payload") or {}
    host = HostSide(payload.get("state_dir", "/var/lib/wodsync"), payload.get("owner"))
    if stop is not None:
        host.stop_requested = stop
    if request.get("progress"):
        host.report = report or to_stderr
    if stdin_fd is not None:
        threading.Thread(target=_watch_stdin, args=(host, stdin_fd), daemon=True).start()
    try:
        return {"ok": True, "result": op(payload, host)}
    except Exception as exc:  # reported to the controller as data, with the host's message
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _persistent(request: Any, stop: threading.Event, report: Report) -> Answer:
    for clear in PER_REQUEST_CACHES:  # a long-lived agent asks again at each request
        clear()
    return serve(request, stop=stop, report=report)


def main(request: Any, digest: str = "") -> None:
    """One request (`python3 -c LOADER` with a request), or, with none, the persistent agent
    (`agent.server`) until stdin ends."""
    os.umask(0o022)  # what wodsync installs for students must be readable by them
    if request is None:
        server.run(digest, _persistent)
        return
    answer = serve(request, sys.stdin.fileno())
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
