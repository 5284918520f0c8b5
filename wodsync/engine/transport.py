"""How commands travel to a host: SSH (fabric, pinned host key) or this machine (local).

A transport runs one argv with a stdin payload and returns exit status and output. Over SSH it
uses a raw paramiko channel on fabric's connection — invoke's `in_stream` reads stdin a byte at
a time — with TCP_NODELAY set (≈18 ms per command instead of ≈48 ms) and the host key checked
against the key pinned in the host file under paramiko's `RejectPolicy`: fabric's default
`AutoAddPolicy` would trust any key. One transport per host per thread; never shared.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko
from fabric import Connection

from wodsync.catalog.models import Host

CONNECT_TIMEOUT = 10.0


class TransportError(Exception):
    """The host could not be reached or refused us; the message says which and why."""


class HostKeyError(TransportError):
    """The host's key is unknown or differs from the pinned one."""


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: bytes
    stderr: bytes


class Transport(Protocol):
    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 600) -> CommandResult:
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
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


class SSHTransport:
    """Fabric connection with the pinned key, opened on first use."""

    def __init__(self, name: str, host: Host) -> None:
        self.name = name
        self.host = host
        self.conn = Connection(
            host.address, user=host.user, port=host.port, connect_timeout=CONNECT_TIMEOUT,
            connect_kwargs={"key_filename": [str(Path(host.identity).expanduser())]
                            if host.identity else None,
                            "look_for_keys": host.identity is None, "allow_agent": False})
        client = self.conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().clear()
        client.get_host_keys().add(_known_name(host.address, host.port),
                                   _pinned_key(host).get_name(), _pinned_key(host))
        self._open = False

    def _connect(self) -> paramiko.Transport:
        if not self._open:
            try:
                self.conn.open()
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(
                    f"host key of {self.name} changed: got {fingerprint(exc.key)}, pinned "
                    f"{fingerprint(exc.expected_key)}; refusing to connect") from None
            except paramiko.SSHException as exc:
                if "not found in known_hosts" in str(exc):
                    raise HostKeyError(f"host key of {self.name} is unknown: {exc}") from None
                raise TransportError(f"{self.name}: {exc}") from None
            except (OSError, TimeoutError) as exc:
                raise TransportError(f"{self.name}: cannot connect to "
                                     f"{self.host.address}:{self.host.port}: {exc}") from None
            sock = self.conn.transport.sock
            if hasattr(sock, "setsockopt"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open = True
        return self.conn.transport

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 600) -> CommandResult:
        transport = self._connect()
        try:
            chan = transport.open_session(timeout=CONNECT_TIMEOUT)
            chan.settimeout(timeout)
            chan.exec_command(shlex.join(argv))
            chan.sendall(stdin)
            chan.shutdown_write()
            stdout = _drain(chan)
            stderr = chan.makefile_stderr("rb").read()
            return CommandResult(chan.recv_exit_status(), stdout, stderr)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._open = False
            raise TransportError(f"{self.name}: connection lost: {exc}") from None

    def close(self) -> None:
        self.conn.close()


def _drain(chan: paramiko.Channel) -> bytes:
    chunks = []
    while True:
        data = chan.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class LocalTransport:
    """This machine, as WoD's `ansible_connection=local`: same scripts, no SSH."""

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 600) -> CommandResult:
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                              check=False)
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        pass


def connect(name: str, host: Host) -> Transport:
    return LocalTransport() if host.transport == "local" else SSHTransport(name, host)


def scan_host_key(address: str, port: int) -> paramiko.PKey:
    """The key a server presents, fetched without authenticating (for `host add`)."""
    try:
        sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise TransportError(f"cannot connect to {address}:{port}: {exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT)
        return transport.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise TransportError(f"{address}:{port}: {exc}") from None
    finally:
        transport.close()
