"""Benchmark: what a seat's egress rules cost a CREATE, and the sentinel a reading of the
refused counts, as the ruleset grows (prints figures).

Why: every CREATE and release of a fenced seat rewrites the whole ruleset (`nft -f -`, one
transaction) after reading it back, and the sentinel reads every seat's REJECT counter; both
grow with the seats that have rules. Everything runs in a network namespace of its own
(`wodtegb<pid>`), so this machine's rules are never touched; the seats are uids without
accounts (rules match uids, not names).

Figures, each the median of --runs runs, per ruleset size (seats already holding rules,
spread over 20 workshops with a 3-entry list each): a CREATE's change (one seat set: read,
write whole), a release's (one seat dropped), the sentinel's read (`rejections()`), beside
the baseline of one `nft` process doing nothing (`nft list tables`), in the same run.

    .venv/bin/python bench/egress.py [--sizes 0,200,2000] [--runs 5]
    .venv/bin/python bench/egress.py --sizes 0,5 --runs 1   # the smoke test's size
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wodsync.agent.firewall import Ruleset, nft
from wodsync.agent.kinds import egress

UID_BASE = 3300000  # far from any real account
LIST = ["10.20.0.0/16:443", "192.0.2.7:22", "[2001:db8::1]:443"]
HUB = ["127.0.0.0/8", "::1"]
WORKSHOPS = 20  # the seats' workshops: rules are written once per workshop


def wish(n: int) -> egress.SeatWish:
    return {"user": f"wodtb{n}", "workshop": f"WKSHP-Bench{n % WORKSHOPS}", "allow": LIST,
            "hub": HUB}


def median_ms(fn: Callable[[], object], runs: int, before: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fill(state: str, size: int) -> None:
    """The ruleset with `size` fenced seats (written at once, as one apply would)."""
    nft.write(Ruleset({}, {}))
    if size:
        egress._change(state, {UID_BASE + n: wish(n) for n in range(1, size + 1)}, [])


def inner(sizes: list[int], runs: int) -> None:
    state = tempfile.mkdtemp(prefix="wodsync-egress-bench-")
    new = UID_BASE + 999_999
    print(f"{'seats with rules':>16}  {'CREATE (set)':>12}  {'release':>9}  {'sentinel read':>13}"
          f"  {'nft baseline':>12}")
    for size in sizes:
        fill(state, size)
        baseline = median_ms(lambda: subprocess.run(nft.PROBE, capture_output=True, check=True),
                             runs, lambda: None)
        create = median_ms(lambda: egress._change(state, {new: wish(0)}, []), runs,
                           lambda: egress._change(state, {}, [new]))
        release = median_ms(lambda: egress._change(state, {}, [new]), runs,
                            lambda: egress._change(state, {new: wish(0)}, []))
        read = median_ms(egress.rejections, runs, lambda: None)
        assert len(egress.rejections()) == size
        print(f"{size:>16}  {create:>9.1f} ms  {release:>6.1f} ms  {read:>10.1f} ms"
              f"  {baseline:>9.1f} ms")
    nft.write(Ruleset({}, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,200,2000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.inner:
        inner(sizes, args.runs)
        return
    if os.geteuid() != 0:
        sys.exit("bench/egress.py needs root (a network namespace and nft)")
    name = f"wodtegb{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__, "--inner",
                               "--sizes", args.sizes, "--runs", str(args.runs)], check=False)
        sys.exit(done.returncode)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
