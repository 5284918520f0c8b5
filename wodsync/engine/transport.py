"""How commands travel to a host: SSH (fabric, pinned host key) or this machine (local).

A transport runs one argv with a stdin payload and returns exit status and output. Over SSH it
uses a raw paramiko channel on fabric's connection — invoke's `in_stream` reads stdin a byte at
a time — with TCP_NODELAY set (≈18 ms per command instead of ≈48 ms) and the host key checked
against the key pinned in the host file under paramiko's `RejectPolicy`: fabric's default
`AutoAddPolicy` would trust any key. One connection per host, opened on first use and shared by
the calls of one process (channels are independent; opening the connection is locked).

The command's stdin stays open while it runs: closing it is how the controller tells the agent
to stop at its next safe point (`Cancel.hard`, a second Ctrl-C), so the host side never outlives
the controller's wish to stop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import paramiko
from fabric import Connection

from wodsync.catalog.models import Host

CONNECT_TIMEOUT = 10.0
STOP_GRACE = 60.0      # how long a stopped agent may take to reach its safe point and answer
# paramiko logs a traceback of its own for a peer that is not an SSH server; the error that
# matters reaches the caller as TransportError.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class TransportError(Exception):
    """The host could not be reached or refused us; the message says which and why."""


class HostKeyError(TransportError):
    """The host's key is unknown or differs from the pinned one."""


@dataclass
class Cancel:
    """A controller's wish to stop: `soft` starts nothing new, `hard` stops agents too."""

    soft: threading.Event = field(default_factory=threading.Event)
    hard: threading.Event = field(default_factory=threading.Event)


# Called with each piece of the command's stderr as it arrives (progress lines of a long call).
OnStderr = Callable[[bytes], None]


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: bytes
    stderr: bytes


class Stream(Protocol):
    """A long-lived command's stdin and output (the persistent agent's wire)."""

    def send(self, data: bytes) -> None:
        """All of `data`; OSError when the command is gone."""

    def recv(self) -> bytes:
        """The next bytes of stdout, blocking; b"" once it ended."""

    def recv_stderr(self) -> bytes:
        """The next bytes of stderr, blocking; b"" once it ended."""

    def close(self) -> None:
        """Close stdin and the streams; the command ends (or is ended)."""


class Closeable(Protocol):
    def close(self) -> None:
        ...


