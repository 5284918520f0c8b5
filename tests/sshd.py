"""A real OpenSSH server on loopback for tests: own config, host key and authorized key."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    host_pub: str          # "ssh-ed25519 AAAA…"
    client_key: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wodsync-test",
                    "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def start_sshd(workdir: Path, client_key: Path | None = None, address: str = "127.0.0.1",
               port: int | None = None, wrap: tuple[str, ...] = (), extra: str = "",
               user_keys: bool = False) -> Sshd:
    """Start sshd listening on `address`; `wrap` is an argv prefix (a namespace entry) for it,
    `extra` more sshd_config lines (a `ForceCommand`); `user_keys`: each account's own
    `~/.ssh/authorized_keys` is read too (an appliance)."""
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    host_pub = keygen(workdir / "host_key")
    if client_key is None:
        client_key = workdir / "client_key"
        keygen(client_key)
    (workdir / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    port = port or free_port()
    (workdir / "sshd_config").write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {workdir / 'host_key'}\n"
        f"PidFile {workdir / 'sshd.pid'}\nAuthorizedKeysFile {workdir / 'authorized_keys'}"
        f"{' .ssh/authorized_keys' if user_keys else ''}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nMaxSessions 50\n"
        "MaxStartups 50\n" + extra)
    with (workdir / "sshd.log").open("wb") as log:
        proc = subprocess.Popen([*wrap, SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(7) == b"SSH-2.0":
                    return Sshd(port, host_pub, client_key, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"sshd did not start: {(workdir / 'sshd.log').read_text()}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_sessions(server: Sshd) -> int:
    """Drop every open SSH session of `server`, as a network cut or a host crash would."""
    victims = descendants(server.process.pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(victims)
