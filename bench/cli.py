"""Benchmark: the `wodsync` command as a user starts it, each against a floor (prints figures).

Why: the README quoted `wodsync --help` and `wodsync review` times that no script produced.
Each figure here is the wall time of the whole process (start-up included), the median of
--runs, measured alternately with its floor in the same run so that a drift of this shared
machine hits both sides:

- `wodsync --help` against `python3 -c pass` on the same interpreter: what the CLI adds to
  starting Python.
- `wodsync review --base BASE` of a change to every file of a generated catalog (the one
  `bench/validate.py` makes: --workshops workshops of four files each, plus the catalog's own)
  against `git diff --name-status BASE` of the same change: the least a review of those files
  must do.

    .venv/bin/python bench/cli.py [--runs 5] [--workshops 100]
    .venv/bin/python bench/cli.py --runs 1 --workshops 2     # the smoke test's size
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from validate import generate

WODSYNC = str(Path(sys.executable).parent / "wodsync")


def wall(argv: list[str], cwd: Path | None = None) -> float:
    """Seconds of one whole run of `argv`; a failing command stops the bench (a broken CLI
    must not be timed as a fast one)."""
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def paired(ours: list[str], floor: list[str], runs: int,
           cwd: Path | None = None) -> tuple[float, float]:
    """Medians of `runs` runs of each, alternated, after one warm-up run of each."""
    wall(ours, cwd)
    wall(floor, cwd)
    a, b = [], []
    for _ in range(runs):
        a.append(wall(ours, cwd))
        b.append(wall(floor, cwd))
    return statistics.median(a), statistics.median(b)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def review_repo(root: Path, workshops: int) -> tuple[str, int]:
    """A repository whose work tree changes every workshop file of the commit BASE: a
    notebook's cell and a description edited, as content authors do. Returns BASE and how
    many files changed."""
    generate(root, workshops)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-q",
        "-m", "base")
    base = git(root, "rev-parse", "HEAD").strip()
    for path in sorted((root / "catalog/workshops").rglob("*")):
        if path.suffix == ".ipynb":
            notebook = json.loads(path.read_text())
            notebook["cells"][0]["source"].append("Revised wording.\n")
            path.write_text(json.dumps(notebook, indent=1))
        elif path.name == "workshop.yaml":
            path.write_text(path.read_text().replace("Generated for the benchmark.",
                                                     "Revised for the benchmark."))
    changed = len(git(root, "diff", "--name-only", base).splitlines())
    return base, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workshops", type=int, default=100)
    args = parser.parse_args()
    print(f"whole processes, median of {args.runs} runs each, alternated with the floor")
    ours, floor = paired([WODSYNC, "--help"], [sys.executable, "-c", "pass"], args.runs)
    print(f"  {'wodsync --help':<44} {ours:.3f} s   floor `python3 -c pass` {floor:.3f} s "
          f"(+{ours - floor:.3f} s)")
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-cli-") as tmp:
        root = Path(tmp) / "repo"
        base, changed = review_repo(root, args.workshops)
        ours, floor = paired([WODSYNC, "review", "--root", str(root), "--base", base],
                             ["git", "-C", str(root), "diff", "--name-status", base],
                             args.runs)
    print(f"  {f'wodsync review of {changed} changed files':<44} {ours:.3f} s   floor "
          f"`git diff --name-status` {floor:.3f} s ({ours / floor:.0f}×)")


if __name__ == "__main__":
    main()
