"""A catalog for session tests: two locations, two local hosts with pools of their own (so a
session on one never shares a Linux account with one on the other), workshops with hooks, a
compiled script, notebooks rendered per seat and a `reset: true` workshop.

Accounts use the prefixes `wodtx` (uids 58001-58040) and `wodty` (58101-58140); homes live
under /home/wodsync-test-sessions (root-owned, open to students, as a real home root is).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync

PREFIXES = (("wodtx", 58000), ("wodty", 58100))
HOMES = Path("/home/wodsync-test-sessions")
NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Seat {{ STDID }} of {{ WKSHP }}"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["print('{{ STUDENT }}')"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["1 + 1"]},
    ],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def cleanup_accounts() -> None:
    for prefix, base in PREFIXES:
        remove_test_accounts(prefix, base)
    shutil.rmtree(HOMES, ignore_errors=True)


def write_catalog(root: Path, tmp: Path, hub: str = "", lab_host: str = "") -> None:
    """`hub`: lines of lab1's `hub:` mapping (no hub when empty); `lab_host`: replaces lab1's
    transport lines (e.g. an ssh address that does not answer)."""
    HOMES.mkdir(mode=0o755, exist_ok=True)
    nb = json.dumps(NOTEBOOK)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n  - name: alt\n",
        "catalog/students.yaml": "pools:\n" + "".join(
            f"  {prefix}:\n    prefix: {prefix}\n    first: 1\n    last: 40\n"
            f"    uid_base: {base}\n    gid_base: {base}\n    home_root: {HOMES}\n"
            for prefix, base in PREFIXES),
        "catalog/variables.yaml": "BRANDING: Lab\n",
        "catalog/workshops/WKSHP-Sess/workshop.yaml":
            "name: Sessions\ncapacity: 20\nseats: {first: 1, last: 20}\nlocation: lab\n"
            "alternate_locations: [alt]\nduration: 2\nvarpass: true\n"
            "compile: [scripts/secret.sh]\n"
            "hooks: {create: scripts/create.sh, cleanup: scripts/cleanup.sh}\n",
        "catalog/workshops/WKSHP-Sess/1-Intro.ipynb": nb,
        "catalog/workshops/WKSHP-Sess/data/notes.txt": "plain file, copied as is {{ STDID }}\n",
        "catalog/workshops/WKSHP-Sess/scripts/secret.sh":
            "#!/bin/bash\necho \"token for {{ STUDENT }}: s3cr3t-{{ STDID }}\"\n",
        "catalog/workshops/WKSHP-Sess/scripts/create.sh":
            f"#!/bin/bash\necho \"create $WOD_STUDENT $STUDENT $SESSION\"\n"
            f"touch {tmp}/created-$STUDENT\n",
        "catalog/workshops/WKSHP-Sess/scripts/cleanup.sh":
            f"#!/bin/bash\necho cleanup $STUDENT\ntouch {tmp}/cleaned-$STUDENT\n",
        "catalog/workshops/WKSHP-Reset/workshop.yaml":
            "name: Reset\ncapacity: 5\nseats: {first: 21, last: 25}\nlocation: lab\n"
            "duration: 1\nreset: true\nhooks: {reset: scripts/reset.sh}\n",
        "catalog/workshops/WKSHP-Reset/1-Intro.ipynb": nb,
        "catalog/workshops/WKSHP-Reset/scripts/reset.sh":
            f"#!/bin/bash\necho reset $STUDENT\ntouch {tmp}/reset-$STUDENT\n",
        "catalog/workshops/WKSHP-Off/workshop.yaml":
            "name: Off\nactive: false\ncapacity: 5\nseats: {first: 31, last: 35}\n"
            "location: lab\nduration: 1\n",
        "catalog/workshops/WKSHP-Off/1-Intro.ipynb": nb,
        "hosts/lab1.yaml": (lab_host or "address: localhost\ntransport: local\n")
        + f"location: lab\npool: wodtx\nstate_dir: {tmp}/state-lab1\n" + hub,
        "hosts/alt1.yaml": "address: localhost\ntransport: local\nlocation: alt\n"
                           f"pool: wodty\nstate_dir: {tmp}/state-alt1\n",
    }
    if hub:
        hub_templates = Path(__file__).resolve().parent.parent / "templates/hub"
        for template in hub_templates.glob("*.j2"):
            files[f"templates/hub/{template.name}"] = template.read_text()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "catalog/workshops/WKSHP-Sess/scripts/secret.sh").chmod(0o755)


def wodsync(root: Path, state: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`wodsync ARGS --root ROOT` (and `--state-dir STATE` for `session` and `serve`), run in
    this process (tests/helpers.py says why); `timeout` is kept for a caller's intent."""
    extra: tuple[object, ...] = ("--root", root)
    if args and args[0] in ("session", "serve"):
        extra += ("--state-dir", state)
    return run_wodsync(*args, *extra, env=env, timeout=timeout)
