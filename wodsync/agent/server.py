"""The persistent agent: one long-lived python3 per host, answering requests out of order.

A one-shot call pays an exec channel and a python3 start (with the agent's import) for every
operation, about 400 ms seen from the controller while servers boot beside it — more than the
seat operation itself. So the controller keeps one agent per host on the connection it already
holds and sends it requests as JSON lines (`{"id", "request"}`); each runs in a thread of its
own and its answer comes back as a line (`{"id", "answer"}`) when it is ready, whatever the
order; a request that asks for progress gets `{"id", "progress"}` lines before it. The
operations are the one-shot table (`main.OPERATIONS`), served by the same `main.serve`:
nothing changes in what a request may do, and no lock is held across requests — each takes the
host's locks as a one-shot call does, for its own duration.

Stopping: `{"cancel": id}` asks that request to stop at its next safe point, as closing a
one-shot call's stdin does; the end of stdin (the controller gone, its connection lost) asks
every running request to, and the process ends once they have answered — the host side never
outlives the controller's wish to stop.

The agent's first line is `{"ready": <digest of its sources>, "protocol", "pid"}`: the
controller checks the digest against its own and starts a new agent when they differ. Before
it, the agent takes the protocol streams for itself: a hook or a package manager it starts
inherits /dev/null as stdin and stdout, so nothing a child prints can corrupt an answer and no
child reads a request.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, BinaryIO, Callable, Dict

from wodsync.agent import PROTOCOL

# (request, stop, report): `report` sends a progress step of the request while it runs.
Serve = Callable[[Any, threading.Event, Callable[[Dict[str, Any]], None]], Any]


class Wire:
    """The protocol's two streams, private to the agent; answers written whole, one at a
    time."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self.reader: BinaryIO = os.fdopen(os.dup(0), "rb")
        self.writer = os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self._lock:
            try:
                while data:
                    data = data[os.write(self.writer, data):]
            except OSError:
                pass  # the controller is gone: nobody reads the answer


class Agent:
    """The requests running in this process, by id."""

    def __init__(self, wire: Wire, serve: Serve) -> None:
        self.wire = wire
        self.serve = serve
        self.running: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and "cancel" in message:
            with self._lock:
                stop = self.running.get(message["cancel"])
            if stop is not None:
                stop.set()
            return
        if not isinstance(message, dict) or "request" not in message:
            self.wire.send({"id": None, "answer": {"ok": False, "error": "not a request"}})
            return
        rid = message.get("id")
        stop = threading.Event()
        with self._lock:
            self.running[rid] = stop
        # Before anything runs: the controller may send again a request this agent never
        # said it took, and never one it did.
        self.wire.send({"id": rid, "taken": True})
        thread = threading.Thread(target=self._answer, args=(rid, message["request"], stop))
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _answer(self, rid: Any, request: Any, stop: threading.Event) -> None:
        def report(step: Dict[str, Any]) -> None:
            self.wire.send({"id": rid, "progress": step})

        try:
            answer = self.serve(request, stop, report)
        finally:
            with self._lock:
                self.running.pop(rid, None)
        self.wire.send({"id": rid, "answer": answer})

    def stop_all(self) -> None:
        """The controller is gone: every running request stops at its next safe point."""
        with self._lock:
            for stop in self.running.values():
                stop.set()
        for thread in self._threads:
            thread.join()


def run(digest: str, serve: Serve) -> None:
    """Serve requests until stdin ends."""
    wire = Wire()
    agent = Agent(wire, serve)
    wire.send({"ready": digest, "protocol": PROTOCOL, "pid": os.getpid()})
    for line in wire.reader:
        if line.strip():
            agent.receive(line)
    agent.stop_all()
