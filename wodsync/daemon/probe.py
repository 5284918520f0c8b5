"""A dead hub noticed in seconds: a cheap health probe of every host's hub, every `probe` s.

Why: the reconcile loop restarts a hub that is not running, but only when it reconciles the
host — at the next resync (600 s by default) — and every CREATE meanwhile fails. The probe is
one HTTP `GET /hub/api/health` (JupyterHub answers it without authentication or database work)
sent to the hub's own loopback port, reached through the host's transport: directly for a
`local` host, through an SSH `direct-tcpip` channel on the host's open connection for an `ssh`
host. Nothing runs on the host — an agent round trip would start a Python interpreter there
every time — and it asks what a CREATE needs: that the hub answers, not only that its
process exists.

A failed probe makes its host due at once (trigger `probe`): its reconcile observes the hub
down and starts it again. One probe-triggered reconcile per outage: while the hub stays down
the host is retried by its own back-off (a failed restart is a failed reconcile), and a hub
whose process runs but does not answer (which a reconcile cannot fix) is not reconciled again
every probe. A host busy reconciling is not probed (its job may be restarting the hub). The
gauge `wodsync_hub_up{host}` says what the last probe found.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from wodsync.catalog.models import Host
from wodsync.engine.connections import Connections
from wodsync.engine.transport import SSHTransport, TransportError
from wodsync.logs import FIELDS

PROBE_TIMEOUT = 5.0
log = logging.getLogger("wodsync.daemon")


class Stream(Protocol):
    def sendall(self, data: bytes) -> Any: ...
    def recv(self, size: int) -> bytes: ...
    def close(self) -> None: ...


def health_target(host: Host) -> tuple[str, int, str] | None:
    """(address, port, path) of the hub's health check as the host sees it, or None for a
    host without a hub or with an https API (not probed: the probe speaks plain HTTP to a
    loopback port)."""
    if host.hub is None:
        return None
    url = urlsplit(host.hub.api)
    if url.scheme != "http" or not url.hostname:
        return None
    return url.hostname, url.port or 80, url.path.rstrip("/") + "/health"


def _open(connections: Connections, name: str, host: Host, address: str,
          port: int) -> Stream:
    """A TCP connection to `address:port` from the host's side."""
    with connections.transport(name, host) as transport:
        if isinstance(transport, SSHTransport):
            return transport.tunnel(address, port, PROBE_TIMEOUT)
    return socket.create_connection((address, port), timeout=PROBE_TIMEOUT)


def probe_hub(connections: Connections, name: str, host: Host) -> str | None:
    """None when the host's hub answers its health check with 200, else why not (one line)."""
    target = health_target(host)
    if target is None:
        return None
    address, port, path = target
    try:
        stream = _open(connections, name, host, address, port)
    except TransportError as exc:
        return f"host not reached: {exc}"
    except OSError as exc:
        return f"the hub does not answer on {address}:{port}: {exc.strerror or exc}"
    try:
        stream.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\n\r\n".encode())
        status = stream.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as exc:
        return f"the hub did not answer its health check on {address}:{port}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    parts = status.split()
    if len(parts) >= 2 and parts[1] == "200":
        return None
    return f"the hub's health check on {address}:{port}{path} answered {status!r}"


class Prober:
    """Probes the hubs of `hosts()` every `every` seconds, side by side (a slow host's probe
    never delays another's); a failure calls `due(host)` once per outage."""

    def __init__(self, connections: Connections, hosts: Callable[[], dict[str, Host]],
                 busy: Callable[[], list[str]], due: Callable[[str], None],
                 up: Callable[[str, bool], None], every: float) -> None:
        self.connections, self.hosts, self.busy, self.due, self.up = (
            connections, hosts, busy, due, up)
        self.every = every
        self._down: dict[str, bool] = {}   # host → a probe-triggered reconcile was asked
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="wodsync-probe")

    def round(self) -> list[concurrent.futures.Future[None]]:
        """Start one probe of each probed host not busy and not still being probed."""
        busy = set(self.busy())
        started = []
        for name, host in sorted(self.hosts().items()):
            if health_target(host) is None or name in busy:
                continue
            with self._lock:
                if name in self._in_flight:
                    continue
                self._in_flight.add(name)
            started.append(self._pool.submit(self._probe, name, host))
        return started

    def _probe(self, name: str, host: Host) -> None:
        try:
            why = probe_hub(self.connections, name, host)
        finally:
            with self._lock:
                self._in_flight.discard(name)
        self.up(name, why is None)
        fields = {FIELDS: {"host": name}}
        with self._lock:
            was_down = name in self._down
            if why is None:
                self._down.pop(name, None)
            elif not was_down:
                self._down[name] = True
        if why is None:
            if was_down:
                log.info("hub of %s answers again", name, extra=fields)
            return
        if not was_down:
            managed = host.hub is not None and host.hub.manage
            log.warning("hub of %s is down: %s%s", name, why,
                        "; reconciling the host now" if managed else "", extra=fields)
            if managed:
                self.due(name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
