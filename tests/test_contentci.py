"""Content CI on real seats: `wodsync test` gives a workshop an ephemeral seat of a local host,
runs its notebooks as the seat's user and leaves the host exactly as it found it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contentcilab import (
    PREFIX,
    TESTS,
    cleanup,
    example_largest,
    host_trace,
    kernel_python,
    write_catalog,
)
from sessionlab import wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """The content CI lab, converged once for the module (4 accounts on one local host)."""
    taken = [p.pw_name for p in pwd.getpwall()
             if p.pw_uid in TESTS.uids and not p.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"uids {TESTS.uids[0]}-{TESTS.uids[-1]} are taken by {taken}")
    python = kernel_python()
    if isinstance(python, str):
        pytest.skip(f"no kernel environment a seat may run: {python}")
    cleanup()
    tmp = tmp_path_factory.mktemp("contentci")
    root = tmp / "repo"
    write_catalog(root, tmp)
    srv_git = Path("/srv/git").exists()  # the example Git101's create hook makes it
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "state": tmp / "state-qc1", "python": python}
    cleanup()
    if not srv_git and Path("/srv/git").is_dir() and not any(Path("/srv/git").iterdir()):
        Path("/srv/git").rmdir()


def run_test(lab: dict[str, Path], *args: str) -> tuple[int, dict[str, Any], str]:
    """`wodsync test ARGS --json`: exit code, the JSON report, stderr."""
    done = wodsync(lab["root"], lab["state"], "test", *args, "--python", lab["python"], "--json")
    return done.returncode, json.loads(done.stdout), done.stderr


def test_a_workshop_passes_as_its_seat_with_score_100_and_leaves_no_trace(lab, tmp_path):
    before = host_trace(lab["state"])
    summary = tmp_path / "summary.md"
    code, report, err = run_test(lab, "WKSHP-Good", "--summary", str(summary))
    assert code == 0, json.dumps(report, indent=1) + err
    (ws,) = report["workshops"]
    assert ws["passed"] and ws["released"] and ws["host"] == "qc1"
    assert ws["score"] == 100  # its check passes once its solve script ran
    assert ws["seat"].startswith(PREFIX)
    # every code cell ran, as the seat (the notebook asserts its uid, cwd and files)
    assert [(n["path"], n["ran"], n["code_cells"], n["error"]) for n in ws["notebooks"]] == \
        [("WKSHP-Good/1-Good.ipynb", 4, 4, None)]
    assert host_trace(lab["state"]) == before  # the notebook's files in ~ and /tmp are gone
    text = summary.read_text()
    assert "### wodsync content CI" in text and "| WKSHP-Good | qc1 | 1 (4/4 code cells) | ✅" \
        in text


def test_a_broken_notebook_fails_at_its_cell_a_check_by_its_message_and_no_trace_is_left(
        lab, tmp_path):
    before = host_trace(lab["state"])
    summary = tmp_path / "summary.md"
    code, report, _ = run_test(lab, "WKSHP-Broken", "--summary", str(summary))
    assert code == 1
    (ws,) = report["workshops"]
    assert not ws["passed"] and ws["released"]
    located = "WKSHP-Broken/1-Broken.ipynb:cell 3: ZeroDivisionError: division by zero"
    # the notebook's error at its cell, and the check that never passes with its FAIL message
    assert ws["errors"] == [located, "WKSHP-Broken: check answer: 42 expected"]
    assert ws["score"] == 0
    assert [(n["path"], n["ran"], n["error"]) for n in ws["notebooks"]] == [
        ("WKSHP-Broken/0-Fine.ipynb", 1, None), ("WKSHP-Broken/1-Broken.ipynb", 1, located)]
    assert host_trace(lab["state"]) == before
    assert f"- `{located}`" in summary.read_text()
    # the text report names the same place
    done = wodsync(lab["root"], lab["state"], "test", "WKSHP-Broken", "--python", lab["python"])
    assert done.returncode == 1 and located in done.stdout
    assert host_trace(lab["state"]) == before


def test_the_example_catalogs_largest_workshop_passes_here(lab):
    largest = example_largest().name
    if shutil.which("git") is None and largest == "WKSHP-Git101":
        pytest.skip(f"{largest} needs git, which is not installed")
    before = host_trace(lab["state"])
    code, report, err = run_test(lab, largest)
    assert code == 0, json.dumps(report, indent=1) + err
    (ws,) = report["workshops"]
    assert ws["notebooks"] and all(n["ran"] == n["code_cells"] for n in ws["notebooks"])
    assert host_trace(lab["state"]) == before


def test_a_host_reached_over_ssh_or_an_unknown_workshop_is_refused_by_name(lab):
    code, report, _ = run_test(lab, "WKSHP-Nope")
    assert code == 1 and report["workshops"][0]["errors"] == ["unknown workshop 'WKSHP-Nope'"]
    code, report, _ = run_test(lab, "WKSHP-Good", "--host", "elsewhere")
    assert code == 1 and report["workshops"][0]["errors"] == ["unknown host 'elsewhere'"]
