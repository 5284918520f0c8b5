"""The test suite itself: a run as a normal user says loudly that it skipped the root tests,
and `--strict-root` / WODSYNC_REQUIRE_ROOT=1 (what CI uses) turns those skips into failures.

A tiny suite (one root test, one plain test) with tests/needsroot.py as its only plugin,
run by pytest as `nobody`: cheap (one interpreter, no lab), and as real as a developer's run.
`nobody` keeps one capability, reading and searching any folder, so that it can start this
interpreter and its packages wherever they are (a venv under /root, a pyenv build); it is
still a user other than root, which is all the suite looks at.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import needsroot

TINY = '''
import os
import pytest

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")
def test_needs_root():
    pass

def test_pure():
    pass
'''


@pytest.fixture
def tiny_suite() -> Iterator[Path]:
    """The tiny suite and the plugin in a folder of their own that `nobody` may read."""
    folder = Path(tempfile.mkdtemp(prefix="wodsync-tiny-suite-", dir="/tmp"))
    folder.chmod(0o755)
    (folder / "test_tiny.py").write_text(TINY)
    shutil.copy(needsroot.__file__, folder / "needsroot.py")
    yield folder
    shutil.rmtree(folder)


def _run_as_nobody(folder: Path, *args: str, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")
    become = ["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
              "--clear-groups", "--inh-caps", "+dac_read_search",
              "--ambient-caps", "+dac_read_search"]
    return subprocess.run(
        [*become, sys.executable, "-m", "pytest", "-p", "needsroot", "-p", "no:cacheprovider",
         "--rootdir", str(folder), "-c", os.devnull, "--color=no", *args, str(folder)],
        cwd=folder, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "PYTHONPATH": str(folder), "HOME": str(folder), **(env or {})},
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs pytest as `nobody`: needs root")
def test_a_run_as_a_normal_user_says_at_the_top_and_the_end_what_it_skipped(tiny_suite):
    done = _run_as_nobody(tiny_suite)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    uid = pwd.getpwnam("nobody").pw_uid
    header = f"WARNING: not root (uid {uid}): every test that needs root will be SKIPPED"
    top = f"1 of 2 tests need root and will be SKIPPED (uid {uid})"
    end = (f"1 test that needs root was SKIPPED (uid {uid}): accounts, sshd, hubs and /etc "
           "were not tested")
    assert header in out and top in out and end in out, out
    assert out.index(top) < out.index("test_tiny.py") < out.index(end), "top, tests, end"
    assert "1 passed, 1 skipped" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="runs pytest as `nobody`: needs root")
@pytest.mark.parametrize(("args", "env"), [(("--strict-root",), {}),
                                           ((), {needsroot.ENV: "1"})],
                         ids=["option", "environment"])
def test_strict_root_turns_the_skips_into_failures(tiny_suite, args, env):
    done = _run_as_nobody(tiny_suite, *args, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout, "the skip is now an error of its set-up"
    assert ("test_tiny.py::test_needs_root needs root and this run is not root: it was not "
            "run (--strict-root or WODSYNC_REQUIRE_ROOT=1 forbids skipping it)") in done.stdout
