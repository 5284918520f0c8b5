"""Benchmark: a seat's sweep (agent/sweep.py) of a shared folder holding a large tree of
root's — a checkout, a cache — beside what the seat left (prints figures).

Why: a release sweeps /tmp and the other shared folders for whatever the seat's uid left, and
the walk is bounded (`MAX_ENTRIES`) so a release stays bounded. A busy host's /tmp is mostly
root's, and a walk that examined every entry of it stopped at the bound: the release never
finished and the seat was never given again. The walk now reads only the subfolders of a
folder of root that the seat cannot write. Measured here in the same run against the former
walk (every entry examined, the bound lifted so that it finishes): time, and how much of the
bound each used.

Needs root (the seat's files are given to an unused uid, as the seat would have left them).

    .venv/bin/python bench/sweep.py [--files 250000] [--seat-files 2000]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wodsync.agent import sweep

FILES_PER_FOLDER = 10  # a checkout's shape: about one folder for ten files


def free_uid(start: int = 58900) -> int:
    """A uid no account holds (the seat's account is gone: what it left is still swept)."""
    taken = {e.pw_uid for e in pwd.getpwall()}
    return next(u for u in range(start, start + 1000) if u not in taken)


def build(shared: Path, files: int) -> Path:
    """`shared` (a /tmp of its own, 1777) with root's tree of `files` files in 0755 folders
    and a world-writable spool inside it; returns the spool."""
    shared.chmod(0o1777)
    tree = shared / "checkout"
    for n in range(files):
        folder = tree / f"d{n // FILES_PER_FOLDER // 100}" / f"e{n // FILES_PER_FOLDER}"
        if n % FILES_PER_FOLDER == 0:
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        (folder / f"f{n}").write_bytes(b"x")
    spool = tree / "spool"
    spool.mkdir()
    spool.chmod(0o1777)
    return spool


def leave(shared: Path, spool: Path, seat_files: int, uid: int) -> None:
    """What the seat left: files at the top and in the spool inside root's tree."""
    for n in range(seat_files):
        for where in (spool, shared):
            path = where / f"seat-{n}"
            path.write_bytes(b"left")
            os.chown(path, uid, uid)


def run(shared: Path, uid: int, skim: bool) -> tuple[float, list[str], int, int]:
    """One sweep: seconds, report lines, entries examined, names read."""
    walks: list[sweep._Walk] = []
    original_closed, original_walk = sweep._closed, sweep._Walk.run

    def kept_walk(self: sweep._Walk, done: set) -> list[str]:
        walks.append(self)
        return original_walk(self, done)

    sweep._Walk.run = kept_walk  # type: ignore[method-assign]
    if not skim:
        sweep._closed = lambda st, uid: False  # the former walk: every entry examined
    began = time.perf_counter()
    try:
        left = sweep.sweep(uid, f"wodbenchsweep{uid}", roots=(str(shared),))
    finally:
        sweep._closed, sweep._Walk.run = original_closed, original_walk  # type: ignore
    return (time.perf_counter() - began, left, sum(w.seen for w in walks),
            sum(w.skimmed for w in walks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=250000)
    parser.add_argument("--seat-files", type=int, default=2000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sweep.py needs root")
    uid = free_uid()
    base = Path(tempfile.mkdtemp(prefix="wodsync-bench-sweep-", dir="/var/tmp"))
    try:
        print(f"a shared folder with root's tree of {args.files} files "
              f"({args.files // FILES_PER_FOLDER} folders) and {2 * args.seat_files} files "
              f"of the seat (uid {uid}); bound {sweep.MAX_ENTRIES} entries examined")
        shared = base / "shared"
        shared.mkdir()
        spool = build(shared, args.files)
        for _ in os.walk(shared):  # both walks find the tree in the page cache
            pass
        results = {}
        for label, skim in (("every entry examined (before)", False),
                            ("root's closed folders skimmed", True)):
            leave(shared, spool, args.seat_files, uid)
            bound = sweep.MAX_ENTRIES
            sweep.MAX_ENTRIES = 10 ** 9  # lifted, so that the former walk finishes
            try:
                seconds, left, seen, skimmed = run(shared, uid, skim)
            finally:
                sweep.MAX_ENTRIES = bound
            remaining = sum(1 for _ in shared.rglob("seat-*"))
            results[label] = seconds
            print(f"  {label:<32} {seconds:6.2f} s   {seen:8d} entries examined "
                  f"({seen / bound:5.0%} of the bound)  {skimmed:8d} names read   "
                  f"seat files left {remaining}   report lines {len(left)}")
        before, after = results.values()
        fits = "would have stopped at the bound" if args.files > sweep.MAX_ENTRIES \
            else "fits the bound"
        print(f"  time ×{before / after:.2f}; the former walk {fits}")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
