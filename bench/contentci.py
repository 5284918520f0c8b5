"""Benchmark: `wodsync test` of the example catalog's largest workshop (prints figures).

Why: content CI runs on every pull request that changes a workshop; what it costs is the
seat's CREATE and release, which every participant's session pays too, plus the notebooks run
as the seat. Measured here on real components: the example catalog's largest workshop (most
notebook bytes, moved onto this machine as a `local` host by tests/contentcilab.py: pool
`wodqc`, seats 11-14, homes under /home/wodsync-bench-contentci), converged with `wodsync
apply`; the kernels from the system python3's venv at /opt/wodsync-test/contentci (made when
missing). Beside it, in the same run, the baseline: the same CREATE and release through the
session service with no notebook run.

Needs root.

    .venv/bin/python bench/contentci.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.contentci.ci import PARTICIPANT, ContentReport, end_seat, run_test
from wodsync.contentci.seatrun import Limits
from wodsync.controller import open_controller
from wodsync.secrets import Secrets

from contentcilab import BENCH, cleanup, example_largest, kernel_python, write_catalog
from helpers import wodsync


def times(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def line(label: str, seconds: list[float]) -> str:
    return (f"  {label:<44} p50 {statistics.median(seconds):6.2f} s   min {min(seconds):6.2f} s"
            f"   max {max(seconds):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    python = kernel_python()
    if isinstance(python, str):
        sys.exit(f"no kernel environment: {python}")
    key = example_largest().name
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-contentci-") as folder:
        tmp = Path(folder)
        cleanup(BENCH)
        srv_git = Path("/srv/git").exists()  # WKSHP-Git101's create hook makes it
        try:
            write_catalog(tmp / "repo", tmp, BENCH)
            applied = wodsync("apply", "--yes", "--root", tmp / "repo")
            if applied.returncode != 0:
                sys.exit(applied.stdout + applied.stderr)
            measure(tmp, key, python, args.runs)
        finally:
            cleanup(BENCH)
            if not srv_git and Path("/srv/git").is_dir() and not any(Path("/srv/git").iterdir()):
                Path("/srv/git").rmdir()


def measure(tmp: Path, key: str, python: Path, runs: int) -> None:
    ctl = open_controller(tmp / "repo", tmp / "state", None, Secrets())
    try:
        reports = []

        def full() -> None:
            report = run_test(ctl.sessions, key, None, python, Limits())
            if not report.passed:
                sys.exit("\n".join(report.errors))
            reports.append(report)

        def baseline() -> None:
            created = ctl.sessions.create(key, PARTICIPANT, None, None)
            report = ContentReport(key, created.session.host)
            if not end_seat(ctl.sessions, created.session, report):
                sys.exit("\n".join(report.errors))

        tested = times(full, runs)
        bare = times(baseline, runs)
    finally:
        ctl.close()
    notebooks = reports[0].notebooks
    cells = sum(n.code_cells for n in notebooks)
    print(f"content CI: {key} (the example catalog's largest: {len(notebooks)} notebooks, "
          f"{cells} code cells), {runs} runs on a local host")
    print(line("wodsync test (CREATE, notebooks, release)", tested))
    print(line("CREATE and release alone (baseline)", bare))
    print(line("of which the notebooks, as the seat", [n for r in reports for n in
                                                      [sum(x.seconds for x in r.notebooks)]]))


if __name__ == "__main__":
    main()
