"""Content CI without a seat: the runner's host files and the reports a CI job shows."""

from __future__ import annotations

import shutil
from pathlib import Path

from wodsync.catalog import validate
from wodsync.contentci.ci import ContentReport
from wodsync.contentci.report import markdown, text
from wodsync.contentci.runnerhosts import runner_hosts
from wodsync.contentci.seatrun import CellError, NotebookRun
from wodsync.diagnostics import has_errors

PROJECT = Path(__file__).resolve().parent.parent


def test_the_runner_becomes_a_local_host_of_every_location_with_its_variables(tmp_path):
    for part in ("catalog", "hosts", "templates"):
        shutil.copytree(PROJECT / part, tmp_path / part)
    catalog, _ = validate(tmp_path)
    files = runner_hosts(catalog)
    assert sorted(files) == ["hosts/ci-runner-amer.yaml", "hosts/ci-runner-emea.yaml"]
    for rel, content in files.items():
        (tmp_path / rel).write_text(content)
    catalog, found = validate(tmp_path)
    assert not has_errors(found), found
    emea = catalog.hosts["ci-runner-emea"]
    assert (emea.transport, emea.location, emea.pool, emea.hub) == ("local", "emea", "student",
                                                                    None)
    assert emea.variables == catalog.hosts["hub-emea"].variables


def test_a_failed_notebook_is_shown_at_its_cell_in_text_and_markdown():
    run = NotebookRun("WKSHP-X/1-A.ipynb", 3, 1, 0.5,
                      CellError(4, "NameError", "name 'y' is not defined\nmore"))
    report = ContentReport("WKSHP-X", "qc1", "wodqc1", "abc", [run],
                           [run.located() or ""], released=True, seconds=2.0)
    located = "WKSHP-X/1-A.ipynb:cell 4: NameError: name 'y' is not defined"
    assert run.located() == located and not report.passed
    assert f"  ✗ {located}" in text(report)
    md = markdown([report])
    assert "| WKSHP-X | qc1 | 1 (1/3 code cells) | ❌ failed | 2.0 |" in md
    assert f"- `{located}`" in md
    assert "No workshop changed" in markdown([])
