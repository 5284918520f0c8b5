"""Assertions on diagnostics shared by the tests."""

from __future__ import annotations

import grp
import pwd
import subprocess
import time
from collections.abc import Callable

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


def remove_test_accounts(prefix: str, uid_base: int, groups: tuple[str, ...] = ()) -> None:
    """Every account and group a test made: its name prefix *and* its uid range, never more."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix) and uid_base < entry.pw_uid < uid_base + 1000:
            subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
    for g in grp.getgrall():
        if (g.gr_name.startswith(prefix) and uid_base < g.gr_gid < uid_base + 1000) \
                or g.gr_name in groups:
            subprocess.run(["groupdel", g.gr_name], check=False, capture_output=True)


def until(check: Callable[[], object], message: str, timeout: float = 60) -> None:
    """Wait for `check()` to hold (polled every 0.2 s), else fail with `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(message)
