"""The controller's end of the persistent agent (`agent.server`): one long-lived agent per
transport, requests multiplexed over its stdin and answered out of order.

Why: a one-shot call starts an exec channel and a python3 for every operation (≈ 400 ms seen
from the controller while servers boot on the host); a CREATE needs one operation. The agent is
started on first use, on the connection the transport already holds, and restarted on the next
call when it has died (the host rebooted, someone killed it) — transparently for a request that
never reached it, never for one it may have begun: an operation is never run twice. Its first
line names the digest of the sources it runs; an agent that runs other code than this
controller's is not used.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wodsync.engine.transport import STOP_GRACE, Cancel, Stream, TransportError

READY_TIMEOUT = 60.0   # python3 start and the import of the agent on a loaded host
STDERR_KEPT = 4096


class AgentGone(TransportError):
    """The agent ended while a request was in flight: it may have been partly done."""


class _NotTaken(TransportError):
    """The agent ended before it said it took the request: nothing of it ran."""


# Called with each progress step the agent sends for a request while it runs.
Step = Callable[[dict[str, Any]], None]


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None
    error: str | None = None
    step: Step | None = None
    taken: bool = False  # the agent said it took the request (before running any of it)


class _Process:
    """One started agent: its stream, the requests waiting for an answer, its reader."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.ready = threading.Event()
        self.hello: dict[str, Any] = {}
        self.ended: str | None = None  # why it ended, once it has
        self.stderr = b""
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        for target in (self._read, self._drain):
            threading.Thread(target=target, daemon=True, name="wodsync-agent").start()

    def expect(self, rid: int, step: Step | None = None) -> _Waiter:
        waiter = _Waiter(step=step)
        with self._lock:
            if self.ended is not None:
                waiter.error = self.ended
                waiter.done.set()
            self._waiters[rid] = waiter
        return waiter

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        with self._send_lock:
            self.stream.send(data)

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self.stream.recv()
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._receive(line)
        self._end("the agent ended" + (f": {self.tail()}" if self.tail() else ""))

    def _receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # not ours: the agent writes only JSON lines
        if "ready" in message:
            self.hello = message
            self.ready.set()
            return
        if "progress" in message:
            self._progress(message)
            return
        if "taken" in message:
            with self._lock:
                taken = self._waiters.get(message.get("id"))
            if taken is not None:
                taken.taken = True
            return
        with self._lock:
            waiter = self._waiters.pop(message.get("id"), None)
        if waiter is not None:
            waiter.answer = message.get("answer")
            waiter.done.set()

    def _progress(self, message: dict[str, Any]) -> None:
        """A step of a running request, to its listener (on this reader thread: kept short
        by the listener; one that fails never stops the reading)."""
        rid = message.get("id")
        with self._lock:
            waiter = self._waiters.get(rid) if isinstance(rid, int) else None
        if waiter is not None and waiter.step is not None \
                and isinstance(message["progress"], dict):
            with contextlib.suppress(Exception):
                waiter.step(message["progress"])

    def _drain(self) -> None:
        """stderr read as it comes (a full channel window would stall the agent); its tail is
        kept for the message when the agent ends."""
        while chunk := self.stream.recv_stderr():
            self.stderr = (self.stderr + chunk)[-STDERR_KEPT:]

    def tail(self) -> str:
        return self.stderr.decode(errors="replace").strip()[-500:]

    def _end(self, why: str) -> None:
        with self._lock:
            self.ended = why
            waiters, self._waiters = list(self._waiters.values()), {}
        self.ready.set()
        for waiter in waiters:
            waiter.error = why
            waiter.done.set()

    def forget(self, rid: int) -> None:
        with self._lock:
            self._waiters.pop(rid, None)

    def close(self) -> None:
        self.stream.close()


class PersistentAgent:
    """The agent of one transport. `open_stream(argv)` starts a command on the host; the
    agent is `argv` fed `hello` (the sources), expected to say it runs `digest`."""

    def __init__(self, open_stream: Callable[[list[str]], Stream], argv: list[str],
                 hello: bytes, digest: str, protocol: int) -> None:
        self._open_stream = open_stream
        self._argv, self._hello, self._digest, self._protocol = argv, hello, digest, protocol
        self._process: _Process | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running agent's pid on the host (None before its first start)."""
        process = self._process
        return process.hello.get("pid") if process and process.ended is None else None

    def _current(self, replacing: _Process | None = None) -> _Process:
        with self._lock:
            process = self._process
            if process is not None and process.ended is None and process is not replacing:
                return process
            if process is not None:
                process.close()
            self._process = process = self._start()
            return process

    def _start(self) -> _Process:
        process = _Process(self._open_stream(self._argv))
        self.starts += 1
        try:
            process.stream.send(self._hello)
        except OSError as exc:
            process.close()
            raise TransportError(f"the agent could not be started: {exc}") from None
        if not process.ready.wait(READY_TIMEOUT) or process.ended is not None:
            why = process.ended or f"no answer within {READY_TIMEOUT:g} s"
            process.close()
            raise TransportError(f"the agent did not start: {why}")
        hello = process.hello
        if hello.get("ready") != self._digest or hello.get("protocol") != self._protocol:
            process.close()
            raise TransportError("the host's agent runs other code than this controller "
                                 f"(protocol {hello.get('protocol')}); not used")
        return process

    def call(self, request: Any, cancel: Cancel | None = None, timeout: float = 3600,
             step: Step | None = None) -> Any:
        """The agent's answer to `request`. A request the agent never took — it could not be
        sent, or the agent ended before saying it took it (its first answer to every request,
        before any of it runs) — is sent once more to a new agent; one it took is an error
        when the agent ends (AgentGone), never sent again. `step` hears its progress."""
        rid = next(self._ids)
        stale: _Process | None = None
        for attempt in (1, 2):
            process = self._current(replacing=stale)
            waiter = process.expect(rid, step)
            try:
                process.send({"id": rid, "request": request})
                return self._wait(process, rid, waiter, cancel, timeout)
            except (OSError, _NotTaken) as exc:
                process.forget(rid)
                stale = process
                if attempt == 2:
                    raise TransportError(f"the agent does not take requests: {exc}") from None
        raise AssertionError("unreachable")

    def _wait(self, process: _Process, rid: int, waiter: _Waiter, cancel: Cancel | None,
              timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        cancelled = False
        while not waiter.done.wait(0.2):
            if cancel is not None and cancel.hard.is_set() and not cancelled:
                cancelled = True
                deadline = min(deadline, time.monotonic() + STOP_GRACE)
                with contextlib.suppress(OSError):  # it ended: the waiter hears it
                    process.send({"cancel": rid})
            if time.monotonic() > deadline:
                process.forget(rid)
                process.close()  # its other requests learn it ended
                raise TransportError("the agent did not answer in time; it was stopped")
        if waiter.error is not None and not waiter.taken:
            raise _NotTaken(waiter.error)
        if waiter.error is not None:
            raise AgentGone(f"{waiter.error} during the request (it may have been partly "
                            "done; never sent again)")
        return waiter.answer

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.close()
