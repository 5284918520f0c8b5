"""A lab for the store's tests (the manager record, backup and restore, API replicas): one
`local` host with the pool `wodtc` (uids 54401-54440, gid base 54400), homes under the test's
own folder, a workshop whose `create` hook can be held at a gate (a CREATE stays `creating`
until the test opens it) and, when asked, a real JupyterHub.

Its three modules share the accounts, so they are one xdist group and run one after another.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from helpers import remove_test_accounts
from hubs import HUB_PREFIX, PROXY

PREFIX, UID_BASE, SEATS = "wodtc", 54400, 40
SEAT_UIDS = range(UID_BASE + 1, UID_BASE + SEATS + 1)
WORKSHOP = "WKSHP-Store"
HUB_TOKEN = "wodsync-storelab-hub-" + os.urandom(8).hex()
API_TOKEN = "wodsync-storelab-api-" + os.urandom(8).hex()
NOTEBOOK = ('{"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["Seat {{ STDID }}"]}],'
            ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')


def env() -> dict[str, str]:
    return dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, HUB_STORELAB_TOKEN=HUB_TOKEN)


def claim_accounts() -> None:
    """Fail (naming them) when others hold this lab's uids; else clear what a previous run
    left."""
    taken = [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
             if e.pw_uid in SEAT_UIDS and not e.pw_name.startswith(PREFIX)]
    if taken:
        pytest.fail(f"uids {SEAT_UIDS.start}-{SEAT_UIDS.stop - 1} belong to this lab (prefix "
                    f"{PREFIX}) but are held by {', '.join(taken)}")
    remove_test_accounts(PREFIX, UID_BASE)


def remove_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)


def hub_lines(tmp: Path, ports: dict[str, int]) -> str:
    return (f"hub:\n  service: process\n  prefix: {HUB_PREFIX}\n  proxy: {PROXY}\n"
            f"  config_dir: {tmp}/hubconf\n  data_dir: {tmp}/hubdata\n  ip: 127.0.0.1\n"
            f"  port: {ports['port']}\n  hub_port: {ports['hub_port']}\n"
            f"  proxy_api_port: {ports['proxy_api_port']}\n"
            "  token: {secret: HUB_STORELAB_TOKEN}\n")


def catalog_files(tmp: Path, hub: str = "", gate: Path | None = None,
                  capacity: int = SEATS) -> dict[str, str]:
    """The lab's repository files. `hub`: the host's `hub:` lines (none: no hub); `gate`: the
    create hook waits (at most 120 s) until this file exists; `capacity`: the workshop's."""
    homes = tmp / "homes"
    homes.mkdir(mode=0o755, exist_ok=True)
    tmp.chmod(0o755)
    wait = (f"for i in $(seq 1200); do [ -e {gate} ] && break; sleep 0.1; done\n"
            if gate else "")
    return {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  store:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {homes}\n",
        "catalog/variables.yaml": "BRANDING: Lab\n",
        f"catalog/workshops/{WORKSHOP}/workshop.yaml":
            f"name: Store\ncapacity: {capacity}\nseats: {{first: 1, last: {SEATS}}}\n"
            "location: lab\nduration: 2\nhooks: {create: scripts/create.sh}\n",
        f"catalog/workshops/{WORKSHOP}/1-Intro.ipynb": NOTEBOOK,
        f"catalog/workshops/{WORKSHOP}/scripts/create.sh":
            f"#!/bin/bash\ntouch {tmp}/creating-$STUDENT\n{wait}echo created $STUDENT\n",
        "hosts/lab.yaml": "address: localhost\ntransport: local\nlocation: lab\npool: store\n"
                          f"state_dir: {tmp}/hoststate\n" + hub,
        **({f"templates/hub/{t.name}": t.read_text()
            for t in (Path(__file__).resolve().parent.parent / "templates/hub").glob("*.j2")}
           if hub else {}),
    }


def write_catalog(root: Path, tmp: Path, hub: str = "", gate: Path | None = None,
                  capacity: int = SEATS) -> None:
    for rel, text in catalog_files(tmp, hub, gate, capacity).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
