"""Tests that need root: marked `root`, counted loudly when a run skips them, and failed instead
of skipped under `--strict-root` (or WODSYNC_REQUIRE_ROOT=1, which `./bootstrap test` sets).

A third of the suite drives real Linux accounts, sshd, JupyterHub and /etc: as a normal user
those tests skip, and a run that skipped them proves little about wodsync. A quiet "passed"
line must not hide that, so the count is printed at the top and at the end of the run, in
red; CI requires them to run, so its run can never pass without them.

A test needs root when its module's table entry in conftest.py says so or when it has a
`skipif` whose reason says "needs root" (how every such test says why it skips). Loaded by
conftest.py as a plugin of its own, so that tests/test_suite.py can run it on a tiny suite.
"""

from __future__ import annotations

import os

import pytest

ENV = "WODSYNC_REQUIRE_ROOT"
MARK = "root"
REASON = "needs root"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--strict-root", action="store_true", default=False,
                     help=f"fail (not skip) the tests that need root when not run as root; "
                          f"also {ENV}=1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}: needs root (real accounts, /etc, sshd, "
                                       f"hubs); `-m 'not {MARK}'` runs the rest in seconds")
    config.pluginmanager.register(SkippedForRoot(), "wodsync-skipped-for-root")


def strict(config: pytest.Config) -> bool:
    return bool(config.getoption("--strict-root")) or os.environ.get(ENV, "") not in ("", "0")


def needs_root(item: pytest.Item) -> bool:
    return any(REASON in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before `-m` deselects and xdist reads the groups: `-m "not root"` must see the mark."""
    for item in items:
        if needs_root(item) and item.get_closest_marker(MARK) is None:
            item.add_marker(MARK)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The warning at the top, even with -q (which drops the report header) and xdist."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.geteuid() == 0 or reporter is None:
        return
    then = "FAIL (--strict-root)" if strict(session.config) else "be SKIPPED"
    reporter.write_line(f"WARNING: not root (uid {os.geteuid()}): every test that needs root "
                        f"will {then}; run ./bootstrap test as root for the whole suite",
                        red=True, bold=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if report.skipped and os.geteuid() != 0 and item.get_closest_marker(MARK) is not None \
            and strict(item.config):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} needs root and this run is not root: it was "
                           f"not run (--strict-root or {ENV}=1 forbids skipping it)")
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    """The count at the top, before any test runs (xdist's controller collects nothing: its
    workers do, and the header above says it then)."""
    if os.geteuid() == 0:
        return
    count = sum(item.get_closest_marker(MARK) is not None for item in session.items)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if count and reporter is not None:
        then = "will FAIL" if strict(session.config) else "will be SKIPPED"
        reporter.write_line(f"{count} of {len(session.items)} tests need root and {then} "
                            f"(uid {os.geteuid()})", red=True, bold=True)


class SkippedForRoot:
    """Tests that need root and were skipped, as the run's reports say (with xdist, the
    controller receives every worker's reports); said again at the end."""

    def __init__(self) -> None:
        self.nodeids: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and report.keywords.get(MARK) and os.geteuid() != 0:
            self.nodeids.append(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.nodeids:
            return
        terminalreporter.section("tests that need root", sep="!", red=True, bold=True)
        count = len(self.nodeids)
        what = "1 test that needs root was" if count == 1 else f"{count} tests that need root were"
        terminalreporter.write_line(
            f"{what} SKIPPED (uid {os.geteuid()}): "
            f"accounts, sshd, hubs and /etc were not tested. Run ./bootstrap test as root; "
            f"--strict-root or {ENV}=1 makes this a failure.", red=True, bold=True)
