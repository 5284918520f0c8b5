"""Benchmark: from a CREATE to its credentials mail in an SMTP sink (prints figures).

Why: a participant who registered waits for one thing, the mail with their credentials; the
outbox must not make that wait longer than the CREATE itself by much. Measured on real
components: real seats on this machine (prefix `wodbm`, uids 45001-45050, homes under
/home/wodsync-bench-mail, converged by `wodsync apply`), a store (SQLite), the session service
with its mail hook, the sender loop and an aiosmtpd sink writing a Maildir, all in this process.

Figures, each beside its baselines measured in the same run:
- CREATE → credentials mail stored in the sink: p50 and max over `--runs` sequential CREATEs
  (target p50 ≤ 1 s), beside the bare CREATE (its answer) and one smtplib send to the same
  sink alone (what SMTP itself costs).
- `--concurrent` CREATEs at once: every credentials mail delivered, none twice, wall time.

Every account it made is removed at the end, also on failure. Needs root.

    .venv/bin/python bench/mail.py [--runs 20] [--concurrent 20] [--seats 40]
    .venv/bin/python bench/mail.py --runs 2 --concurrent 2 --seats 4     # the smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.controller import working_tree_deployment
from wodsync.mail.sender import Sender
from wodsync.mail.sink import Sink
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.store import Participant, open_store

from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync

# The benches' uid range (40001-45999, tests/test_bench_smoke.py): a catalog's pool stays
# below 60000, so the tests' range for mail (60001-60050) cannot be a pool's.
PREFIX, UID_BASE, MAX_SEATS = "wodbm", 45000, 50
HOMES = Path("/home/wodsync-bench-mail")
WORKSHOP = "WKSHP-MailBench"
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {},
                       "source": ["# Seat {{ STDID }} of {{ WKSHP }}"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def write_repo(root: Path, tmp: Path, seats: int, sink_port: int) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {seats}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        f"catalog/workshops/{WORKSHOP}/workshop.yaml":
            f"name: Mail bench\ncapacity: {seats}\nseats: {{first: 1, last: {seats}}}\n"
            "location: lab\nduration: 2\n",
        f"catalog/workshops/{WORKSHOP}/1-Intro.ipynb": json.dumps(NOTEBOOK),
        "catalog/mail.yaml": f"smtp: {{host: 127.0.0.1, port: {sink_port}}}\n"
                             'from: "Bench <bench@example.org>"\n'
                             "portal_url: https://portal.example.org\n",
        "hosts/bench.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                            f"pool: {PREFIX}\nstate_dir: {tmp}/host-state\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def arrived(sink: Sink, email: str, timeout: float = 30) -> float:
    """When the credentials mail to `email` was in the Maildir (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m["To"] == email for m in sink.messages()):
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"no mail to {email} within {timeout} s")


def smtp_alone(sink: Sink, runs: int) -> list[float]:
    times = []
    for n in range(runs):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "b@example.org", f"alone{n}@example.org", "x"
        msg.set_content("baseline")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.send_message(msg)
        times.append(time.monotonic() - started)
    return times


def sequential(service: SessionService, sink: Sink, runs: int) -> tuple[list[float], list[float]]:
    creates, mails = [], []
    for n in range(runs):
        email = f"seq{n}@example.org"
        started = time.monotonic()
        created = service.create(WORKSHOP, Participant(f"P{n}", email))
        creates.append(time.monotonic() - started)
        mails.append(arrived(sink, email) - started)
        service.purge(created.session.id)
    return creates, mails


def concurrent(service: SessionService, sink: Sink, n: int) -> tuple[float, Counter[str]]:
    started = time.monotonic()
    emails = [f"burst{i}@example.org" for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        made = list(pool.map(lambda e: service.create(WORKSHOP, Participant("B", e)), emails))
    for email in emails:
        arrived(sink, email, timeout=120)
    wall = time.monotonic() - started
    time.sleep(1.0)  # a second send of any of them would land meanwhile
    got = Counter(str(m["To"]) for m in sink.messages() if str(m["To"]) in emails
                  and "ready" in str(m["Subject"]))
    for created in made:
        service.purge(created.session.id)
    return wall, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--seats", type=int, default=40)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/mail.py needs root: it makes seats on this machine")
    if not 1 <= max(args.concurrent, 1) <= args.seats <= MAX_SEATS:
        raise SystemExit(f"--concurrent ≤ --seats ≤ {MAX_SEATS}")
    tmp = Path(tempfile.mkdtemp(prefix="wodsync-bench-mail-"))
    HOMES.mkdir(mode=0o755, exist_ok=True)
    try:
        run(args, tmp)
    finally:
        remove_test_accounts(PREFIX, UID_BASE)
        shutil.rmtree(HOMES, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    root = tmp / "repo"
    with Sink(tmp / "maildir") as sink:
        write_repo(root, tmp, args.seats, sink.port)
        applied = run_wodsync("apply", "--yes", "--root", root)
        if applied.returncode != 0:
            raise SystemExit("wodsync apply failed:\n" + applied.stdout[-2000:]
                             + applied.stderr[-2000:])
        store = open_store(state_dir=tmp / "state")
        deployment = working_tree_deployment(root, Secrets(env={}))
        service = SessionService(store, lambda: deployment)
        sender = Sender(store, lambda: deployment.catalog, Secrets(env={}))
        sender.start()
        try:
            baseline = smtp_alone(sink, args.runs)
            creates, mails = sequential(service, sink, args.runs)
            wall, got = concurrent(service, sink, args.concurrent)
        finally:
            sender.stop()
            service.connections.close()
            store.close()
    p50 = statistics.median
    print(f"{args.runs} sequential CREATEs, seats on this machine, SQLite store")
    print(f"  CREATE → credentials mail in the sink: p50 {ms(p50(mails))}   max "
          f"{ms(max(mails))}   (target p50 ≤ 1000 ms)")
    print(f"  baseline, bare CREATE (its answer):    p50 {ms(p50(creates))}   max "
          f"{ms(max(creates))}")
    print(f"  baseline, one smtplib send alone:      p50 {ms(p50(baseline))}   max "
          f"{ms(max(baseline))}")
    twice = sum(1 for c in got.values() if c > 1)
    print(f"{args.concurrent} CREATEs at once: {len(got)} of {args.concurrent} credentials "
          f"mails delivered, {twice} twice, in {wall:.2f} s")


if __name__ == "__main__":
    main()
