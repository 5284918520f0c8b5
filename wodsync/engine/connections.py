"""One open connection per host, shared by the seat operations of a long-running process.

A CREATE must cost one round trip, not an SSH handshake (≈ 150 ms) plus a round trip: the
session service and the daemon keep each host's connection open and run seat operations on it
side by side (SSH channels are independent), at most `CHANNELS` at once per host — sshd allows
10 sessions per connection by default. A host that could not be reached is remembered as down
for a while, so a CREATE fails over to another host without waiting for it each time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wodsync.agent.protocol import HostPayload
from wodsync.catalog.models import Host
from wodsync.engine import remote
from wodsync.engine.transport import Transport, TransportError, connect

CHANNELS = 8
# What a connection depends on, of a host file: the rest (hub, variables, …) never reopens it.
REACHED_BY = {"transport", "address", "port", "user", "identity", "host_key"}
DOWN_SECONDS = 30.0


@dataclass
class _Entry:
    key: str
    transport: Transport
    gate: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(CHANNELS))


class Connections:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._down: dict[str, tuple[float, str]] = {}

    def _entry(self, name: str, host: Host) -> _Entry:
        """The host's connection; a new one when how it is reached changed (address, key, …),
        not when another part of its file did: the daemon's job on a new revision and a seat
        operation made from the revision the host applied share it, and neither closes it
        under the other."""
        key = host.model_dump_json(include=REACHED_BY)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.key != key:
                if entry is not None:
                    with contextlib.suppress(Exception):
                        entry.transport.close()
                entry = self._entries[name] = _Entry(key, connect(name, host))
            return entry

    @contextlib.contextmanager
    def transport(self, name: str, host: Host) -> Iterator[Transport]:
        entry = self._entry(name, host)
        with entry.gate:
            yield entry.transport

    def call(self, name: str, host: Host, op: str, payload: HostPayload) -> Any:
        """One agent round trip on the host's open connection; a transport failure marks the
        host down for a while and is raised."""
        try:
            with self.transport(name, host) as transport:
                result = remote.call(transport, op, payload)
        except TransportError as exc:
            self.mark_down(name, str(exc))
            raise
        self._down.pop(name, None)
        return result

    def mark_down(self, name: str, reason: str) -> None:
        self._down[name] = (time.monotonic() + DOWN_SECONDS, reason)

    def down(self, name: str) -> str | None:
        """Why the host is considered down, or None."""
        until, reason = self._down.get(name, (0.0, ""))
        return reason if time.monotonic() < until else None

    def close(self) -> None:
        with self._lock:
            for entry in self._entries.values():
                with contextlib.suppress(Exception):
                    entry.transport.close()
            self._entries.clear()
