"""A real browser for tests: Debian's chromium driven by Playwright (from PyPI).

What a participant sees is what these tests check, so they use the browser participants use,
not an HTTP client. `./bootstrap test` installs Debian's `chromium` and the `playwright`
package; Playwright is given that binary (`executable_path`) and never downloads a browser of
its own (`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD`, and no `playwright install` anywhere).

Loaded by conftest.py as a plugin: the fixtures `chromium` (one headless browser per module)
and `page` (a fresh context and page per test: no cookie leaks from one test into the next).
Without chromium the tests skip saying so, and under --strict-root (`./bootstrap test`) they
fail instead: a run that did not open the browser proves nothing about it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from needsroot import strict

if TYPE_CHECKING:  # imported where used: without playwright the tests skip, not crash
    from playwright.sync_api import Browser, Page

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
# Another chromium build may be named; the default is Debian's package.
ENV = "WODSYNC_TEST_CHROMIUM"
MISSING = ("needs root and Debian's chromium with the playwright package "
           "(./bootstrap test installs both)")
# Long enough for a JupyterLab start on a busy 2-core machine, short enough to fail clearly.
TIMEOUT_MS = 90_000


def chromium_path() -> str | None:
    """The chromium binary to drive: $WODSYNC_TEST_CHROMIUM, else Debian's on the PATH."""
    named = os.environ.get(ENV)
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("chromium")


def _unavailable(config: pytest.Config, why: str) -> NoReturn:
    if strict(config):
        pytest.fail(f"{why}: the browser tests cannot run ({MISSING})", pytrace=False)
    pytest.skip(f"{MISSING}: {why}")


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """One headless chromium for the module's tests, closed after them."""
    path = chromium_path()
    if path is None:
        _unavailable(request.config, f"no chromium ({ENV} or `chromium` on the PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable(request.config, "the playwright package is not installed")
    with sync_playwright() as driver:
        # Chromium's sandbox cannot run as root: only then is it switched off.
        browser = driver.chromium.launch(executable_path=path, headless=True,
                                         chromium_sandbox=os.geteuid() != 0)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a context of its own (cookies, storage), with the tests' timeout."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
