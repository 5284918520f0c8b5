"""Fake hosts on one machine: a network namespace each, with a private /etc and /home.

Every fake host gets a veth pair (10.231.N.1 on this side, 10.231.N.2 inside) and an sshd
running in a mount namespace where copies of /etc and /home are bound over the real ones, so
accounts wodsync creates there never touch this machine's and vanish with the copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sshd import Sshd, start_sshd

PREFIX = "wodtns"
ENTER = 'mount --bind "$1" /etc && mount --bind "$2" /home && shift 2 && exec "$@"'


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class FakeHost:
    name: str
    address: str
    root: Path          # holds etc/ and home/ as the host sees them
    sshd: Sshd

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host (its network and mount namespaces)."""
        return subprocess.run(["nsenter", "-t", str(self.sshd.process.pid), "-n", "-m", *argv],
                              capture_output=True, text=True, check=False)

    def stop(self) -> None:
        self.sshd.stop()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def netns_available() -> bool:
    probe = f"{PREFIX}-probe{os.getpid()}"  # xdist workers probe at once: one name each
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return done.returncode == 0


def _copy_if_there(src: str, dst: str) -> None:
    """Copy a file of /etc unless it vanished since it was listed: other tests (xdist workers)
    run useradd and friends beside us, whose temporary files come and go."""
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(src, dst)


def start_host(index: int, workdir: Path, client_key: Path, prefix: str = PREFIX) -> FakeHost:
    """Fake host `<prefix><index>` at 10.231.<index>.2 (a module's own prefix keeps its
    namespaces apart from other modules')."""
    name, veth = f"{prefix}{index}", f"{prefix}v{index}"
    outside, inside = f"10.231.{index}.1", f"10.231.{index}.2"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    ip("netns", "add", name)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    ip("addr", "add", f"{outside}/24", "dev", veth)
    ip("link", "set", veth, "up")
    ip("-n", name, "addr", "add", f"{inside}/24", "dev", "eth0")
    ip("-n", name, "link", "set", "eth0", "up")
    ip("-n", name, "link", "set", "lo", "up")
    root = workdir / name
    shutil.copytree("/etc", root / "etc", symlinks=True, copy_function=_copy_if_there,
                    ignore=shutil.ignore_patterns("*.lock", ".pwd.lock"))
    (root / "home").mkdir()
    wrap = ("ip", "netns", "exec", name, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", ENTER, "sh", str(root / "etc"), str(root / "home"))
    server = start_sshd(workdir / f"{name}-sshd", client_key, address=inside, port=22,
                        wrap=wrap)
    return FakeHost(name, inside, root, server)
