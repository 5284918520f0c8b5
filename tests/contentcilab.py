"""A catalog for content CI (`wodsync test`): one local host, a pool of four seats, a workshop
whose notebooks pass, one that breaks at a known cell, and the example catalog's largest
workshop moved onto this host — and `host_trace`, what of the host a seat could leave behind.

Accounts use the prefix `wodqc` and the pool uid_base 41400: seats 1-4 (uids 41401-41404) for
the tests, homes under /home/wodsync-test-contentci; seats 11-14 for bench/contentci.py, homes
under /home/wodsync-bench-contentci (root-owned, open to students, as a real home root is), so
the two never touch each other's accounts.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PREFIX, UID_BASE, SEATS = "wodqc", 41400, 4


@dataclass(frozen=True)
class Seats:
    """The pool's seats a lab uses (`first` … `first + SEATS - 1`) and its home root."""

    first: int = 1
    homes: Path = Path("/home/wodsync-test-contentci")

    @property
    def uids(self) -> range:
        return range(UID_BASE + self.first, UID_BASE + self.first + SEATS)


TESTS, BENCH = Seats(), Seats(11, Path("/home/wodsync-bench-contentci"))
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_WORKSHOPS = REPO / "catalog/workshops"
# The seats' kernels: a venv of the system's python3 with nbclient and ipykernel, readable by
# every account as a host's hub environment is (this machine's own venv may sit in a folder
# a seat cannot enter); made once and kept, as the hub tests keep theirs.
KERNEL_ENV = Path("/opt/wodsync-test/contentci")
KERNEL_PACKAGES = ("nbclient>=0.10", "ipykernel>=6.29")
HOST_VARIABLES = "variables: {WODBEFQDN: hub.wodqc.test, WODBEEXTFQDN: wodqc.test}\n"


