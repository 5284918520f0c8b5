"""A catalog for the seat hand-over tests: one local host, one pool of 8 seats, a workshop with
five notebooks and a cleanup hook, a short workshop that expires in seconds, and a workshop to
remove while it has sessions.

Accounts use the prefix `wodtr` (uids 58501-58508); homes live under
/home/wodsync-test-handover. Each test's catalog can be copied and its host moved to SSH.
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
from pathlib import Path

from helpers import remove_test_accounts
from sshd import SSHD, Sshd

PREFIX, UID_BASE = "wodtr", 58500
HOMES = Path("/home/wodsync-test-handover")
NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# {{ WKSHP }}"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["1 + 1"]},
    ],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def taken() -> str | None:
    """Why the lab's names or uids cannot be used here, or None."""
    for entry in pwd.getpwall():
        ours = entry.pw_name.startswith(PREFIX)
        in_range = UID_BASE < entry.pw_uid <= UID_BASE + 8
        if ours != in_range and (ours or in_range):
            return (f"account {entry.pw_name} (uid {entry.pw_uid}) is not the lab's but uses "
                    f"its prefix {PREFIX} or uids {UID_BASE + 1}-{UID_BASE + 8}")
    return None


def cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def write_catalog(root: Path, tmp: Path) -> None:
    HOMES.mkdir(mode=0o755, exist_ok=True)
    nb = json.dumps(NOTEBOOK)
    hand = "catalog/workshops/WKSHP-Hand"
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n  - name: far\n",
        "catalog/students.yaml": f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: 8\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/variables.yaml": "BRANDING: Lab\n",
        f"{hand}/workshop.yaml":
            "name: Hand-over\ncapacity: 4\nseats: {first: 1, last: 4}\nlocation: lab\n"
            "duration: 2\nhooks: {cleanup: scripts/cleanup.sh}\n",
        f"{hand}/1-Intro.ipynb": nb,
        f"{hand}/2-Deep.ipynb": nb,
        f"{hand}/3-Big.ipynb": nb,
        f"{hand}/4-Good.ipynb": nb,
        f"{hand}/5-Linked.ipynb": nb,
        f"{hand}/scripts/cleanup.sh": "#!/bin/bash\necho \"cleanup of $STUDENT\"\n",
        "catalog/workshops/WKSHP-Short/workshop.yaml":
            "name: Short\ncapacity: 1\nseats: {first: 5, last: 5}\nlocation: lab\n"
            "duration: 0.001\n",
        "catalog/workshops/WKSHP-Short/1-Intro.ipynb": nb,
        "catalog/workshops/WKSHP-Gone/workshop.yaml":
            "name: Gone\ncapacity: 2\nseats: {first: 6, last: 7}\nlocation: lab\n"
            "duration: 1\n",
        "catalog/workshops/WKSHP-Gone/1-Intro.ipynb": nb,
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / f"{hand}/scripts/cleanup.sh").chmod(0o755)


def over_ssh(root: Path, copy: Path, sshd: Sshd) -> None:
    """A copy of the catalog whose host is reached over SSH (the same machine, so the same
    accounts and seat records)."""
    shutil.copytree(root, copy)
    host = copy / "hosts/lab1.yaml"
    host.write_text(host.read_text().replace(
        "address: localhost\ntransport: local\n",
        f"address: 127.0.0.1\nport: {sshd.port}\nuser: root\nidentity: {sshd.client_key}\n"
        f"host_key: {sshd.host_pub}\n"))


def restart_sshd(workdir: Path) -> subprocess.Popen[bytes]:
    """The same sshd again (same port, same host key), after a stop."""
    with (workdir / "sshd.log").open("ab") as log:
        return subprocess.Popen([SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=log)


def locked(user: str) -> bool:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1].startswith("!")


def password_field(user: str) -> str:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1]


def processes_of(uid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) == uid:
                    found.append(int(status.parent.name))
                break
    return found


def as_student(user: str, *argv: str, data: bytes | None = None) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], input=data, check=True,
                   stdout=subprocess.DEVNULL)
