"""Project hygiene that CI enforces: lint, the GitHub workflow's shape, the README's commands."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "wodsync", "tests", "bench"],
                            cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_matches_the_github_workflow_schema():
    """check-jsonschema's vendored GitHub workflow schema, offline."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(PROJECT / ".github/workflows/validate.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_validate_schema_check_and_tests():
    text = (PROJECT / ".github/workflows/validate.yml").read_text()
    for step in ("wodsync validate --format github", "wodsync schema --check",
                 "./bootstrap test"):
        assert step in text


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    ci = (PROJECT / ".ci/run").read_text()
    assert "./bootstrap test" in readme and "./bootstrap test" in ci
    assert "./bootstrap demo" in readme
