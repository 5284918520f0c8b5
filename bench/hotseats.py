"""Benchmark: a CREATE that takes a hot seat against a CREATE that sets a seat up (prints
figures, both measured in the same run on the same machine).

Why: at an event everyone registers within minutes; a hot seat (`wodsync.sessions.hotseats`)
was set up before the event, so its CREATE only sets the password, joins the group and writes
the record. This measures both on real components: the hot-seat lab (`tests/hotseatlab.py`:
the bench's pool `wodqh`, uids 42401-42440, homes under /home/wodsync-bench-hotseats — never the
tests' own, which its smoke run goes beside — a local host) with a
workshop of --notebooks rendered notebooks, converged with `wodsync apply`.

Figures:
- preparing N hot seats (`--creates`, default 10) for a warm event: wall time of the rounds;
- N sequential CREATEs through `SessionService` taking those hot seats: p50, p95;
- the baseline: N sequential CREATEs of the same workshop without an event: p50, p95.
Every session is purged between the two, and every account removed at the end (also on
failure). Needs root. Run it under the tests' lock (it makes real accounts and homes):

    flock /tmp/wodsync-tests.lock .venv/bin/python bench/hotseats.py [--creates 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.controller import Controller, open_controller
from wodsync.secrets import Secrets
from wodsync.store import Participant

from helpers import wodsync
from hotseatlab import BENCH, cleanup, range_taken, write_catalog


def _creates(ctl: Controller, n: int, tag: str) -> list[float]:
    seconds = []
    for i in range(n):
        created = ctl.sessions.create("WKSHP-Hot", Participant(f"P {i}", f"{tag}{i}@example.org"))
        seconds.append(created.seconds)
    return seconds


def _purge_all(ctl: Controller) -> None:
    for s in ctl.store.sessions.find(live=True):
        ctl.sessions.purge(s.id, "bench")


def _figures(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{name:<34} p50 {statistics.median(ordered) * 1000:7.1f} ms   " \
           f"p95 {p95 * 1000:7.1f} ms   (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=10)
    parser.add_argument("--notebooks", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if range_taken(BENCH):
        sys.exit(f"uids 42401-42440 are used by others: {range_taken(BENCH)[:3]}")
    n = max(1, min(args.creates, 19))  # two pools of N beside each other fit in 40 seats
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    events = (f"events:\n  - name: bench\n    workshop: WKSHP-Hot\n    start: "
              f"{start.isoformat()}\n    hours: 2\n    expected: {n}\n    warm: 1.0\n")
    cleanup(BENCH)
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-hot-") as folder:
        tmp = Path(folder)
        try:
            _run(tmp, events, n, args.notebooks)
        finally:
            cleanup(BENCH)


def _run(tmp: Path, events: str, n: int, notebooks: int) -> None:
    hot_root, cold_root = tmp / "hot", tmp / "cold"
    write_catalog(hot_root, tmp, events, capacity=40, notebooks=notebooks, lab=BENCH)
    write_catalog(cold_root, tmp, "", capacity=40, notebooks=notebooks, lab=BENCH)
    applied = wodsync("apply", "--yes", "--root", hot_root)
    if applied.returncode != 0:
        sys.exit(applied.stdout + applied.stderr)
    hot = open_controller(hot_root, tmp / "state", None, Secrets())
    try:
        began = time.monotonic()
        while len(hot.store.hot.waiting("bench")) < n:
            if not hot.sessions.hot.keep().prepared:
                sys.exit(f"hot seats not prepared: {hot.sessions.hot.keep().problems}")
        prepared = time.monotonic() - began
        taken = _creates(hot, n, "hot")
        _purge_all(hot)
    finally:
        hot.close()
    cold = open_controller(cold_root, tmp / "state", None, Secrets())
    try:
        baseline = _creates(cold, n, "cold")
        _purge_all(cold)
    finally:
        cold.close()
    print(f"workshop WKSHP-Hot: {notebooks} notebooks, local host, no hub")
    print(f"{'preparing ' + str(n) + ' hot seats (before the event)':<34} "
          f"{prepared:.2f} s in all")
    print(_figures("CREATE taking a hot seat", taken))
    print(_figures("CREATE without a hot seat (base)", baseline))
    print(f"speed-up at p50: {statistics.median(baseline) / statistics.median(taken):.1f}x")


if __name__ == "__main__":
    main()
