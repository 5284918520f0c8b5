"""Shared fixtures: a throw-away copy of the project's example repository per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from wodsync.cli import main

PROJECT = Path(__file__).resolve().parent.parent
pytest_plugins = ["enginelab"]  # the one-host SSH lab fixtures (`sshd`, `lab`)
REPO_PARTS = ("catalog", "hosts", "templates", "schemas")


class Repo:
    """A copy of the example catalog that a test may break on purpose."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str | bytes) -> Path:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
        return target

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def replace(self, rel: str, old: str, new: str) -> None:
        text = self.read(rel)
        assert old in text, f"{old!r} not in {rel}"
        self.write(rel, text.replace(old, new, 1))

    def line_of(self, rel: str, needle: str) -> int:
        """1-based line of the first line containing `needle` (so tests assert real lines)."""
        for n, line in enumerate(self.read(rel).splitlines(), start=1):
            if needle in line:
                return n
        raise AssertionError(f"{needle!r} not in {rel}")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repo"
    root.mkdir()
    for part in REPO_PARTS:
        shutil.copytree(PROJECT / part, root / part, symlinks=True)
    return Repo(root)


@pytest.fixture
def cli() -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return run
