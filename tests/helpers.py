"""Assertions on diagnostics shared by the tests."""

from __future__ import annotations

from wodsync.catalog import validate
from wodsync.diagnostics import Diagnostic


def errors_of(root) -> list[Diagnostic]:
    _, found = validate(root)
    return [d for d in found if d.is_error]


def only_error(root, code: str) -> Diagnostic:
    """Exactly one error, with `code`; returned for path and position assertions."""
    found = errors_of(root)
    assert [d.code for d in found] == [code], "\n".join(d.text() for d in found)
    return found[0]
