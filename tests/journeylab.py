"""A participant's host for the browser tests: one local host with a real JupyterHub, the pool
`wodtj` (uids 58301-58350, homes under /home/wodsync-test-journey) and workshops whose
notebooks are the example catalog's own (WKSHP-Python101's), so what a participant reads in
the browser is what the example catalog ships.

The hub's ports are taken below the kernel's ephemeral range (checked free, as test_demo's),
where no other worker's `free_port()` can take one between the check and the hub's start.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
from pathlib import Path

from helpers import remove_test_accounts
from hubs import HUB_PREFIX, PROXY

PROJECT = Path(__file__).resolve().parent.parent
# The brief said uids 60301-60350; pools must stay below 60000 (Debian's UID_MAX).
PREFIX, UID_BASE, SEATS = "wodtj", 58300, 50
SEAT_UIDS = range(UID_BASE + 1, UID_BASE + SEATS + 1)
HOMES = Path("/home/wodsync-test-journey")
HUB_TOKEN = "wodsync-journey-hub-" + os.urandom(8).hex()
API_TOKEN = "wodsync-journey-api-" + os.urandom(8).hex()
EXAMPLE = PROJECT / "catalog/workshops/WKSHP-Python101"
# Two workshops (title, seats): the second is where "one live workshop per address" is
# refused. Titles as a catalog would have them: the README's screenshots show these pages.
WORKSHOPS = {"WKSHP-Journey": ("Python 101 - A first look at the Python language", 1, 40),
             "WKSHP-Second": ("Python 102 - Files, functions and tests", 41, 50)}


def env() -> dict[str, str]:
    return dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, HUB_LAB_TOKEN=HUB_TOKEN)


def uids_taken_by_others() -> list[str]:
    """Accounts in this lab's uid range that are not this lab's: then the lab cannot run."""
    return [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
            if UID_BASE < e.pw_uid <= UID_BASE + SEATS and not e.pw_name.startswith(PREFIX)]


def cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def ports_below_ephemeral(count: int, skip: int = 4000) -> list[int]:
    """`count` consecutive free ports, `skip` ports below the ephemeral range and down (the
    demo test looks in the 3000 just below it: the two never race for one port)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for first in range(low - skip, 1024, -count):
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return list(range(first, first + count))
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports below the ephemeral range")


def write_catalog(root: Path, tmp: Path, ports: list[int], extra: dict[str, str] | None = None
                  ) -> None:
    """The lab's repository; `extra`: more files (relative path → text), e.g. mail settings."""
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  journey:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/variables.yaml": (PROJECT / "catalog/variables.yaml").read_text(),
        "hosts/lab.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                          f"pool: journey\nstate_dir: {tmp}/state-lab\nhub:\n"
                          f"  service: process\n  prefix: {HUB_PREFIX}\n  proxy: {PROXY}\n"
                          f"  config_dir: {tmp}/hubconf\n  data_dir: {tmp}/hubdata\n"
                          f"  ip: 127.0.0.1\n  port: {ports[0]}\n  hub_port: {ports[1]}\n"
                          f"  proxy_api_port: {ports[2]}\n"
                          "  token: {secret: HUB_LAB_TOKEN}\n",
    }
    for key, (title, first, last) in WORKSHOPS.items():
        files[f"catalog/workshops/{key}/workshop.yaml"] = (
            f"name: {title}\n"
            "description: Variables, types, loops and comprehensions, in a Jupyter notebook "
            "of your own.\n"
            f"capacity: {last - first + 1}\nseats: {{first: {first}, last: {last}}}\n"
            "location: lab\nduration: 2\npresenter: Ada Example\nrole: Developer Advocate\n")
        for notebook in EXAMPLE.glob("*.ipynb"):
            files[f"catalog/workshops/{key}/{notebook.name}"] = notebook.read_text()
    # A scored step, so that the end shows a score on the session page and in the ended mail.
    files["catalog/workshops/WKSHP-Journey/workshop.yaml"] += \
        "checks:\n  - {name: home, script: checks/home.sh}\n"
    files["catalog/workshops/WKSHP-Journey/checks/home.sh"] = \
        '#!/bin/sh\n[ -d "$HOME" ] || { echo "FAIL: your home is gone"; exit 1; }\n'
    for template in (PROJECT / "templates/hub").glob("*.j2"):
        files[f"templates/hub/{template.name}"] = template.read_text()
    files.update(extra or {})
    HOMES.mkdir(mode=0o755, exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
