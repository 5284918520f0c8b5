"""A catalog for content CI (`wodsync test`): one local host, a pool of four seats, a workshop
whose notebooks pass, one that breaks at a known cell, and the example catalog's largest
workshop moved onto this host — and `host_trace`, what of the host a seat could leave behind.

Accounts use the prefix `wodqc` (uids 41401-41404, pool uid_base 41400); homes live under
/home/wodsync-test-contentci (root-owned, open to students, as a real home root is).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from helpers import remove_test_accounts

PREFIX, UID_BASE, SEATS = "wodqc", 41400, 4
HOMES = Path("/home/wodsync-test-contentci")
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


def example_largest() -> Path:
    """The example catalog's largest workshop: the most notebook bytes (its content)."""
    return max((d for d in EXAMPLE_WORKSHOPS.iterdir() if (d / "workshop.yaml").is_file()),
               key=lambda d: (sum(f.stat().st_size for f in d.rglob("*.ipynb")), d.name))


def _moved_here(folder: Path, out: Path) -> None:
    """An example workshop copied as is, but given this lab's seats and location: the keys
    that point at the rest of the example catalog (replays, alternates, badges) left out."""
    shutil.copytree(folder, out, symlinks=True)
    yaml = YAML()
    data = yaml.load((out / "workshop.yaml").read_text())
    for key in ("replay", "alternate_locations", "badge_image", "egress"):
        data.pop(key, None)
    data["seats"] = {"first": 3, "last": SEATS}  # seats 1 and 2: the lab's own workshops
    data["capacity"] = SEATS - 2
    data["location"] = "lab"
    with (out / "workshop.yaml").open("w") as f:
        yaml.dump(data, f)


def write_catalog(root: Path, tmp: Path) -> None:
    HOMES.mkdir(mode=0o755, exist_ok=True)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/variables.yaml": (REPO / "catalog/variables.yaml").read_text(),
        "catalog/workshops/WKSHP-Good/workshop.yaml": _workshop("Good", 1),
        "catalog/workshops/WKSHP-Good/1-Good.ipynb": GOOD,
        "catalog/workshops/WKSHP-Good/data/words.txt": "seat {{ STDID }} of {{ WKSHP }}\n",
        "catalog/workshops/WKSHP-Broken/workshop.yaml": _workshop("Broken", 2),
        "catalog/workshops/WKSHP-Broken/0-Fine.ipynb": notebook("print('fine')\n"),
        "catalog/workshops/WKSHP-Broken/1-Broken.ipynb": BROKEN,
        "hosts/qc1.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                          f"pool: {PREFIX}\nstate_dir: {tmp}/state-qc1\n" + HOST_VARIABLES,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    largest = example_largest()
    _moved_here(largest, root / "catalog/workshops" / largest.name)


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


def cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


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


def _owned_in(folder: str) -> list[str]:
    """Entries of the pool's uids in a shared folder (not descending other filesystems)."""
    out = subprocess.run(["find", folder, "-xdev", "-uid", f"+{UID_BASE}", "-uid",
                          f"-{UID_BASE + SEATS + 1}", "-print"], capture_output=True, text=True,
                         check=False).stdout
    return sorted(out.splitlines())


def host_trace(state_dir: Path) -> dict[str, Any]:
    """What the host holds of the pool: accounts (passwd and shadow lines), groups, the seats'
    records, every home's tree, the uids' entries in /tmp, /var/tmp and /dev/shm, their
    processes and crontabs (no hub in this lab: no hub users or groups to compare)."""
    def lines(db: str) -> list[str]:
        out = subprocess.run(["getent", db], capture_output=True, text=True, check=False)
        return sorted(line for line in out.stdout.splitlines() if line.startswith(PREFIX))

    uids = [str(UID_BASE + n) for n in range(1, SEATS + 1)]
    ps = subprocess.run(["ps", "-o", "pid=,comm=", "-u", ",".join(uids)], capture_output=True,
                        text=True, check=False).stdout
    records = state_dir / "seats"
    return {
        "passwd": lines("passwd"), "shadow": lines("shadow"), "group": lines("group"),
        # the seats' records (their `.lock` files are wodsync's own, kept for the next call)
        "records": sorted(p.name for p in records.glob("*.json")) if records.is_dir() else [],
        "homes": {p.pw_name: _home(Path(p.pw_dir)) for p in pwd.getpwall()
                  if p.pw_name.startswith(PREFIX) and Path(p.pw_dir).is_dir()},
        "shared": {d: _owned_in(d) for d in ("/tmp", "/var/tmp", "/dev/shm")},
        "processes": ps.split(),
        "crontabs": sorted(p.name for p in Path("/var/spool/cron/crontabs").glob(f"{PREFIX}*")),
        "srv_git": sorted(p.name for p in Path("/srv/git").glob(f"{PREFIX}*")),
    }