def notebook(*cells: str) -> str:
    """A python3 notebook: a markdown title, then one code cell per source."""
    return json.dumps({
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# {{ WKSHP }}"]}]
        + [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": [source]} for source in cells],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5})


# Runs as the seat: its own uid (never root), in its notebook's folder, leaving files in the
# home and in /tmp for the release to take away.
GOOD = notebook(
    "import os, pwd\n"
    "me = pwd.getpwuid(os.geteuid()).pw_name\n"
    "assert os.geteuid() != 0 and me == os.environ['USER'] == '{{ STUDENT }}', me\n",
    "assert os.path.basename(os.getcwd()) == 'WKSHP-Good', os.getcwd()\n"
    "print(open('data/words.txt').read().split())\n",
    "open(os.path.expanduser('~/made-by-the-notebook.txt'), 'w').write('x')\n"
    "open('/tmp/wodqc-left-by-{{ STUDENT }}', 'w').write('x')\n",
    "%%bash\necho from bash as $(id -un)\n")
BROKEN = notebook("x = 1\n", "y = x / 0\n", "print('never reached')\n")
# Issue 21's checks: Good's pass once its solve script ran (score 100), Broken's never does.
CHECK_SOLVED = "#!/bin/sh\ntest -f \"$HOME/solved\" && exit 0\necho 'FAIL: no ~/solved'\nexit 1\n"
SOLVE = "#!/bin/sh\ntouch \"$HOME/solved\"\n"
CHECK_NEVER = "#!/bin/sh\necho 'FAIL: 42 expected'\nexit 1\n"


def example_largest() -> Path:
    """The example catalog's largest workshop: the most notebook bytes (its content)."""
    return max((d for d in EXAMPLE_WORKSHOPS.iterdir() if (d / "workshop.yaml").is_file()),
               key=lambda d: (sum(f.stat().st_size for f in d.rglob("*.ipynb")), d.name))


def _moved_here(folder: Path, out: Path, first: int) -> None:
    """An example workshop copied as is, but given this lab's seats and location: the keys
    that point at the rest of the example catalog (replays, alternates, badges) left out."""
    shutil.copytree(folder, out, symlinks=True)
    yaml = YAML()
    data = yaml.load((out / "workshop.yaml").read_text())
    for key in ("replay", "alternate_locations", "badge_image", "egress"):
        data.pop(key, None)
    data["seats"] = {"first": first + 2, "last": first + SEATS - 1}  # after the lab's own two
    data["capacity"] = SEATS - 2
    data["location"] = "lab"
    with (out / "workshop.yaml").open("w") as f:
        yaml.dump(data, f)


def write_catalog(root: Path, tmp: Path, lab: Seats = TESTS) -> None:
    lab.homes.mkdir(mode=0o755, exist_ok=True)
    first = lab.first
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: {first}\n"
            f"    last: {first + SEATS - 1}\n    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n"
            f"    home_root: {lab.homes}\n",
        "catalog/variables.yaml": (REPO / "catalog/variables.yaml").read_text(),
        "catalog/workshops/WKSHP-Good/workshop.yaml": _workshop("Good", first)
        + "checks:\n  - {name: solved, script: checks/solved.sh, solve: solve/solve.sh}\n",
        "catalog/workshops/WKSHP-Good/checks/solved.sh": CHECK_SOLVED,
        "catalog/workshops/WKSHP-Good/solve/solve.sh": SOLVE,
        "catalog/workshops/WKSHP-Good/1-Good.ipynb": GOOD,
        "catalog/workshops/WKSHP-Good/data/words.txt": "seat {{ STDID }} of {{ WKSHP }}\n",
        "catalog/workshops/WKSHP-Broken/workshop.yaml": _workshop("Broken", first + 1)
        + "checks:\n  - {name: answer, script: checks/answer.sh}\n",
        "catalog/workshops/WKSHP-Broken/checks/answer.sh": CHECK_NEVER,
        "catalog/workshops/WKSHP-Broken/0-Fine.ipynb": notebook("print('fine')\n"),
        "catalog/workshops/WKSHP-Broken/1-Broken.ipynb": BROKEN,
        "hosts/qc1.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                          f"pool: {PREFIX}\nstate_dir: {tmp}/state-qc1\n" + HOST_VARIABLES,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        if rel.endswith(".sh"):
            (root / rel).chmod(0o755)
    largest = example_largest()
    _moved_here(largest, root / "catalog/workshops" / largest.name, first)


def _workshop(name: str, seat: int) -> str:
    return (f"name: {name}\ncapacity: 1\nseats: {{first: {seat}, last: {seat}}}\n"
            "location: lab\nduration: 1\nkernels: [python3]\n")


def kernel_python() -> Path | str:
    """The kernel environment's interpreter, made when missing; a str says why it cannot be."""
    python = KERNEL_ENV / "bin/python"
    probe = [str(python), "-c", "import nbclient, ipykernel"]
    lock = KERNEL_ENV.with_name("contentci.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
            return python
        if not Path("/usr/bin/python3").exists():
            return "no /usr/bin/python3 to make the kernel environment from"
        for argv in (["/usr/bin/python3", "-m", "venv", str(KERNEL_ENV)],
                     [str(KERNEL_ENV / "bin/pip"), "install", "-q", *KERNEL_PACKAGES]):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                return f"{' '.join(argv[:4])} failed: {done.stderr.strip()[-300:]}"
    return python


def cleanup(lab: Seats = TESTS) -> None:
    """The lab's accounts and groups (by name *and* uid, its seats only) and its homes."""
    for uid in lab.uids:
        name = f"{PREFIX}{uid - UID_BASE}"
        with contextlib.suppress(KeyError):
            if pwd.getpwnam(name).pw_uid == uid:
                subprocess.run(["userdel", name], check=False, capture_output=True)
        with contextlib.suppress(KeyError):
            if grp.getgrnam(name).gr_gid == uid:
                subprocess.run(["groupdel", name], check=False, capture_output=True)
    shutil.rmtree(lab.homes, ignore_errors=True)


def _tree(top: Path) -> list[tuple[Any, ...]]:
    """Every entry under `top` (links not followed): path, type and mode, owner, content."""
    found = []
    for folder, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found.append((str(path.relative_to(top)), st.st_mode, st.st_uid, st.st_gid,
                          content))
    return sorted(found)


def _home(home: Path) -> str | list[tuple[Any, ...]]:
    """A home's tree; `fresh` when it is what a free seat holds: /etc/skel as apply made it,
    or nothing, as every release leaves it (the next CREATE copies /etc/skel again)."""
    tree = _tree(home)
    skel = [entry[0:2] + entry[4:] for entry in _tree(Path("/etc/skel"))]
    return "fresh" if not tree or [e[0:2] + e[4:] for e in tree] == skel else tree


def _owned_in(folder: str, uids: range) -> list[str]:
    """Entries of the lab's uids in a shared folder (not descending other filesystems)."""
    out = subprocess.run(["find", folder, "-xdev", "-uid", f"+{uids[0] - 1}", "-uid",
                          f"-{uids[-1] + 1}", "-print"], capture_output=True, text=True,
                         check=False).stdout
    return sorted(out.splitlines())


def host_trace(state_dir: Path, lab: Seats = TESTS) -> dict[str, Any]:
    """What the host holds of the pool: accounts (passwd and shadow lines), groups, the seats'
    records, every home's tree, the uids' entries in /tmp, /var/tmp and /dev/shm, their
    processes and crontabs (no hub in this lab: no hub users or groups to compare)."""
    names = [f"{PREFIX}{uid - UID_BASE}" for uid in lab.uids]

    def lines(db: str) -> list[str]:
        out = subprocess.run(["getent", db, *names], capture_output=True, text=True,
                             check=False)
        return sorted(out.stdout.splitlines())

    uids = [str(uid) for uid in lab.uids]
    ps = subprocess.run(["ps", "-o", "pid=,comm=", "-u", ",".join(uids)], capture_output=True,
                        text=True, check=False).stdout
    records = state_dir / "seats"
    return {
        "passwd": lines("passwd"), "shadow": lines("shadow"), "group": lines("group"),
        # the seats' records (their `.lock` files are wodsync's own, kept for the next call)
        "records": sorted(p.name for p in records.glob("*.json")) if records.is_dir() else [],
        "homes": {p.pw_name: _home(Path(p.pw_dir)) for p in pwd.getpwall()
                  if p.pw_name in names and Path(p.pw_dir).is_dir()},
        "shared": {d: _owned_in(d, lab.uids) for d in ("/tmp", "/var/tmp", "/dev/shm")},
        "processes": ps.split(),
        "crontabs": sorted(n for n in names if Path("/var/spool/cron/crontabs", n).exists()),
        "srv_git": sorted(n for n in names if Path("/srv/git", f"{n}.git").exists()),
    }
