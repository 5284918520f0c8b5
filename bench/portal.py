"""Benchmark: a confirmation click to the session page with its credentials, beside the bare
API CREATE measured in the same run (prints figures).

Why: what a participant waits for after clicking the mailed link is the CREATE of their seat
plus the portal's own work (the link checked, the registration read and marked, a redirect,
the page rendered); the bare `POST /api/v1/sessions` on the same seats in the same run is the
floor, so the difference is what the portal adds. Real components: a pool of --seats local
seats (prefix `wodbp`, uids from 46001, homes under /home/wodsync-bench-portal) converged
with `wodsync apply`, the API and the pages under uvicorn on loopback, requests over HTTP.
The two are interleaved round by round (API CREATE, then click) so that the machine's load
weighs on both alike; every session is cleaned up between rounds (not timed).

Every account it made is removed at the end, also on failure.

    .venv/bin/python bench/portal.py [--seats 10] [--rounds 20]
    .venv/bin/python bench/portal.py --seats 4 --rounds 2          # the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.controller import Controller, open_controller
from wodsync.portal.links import confirm_url
from wodsync.secrets import Secrets
from wodsync.store import Store
from wodsync.store.registrations import REGISTRATIONS

from apiserver import serving
from helpers import remove_test_accounts

PREFIX, UID_BASE = "wodbp", 46000
HOMES = Path("/home/wodsync-bench-portal")
TOKEN = "bench-portal-" + "x" * 24
TARGET_S = 0.5
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {},
                       "source": ["# Seat {{ STDID }} of {{ WKSHP }}"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def write_catalog(root: Path, state: Path, seats: int) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {seats}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/portal.yaml": "rate_limit: {per_address: 3/hour, per_client: 100000/day}\n",
        # mail on (the confirmation is queued in the registration's transaction), no sender:
        "catalog/mail.yaml": "smtp: {host: localhost, port: 1}\nfrom: bench@example.org\n",
        "catalog/workshops/WKSHP-Bench/workshop.yaml":
            f"name: Bench\ncapacity: {seats}\nseats: {{first: 1, last: {seats}}}\n"
            "location: lab\nduration: 1\n",
        "catalog/workshops/WKSHP-Bench/1-Intro.ipynb": json.dumps(NOTEBOOK),
        "hosts/bench1.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                             f"pool: {PREFIX}\nstate_dir: {state}/host\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def converge(root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "wodsync", "apply", "--yes", "--root",
                           str(root)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit("wodsync apply failed:\n" + done.stdout[-2000:] + done.stderr[-2000:])


def api_create(base: str, n: int) -> tuple[float, str]:
    started = time.perf_counter()
    answer = requests.post(base + "/api/v1/sessions", timeout=60,
                           headers={"Authorization": f"Bearer {TOKEN}"},
                           json={"workshop": "WKSHP-Bench", "participant": {
                               "name": "Bench", "email": f"api{n}@example.org"}})
    seconds = time.perf_counter() - started
    if answer.status_code != 201:
        raise SystemExit(f"API CREATE failed: {answer.status_code} {answer.text[:300]}")
    return seconds, answer.json()["id"]


def click(base: str, store: Store, n: int) -> tuple[float, str]:
    """Register (not timed), then the timed click: the link, its redirect, the page."""
    http = requests.Session()
    page = http.get(base + "/register", timeout=30).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    email = f"click{n}@example.org"
    sent = http.post(base + "/register", timeout=30, data={
        "workshop": "WKSHP-Bench", "name": "Bench", "email": email, "terms": "yes",
        "csrf": csrf})
    if sent.status_code != 200:
        raise SystemExit(f"registration refused: {sent.status_code} {sent.text[-300:]}")
    [registration] = [r for r in _registrations(store) if r[1] == email]
    link = confirm_url(store, registration[0], base)
    started = time.perf_counter()
    shown = http.get(link, timeout=60)
    seconds = time.perf_counter() - started
    if shown.status_code != 200 or "Password" not in shown.text:
        raise SystemExit(f"the click did not show the credentials: {shown.status_code}")
    return seconds, shown.url.rsplit("/s/", 1)[1].split(".", 1)[0]


def _registrations(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [(r.id, r.email) for r in conn.execute(select(REGISTRATIONS))]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(seats: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wodsync-bench-portal-"))
    HOMES.mkdir(mode=0o755, exist_ok=True)
    try:
        root = tmp / "repo"
        write_catalog(root, tmp, seats)
        converge(root)
        ctl = open_controller(root, tmp / "state", None, Secrets())
        try:
            app = create_app(Context(ctl.store, sessions=ctl.sessions, api_token=lambda: TOKEN))
            with serving(app) as base:
                api, clicks = measure(base, ctl, rounds)
        finally:
            ctl.close()
        report(api, clicks)
    finally:
        remove_test_accounts(PREFIX, UID_BASE)
        shutil.rmtree(HOMES, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(base: str, ctl: Controller, rounds: int) -> tuple[list[float], list[float]]:
    api, clicks = [], []
    for n in range(rounds):
        seconds, session = api_create(base, n)
        api.append(seconds)
        ctl.sessions.cleanup(session)
        seconds, session = click(base, ctl.store, n)
        clicks.append(seconds)
        ctl.sessions.cleanup(session)
    return api, clicks


def report(api: list[float], clicks: list[float]) -> None:
    p50_api, p50_click = statistics.median(api), statistics.median(clicks)
    print(f"portal: {len(clicks)} rounds, interleaved, on local seats")
    print(f"  bare API CREATE (baseline)        p50 {p50_api * 1000:7.0f} ms   "
          f"p95 {percentile(api, 0.95) * 1000:7.0f} ms")
    print(f"  click → page with credentials     p50 {p50_click * 1000:7.0f} ms   "
          f"p95 {percentile(clicks, 0.95) * 1000:7.0f} ms")
    print(f"  the portal adds                   p50 {(p50_click - p50_api) * 1000:7.0f} ms "
          f"(target for the click: ≤ {TARGET_S * 1000:.0f} ms: "
          f"{'met' if p50_click <= TARGET_S else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    run(args.seats, args.rounds)


if __name__ == "__main__":
    main()