class Transport(Protocol):
    # The persistent agent this transport carries (engine.persistent), closed with it.
    agent: Closeable | None

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 3600,
            cancel: Cancel | None = None, on_stderr: OnStderr | None = None) -> CommandResult:
        ...

    def open_stream(self, argv: list[str]) -> Stream:
        ...

    def close(self) -> None:
        ...


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:…` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _pinned_key(host: Host) -> paramiko.PKey:
    if not host.host_key:
        raise HostKeyError("no host_key pinned in the host file (see `wodsync host add`)")
    kind, data = host.host_key.split(" ", 1)
    try:
        return paramiko.PKey.from_type_string(kind, base64.b64decode(data))
    except (binascii.Error, ValueError, paramiko.SSHException) as exc:
        raise HostKeyError(f"the pinned host_key is not a valid {kind} key ({exc}); "
                           "pin it again with `wodsync host add`") from None


def _os_error(exc: BaseException) -> str:
    """`[Errno 111] Connection refused` → `connection refused`; never `[Errno None]`."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        exc = next(iter(exc.errors.values()))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc) or type(exc).__name__
    return text.replace("[Errno None] ", "")


class SSHTransport:
    """Fabric connection with the pinned key, opened on first use."""

    def __init__(self, name: str, host: Host) -> None:
        self.name = name
        self.host = host
        key = _pinned_key(host)
        keys: dict[str, object] = {"key_filename": [str(Path(host.identity).expanduser())]} \
            if host.identity else {}
        self.conn = Connection(
            host.address, user=host.user, port=host.port, connect_timeout=CONNECT_TIMEOUT,
            connect_kwargs={**keys, "look_for_keys": host.identity is None,
                            "allow_agent": False, "banner_timeout": CONNECT_TIMEOUT,
                            "auth_timeout": CONNECT_TIMEOUT})
        client = self.conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().clear()
        client.get_host_keys().add(_known_name(host.address, host.port), key.get_name(), key)
        self._open = False
        self._lock = threading.Lock()
        self.agent: Closeable | None = None

    def _open_connection(self) -> None:
        where = f"{self.host.address}:{self.host.port}"
        try:
            self.conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"host key of {self.name} changed: got {fingerprint(exc.key)}, pinned "
                f"{fingerprint(exc.expected_key)}; refusing to connect") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(f"host key of {self.name} is unknown: {exc}") from None
            if "banner" in str(exc).lower() or "no existing session" in str(exc).lower():
                raise TransportError(f"{where} does not speak SSH (no SSH banner within "
                                     f"{CONNECT_TIMEOUT:g} s)") from None
            raise TransportError(f"{where}: {_os_error(exc)}") from None
        except (OSError, TimeoutError, EOFError) as exc:
            raise TransportError(f"cannot connect to {where}: {_os_error(exc)}") from None
        sock = self.conn.transport.sock
        if hasattr(sock, "setsockopt"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _connect(self) -> paramiko.Transport:
        with self._lock:
            if not self._open or not self.conn.transport or not self.conn.transport.active:
                self._open_connection()
                self._open = True
            return self.conn.transport

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 3600,
            cancel: Cancel | None = None, on_stderr: OnStderr | None = None) -> CommandResult:
        transport = self._connect()
        try:
            chan = transport.open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(shlex.join(argv))
            chan.sendall(stdin)
            stdout, stderr = _collect(chan, timeout, cancel, on_stderr)
            return CommandResult(chan.recv_exit_status(), stdout, stderr)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._open = False
            raise TransportError(f"connection lost: {_os_error(exc)}") from None

    def open_stream(self, argv: list[str]) -> Stream:
        transport = self._connect()
        try:
            chan = transport.open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._open = False
            raise TransportError(f"connection lost: {_os_error(exc)}") from None
        return _ChannelStream(chan)

    def tunnel(self, address: str, port: int, timeout: float) -> paramiko.Channel:
        """A TCP connection from the host to `address:port` on its side (SSH `direct-tcpip`,
        on the open connection): a loopback port of the host, reached without running
        anything there (the daemon's hub probe). OSError when the host could not connect
        (nothing listens there), TransportError when the host itself is not reached."""
        transport = self._connect()
        try:
            chan = transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0),
                                          timeout=timeout)
        except paramiko.ChannelException as exc:
            raise OSError(f"{self.name} could not connect to {address}:{port}: "
                          f"{exc.text or exc.code}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._open = False
            raise TransportError(f"{self.name}: no tunnel to {address}:{port}: "
                                 f"{_os_error(exc)}") from None
        chan.settimeout(timeout)
        return chan

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()
        self.conn.close()


class _ChannelStream:
    """A command on its own SSH channel of the host's connection."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def send(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except (paramiko.SSHException, EOFError) as exc:
            raise OSError(f"channel closed: {_os_error(exc)}") from None

    def recv(self) -> bytes:
        try:
            return bytes(self.chan.recv(1 << 16))
        except (paramiko.SSHException, OSError, EOFError):
            return b""

    def recv_stderr(self) -> bytes:
        try:
            return bytes(self.chan.recv_stderr(1 << 16))
        except (paramiko.SSHException, OSError, EOFError):
            return b""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()
        self.chan.close()


def _collect(chan: paramiko.Channel, timeout: float, cancel: Cancel | None,
             on_stderr: OnStderr | None = None) -> tuple[bytes, bytes]:
    """Read until the command ends; stdin is closed when the command is done — or earlier,
    when the controller wants the agent to stop."""
    out, err = [], []
    chan.settimeout(0.2)
    deadline = time.monotonic() + timeout
    stopping = False
    while True:
        if cancel and cancel.hard.is_set() and not stopping:
            chan.shutdown_write()
            stopping, deadline = True, min(deadline, time.monotonic() + STOP_GRACE)
        if time.monotonic() > deadline:
            raise TimeoutError("the command did not finish in time")
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(1 << 16))
            if on_stderr:
                on_stderr(err[-1])
        try:
            data = chan.recv(1 << 16)
        except TimeoutError:
            continue
        if not data:
            break
        out.append(data)
    chan.shutdown_write()
    while chan.recv_stderr_ready():
        err.append(chan.recv_stderr(1 << 16))
    return b"".join(out), b"".join(err)


class LocalTransport:
    """This machine, as WoD's `ansible_connection=local`: same scripts, no SSH.

    The agent runs in a session of its own, so a Ctrl-C at the terminal reaches the controller
    only; the controller then decides whether the agent is told to stop (stdin closed).
    """

    def __init__(self) -> None:
        self.agent: Closeable | None = None

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 3600,
            cancel: Cancel | None = None, on_stderr: OnStderr | None = None) -> CommandResult:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(stdin)
        proc.stdin.flush()
        out, err = _collect_local(proc, timeout, cancel, on_stderr)
        return CommandResult(proc.wait(), out, err)

    def open_stream(self, argv: list[str]) -> Stream:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]}: {_os_error(exc)}") from None
        return _ProcessStream(proc)

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()


class _ProcessStream:
    """A command of this machine, in a session of its own (a Ctrl-C at the terminal reaches
    the controller only)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.proc = proc
        self._stdin, self._stdout, self._stderr = proc.stdin, proc.stdout, proc.stderr

    def send(self, data: bytes) -> None:
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except ValueError as exc:  # closed
            raise OSError(str(exc)) from None

    def recv(self) -> bytes:
        return _read(self._stdout)

    def recv_stderr(self) -> bytes:
        return _read(self._stderr)

    def close(self) -> None:
        """stdin closed, then the command's end awaited (its running requests stop at a safe
        point); its output streams are closed by their readers at their end, never under
        them."""
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _read(stream: IO[bytes]) -> bytes:
    """The next bytes; at the end the stream is closed here, by its only reader."""
    try:
        data = os.read(stream.fileno(), 1 << 16)
    except (OSError, ValueError):
        data = b""
    if not data:
        with contextlib.suppress(OSError):
            stream.close()
    return data


def _collect_local(proc: subprocess.Popen[bytes], timeout: float, cancel: Cancel | None,
                   on_stderr: OnStderr | None = None) -> tuple[bytes, bytes]:
    assert proc.stdin and proc.stdout and proc.stderr
    out: list[bytes] = []
    err: list[bytes] = []
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline = time.monotonic() + timeout
    while streams:
        if cancel and cancel.hard.is_set() and not proc.stdin.closed:
            proc.stdin.close()
            deadline = min(deadline, time.monotonic() + STOP_GRACE)
        if time.monotonic() > deadline:
            proc.kill()
            raise TransportError("the command did not finish in time")
        ready, _, _ = select.select(list(streams), [], [], 0.2)
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if data:
                streams[fd].append(data)
                if on_stderr and fd == proc.stderr.fileno():
                    on_stderr(data)
            else:
                del streams[fd]
    if not proc.stdin.closed:
        proc.stdin.close()
    return b"".join(out), b"".join(err)


def connect(name: str, host: Host) -> Transport:
    return LocalTransport() if host.transport == "local" else SSHTransport(name, host)


def scan_host_key(address: str, port: int) -> paramiko.PKey:
    """The key a server presents, fetched without authenticating (for `host add`)."""
    try:
        sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise TransportError(f"cannot connect to {address}:{port}: {_os_error(exc)}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = CONNECT_TIMEOUT
        transport.start_client(timeout=CONNECT_TIMEOUT)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as exc:
        raise TransportError(f"{address}:{port} does not answer as an SSH server: "
                             f"{_os_error(exc)}") from None
    finally:
        transport.close()
