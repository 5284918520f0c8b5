"""Benchmark: a one-notebook fix brought to N live sessions on one host (prints figures).

Why: a typo fixed at 10:00 must reach everyone mid-workshop within seconds, and the update is
one `seat_update` round trip per host for all its seats. This measures it on real seats of
this machine (a `local` host: each round trip is an agent process, as over SSH minus the
network): N sessions (`--seats`, default 100) of a workshop with three notebooks and a data
file are created, then

- the fix (one cell of one notebook) is brought to all of them by `SessionService.update`
  (`wodsync session update --workshop`): the time from the call to the last seat updated,
  and the host's own time in that one round trip;
- the baseline, in the same run: a second one-cell fix brought seat by seat, one round trip
  per seat (what a per-seat update would cost).

Each seat's report is checked (one file `updated`, nothing else). Accounts `wodqb11`… (uids
41211…, at most 189 seats; the tests have wodqb1-6), homes under
/home/wodsync-bench-liveupdate, the temporary folder: all removed at the end, also on failure.
It refuses to run while pytest runs on the machine (the uid range is the tests' too);
`--force` overrides.

    .venv/bin/python bench/liveupdate.py [--seats 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wodsync.agent import accountsdb
from wodsync.controller import Controller, open_controller
from wodsync.engine.remote import host_payload
from wodsync.secrets import Secrets
from wodsync.sessions.liveupdate import Updated
from wodsync.sessions.seat import update_payload
from wodsync.store import Participant

PREFIX, UID_BASE, FIRST = "wodqb", 41200, 11  # tests/test_liveupdate.py has wodqb1-6
MAX_SEATS = 199 - FIRST + 1
HOMES = Path("/home/wodsync-bench-liveupdate")
WS = "WKSHP-Bench"


def pytest_running() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if int(cmdline.parent.name) != os.getpid() and any(b"pytest" in a for a in argv):
                return True
    return False


def notebook(fix: str) -> str:
    cells: list[dict[str, Any]] = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Seat {{ STDID }}"]}]
    cells += [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
               "source": [f"step_{n} = {n} * 2\n", f"print(step_{n})"]}
              for n in range(30)]
    cells.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                  "source": [f"print('{fix}')"]})
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                      indent=1)


def write_repo(root: Path, tmp: Path, seats: int, fix: str) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: {FIRST}\n"
            f"    last: {FIRST + seats - 1}\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        f"catalog/workshops/{WS}/workshop.yaml":
            f"name: Bench\ncapacity: {seats}\nseats: {{first: {FIRST}, "
            f"last: {FIRST + seats - 1}}}\n"
            "location: lab\nduration: 2\n",
        f"catalog/workshops/{WS}/1-Intro.ipynb": notebook(fix),
        f"catalog/workshops/{WS}/2-Lab.ipynb": notebook("lab"),
        f"catalog/workshops/{WS}/3-More.ipynb": notebook("more"),
        f"catalog/workshops/{WS}/data/notes.txt": "notes\n" * 200,
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def remove_accounts() -> None:
    uids = range(UID_BASE + FIRST, UID_BASE + FIRST + MAX_SEATS)
    users = [u["name"] for u in accountsdb.read_databases()["users"].values()
             if u["name"].startswith(PREFIX) and u["uid"] in uids]
    if users:
        accountsdb.delete(users)
    for group in accountsdb.read_databases()["groups"].values():
        if group["name"].startswith(PREFIX) and group["gid"] in uids:
            subprocess.run(["groupdel", group["name"]], capture_output=True, check=False)
    shutil.rmtree(HOMES, ignore_errors=True)


def check(done: list[Updated], seats: int) -> None:
    bad = [u for u in done if not u.ok or [f["action"] for f in u.files] != ["updated"]]
    if len(done) != seats or bad:
        raise SystemExit(f"{len(bad)} of {len(done)} seats not updated as expected: "
                         f"{bad[:3]}")


def warm_up(ctl: Controller, session_id: str) -> None:
    """Both sides alike, untimed: the host's agent answering, one seat's files rendered."""
    host = ctl.deployment.catalog.hosts["lab1"]
    ctl.connections.call("lab1", host, "version", host_payload("lab1", host))
    update_payload(ctl.deployment.catalog, ctl.store.sessions.get(session_id),
                   ctl.deployment.secrets, ctl.deployment.revision)


def run(seats: int, tmp: Path) -> None:
    root, state = tmp / "repo", tmp / "controller"
    write_repo(root, tmp, seats, "v1")
    HOMES.mkdir(mode=0o755, exist_ok=True)
    applied = subprocess.run([sys.executable, "-m", "wodsync", "apply", "--yes", "--root",
                              str(root)], capture_output=True, text=True)
    if applied.returncode != 0:
        raise SystemExit(f"apply failed:\n{applied.stdout}{applied.stderr}")
    ctl = open_controller(root, state, None, Secrets(env={}))
    try:
        started = time.monotonic()
        ids = [ctl.sessions.create(WS, Participant(f"P{n}", f"p{n}@bench.invalid")).session.id
               for n in range(seats)]
        print(f"{seats} sessions created in {time.monotonic() - started:.1f} s "
              "(setup, not a figure)")
    finally:
        ctl.close()

    write_repo(root, tmp, seats, "v2")  # fix 1: one cell of one notebook
    ctl = open_controller(root, state, None, Secrets(env={}))
    host_time: list[float] = []
    try:
        call = ctl.sessions.live.call

        def timed(*args: Any) -> Any:
            begun = time.monotonic()
            try:
                return call(*args)
            finally:
                host_time.append(time.monotonic() - begun)

        warm_up(ctl, ids[0])
        ctl.sessions.live.call = timed
        started = time.monotonic()
        done = ctl.sessions.update(workshops=[WS])
        batched = time.monotonic() - started
        check(done, seats)
    finally:
        ctl.close()

    write_repo(root, tmp, seats, "v3")  # fix 2, the baseline: a round trip per seat
    ctl = open_controller(root, state, None, Secrets(env={}))
    try:
        warm_up(ctl, ids[0])
        started = time.monotonic()
        done = [u for sid in ids for u in ctl.sessions.update([sid])]
        per_seat = time.monotonic() - started
        check(done, seats)
    finally:
        ctl.close()
    print(f"one-notebook fix to {seats} live seats, one round trip for the host: "
          f"{batched:.2f} s ({batched / seats * 1000:.1f} ms a seat; the host's round trip "
          f"{sum(host_time):.2f} s, the rest is rendering each seat's files and the history)")
    print(f"baseline, one round trip per seat (same run):           "
          f"{per_seat:.2f} s ({per_seat / seats * 1000:.1f} ms a seat), "
          f"{per_seat / batched:.1f}× the batched update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seats", type=int, default=100)
    parser.add_argument("--force", action="store_true", help="run even while pytest runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates real seat accounts")
    if not 1 <= args.seats <= MAX_SEATS:
        raise SystemExit(f"--seats must be within 1..{MAX_SEATS} (the bench's uid range)")
    if pytest_running() and not args.force:
        raise SystemExit("pytest is running on this machine (shared uid range); --force")
    tmp = Path(tempfile.mkdtemp(prefix="wodsync-bench-liveupdate-"))
    try:
        remove_accounts()
        run(args.seats, tmp)
    finally:
        remove_accounts()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
