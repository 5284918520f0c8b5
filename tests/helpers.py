"""What the tests share: assertions on diagnostics, test accounts' cleanup, waiting, and the
one way to run the `wodsync` command line (in this process, or as a real process)."""

from __future__ import annotations

import contextlib
import grp
import io
import os
import pwd
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

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


def remove_test_cgroups(prefix: str) -> None:
    """Every seat cgroup (`wodsync/<workshop>/<user>`, agent.limits) of users named `prefix…`
    on this machine, its processes killed; the folders above it go too once empty."""
    from wodsync.agent.limits import CGROUP_ROOT, backends, cgroupfs

    version = backends.detect(CGROUP_ROOT)
    for tree in backends.hierarchies(version, CGROUP_ROOT) if version else []:
        for workshop in cgroupfs.children(tree.base, [backends.TOP]):
            users = [u for u in cgroupfs.children(tree.base, [backends.TOP, workshop])
                     if u.startswith(prefix)]
            for user in users:
                cgroupfs.remove(tree.base, [backends.TOP, workshop, user])
            if users:
                cgroupfs.prune(tree.base, [backends.TOP, workshop])
        cgroupfs.prune(tree.base, [backends.TOP])  # only when nothing is left in it


def ended(pid: int) -> bool:
    """Whether process `pid` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def until(check: Callable[[], object], message: str, timeout: float = 60) -> None:
    """Wait for `check()` to hold (polled every 0.2 s), else fail with `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(message)


# The installed entry point, as an operator runs it (beside the interpreter running the tests).
WODSYNC = str(Path(sys.executable).parent / "wodsync")


def wodsync_argv(*args: object) -> list[str]:
    """The argv of the real `wodsync` executable: for tests about the process itself (exit
    codes of a real process, signals, a server or daemon that runs beside the test)."""
    return [WODSYNC, *(str(a) for a in args)]


def wodsync(*args: object, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float = 300, process: bool = False) -> subprocess.CompletedProcess[str]:
    """`wodsync ARGS` with its exit status, stdout and stderr, as `subprocess.run` returns them.

    By default the command runs in this process (the console entry point `wodsync.cli.run`,
    with its own argv, environment, stdin and output streams): the same code and exit codes
    without paying an interpreter start-up and the imports each time, which is most of a short
    command's cost. `env` is the whole environment, as for `subprocess.run`. `process=True`
    runs the installed executable instead (then `timeout` applies)."""
    argv = wodsync_argv(*args)
    if process:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), input=stdin)
    with _isolated(argv, env, stdin) as (out, err):
        code = _run_entry_point()
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue(), err.getvalue()
    return subprocess.CompletedProcess(argv, code, stdout.decode("utf-8", "replace"),
                                       stderr.decode("utf-8", "replace"))


def _run_entry_point() -> int:
    """What the interpreter makes of `wodsync.cli.run()`: its exit status, and a traceback on
    stderr with status 1 for an exception nothing caught (a test asserting there is none
    sees it as it would from a real process)."""
    from wodsync.cli import run

    try:
        run()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _isolated(argv: list[str], env: Mapping[str, str] | None,
              stdin: str | None) -> Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """sys.argv, os.environ and the three standard streams of a command run in this process.

    Plain text streams over bytes, not click's CliRunner: its isolation also echoes prompts
    and the answers read to stdout, where a real process writes a prompt to stderr
    (`click.confirm(err=True)`) and keeps stdout for its output (JSON). stdin is empty when
    not given, as /dev/null is for a child of a test run."""
    out, err = io.BytesIO(), io.BytesIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    saved_env = dict(os.environ)
    sys.argv = list(argv)
    sys.stdin = io.TextIOWrapper(io.BytesIO((stdin or "").encode()), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace",
                                  write_through=True)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        yield out, err
    finally:
        for stream in (sys.stdout, sys.stderr, sys.stdin):
            stream.detach()
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
        if os.environ != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)


def fill_placeholders(root: Path, host_lines: str = "transport: local",
                      value: str = "filled") -> list[str]:
    """What an operator does after `wodsync import`: every `CHANGE-ME` placeholder of the
    hosts and workshops given a value (a host's address 127.0.0.1 with `host_lines`); the
    files changed, relative to `root`."""
    import re

    changed = []
    for path in sorted([*root.glob("hosts/*.yaml"), *root.glob("catalog/*.yaml"),
                        *root.glob("catalog/workshops/*/workshop.yaml")]):
        text = path.read_text(encoding="utf-8")
        new = text.replace("address: CHANGE-ME\n", f"address: 127.0.0.1\n{host_lines}\n")
        new = re.sub(r"""(:\s*)(["']?)CHANGE-ME[^\n]*""", rf"\g<1>{value}", new)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path.relative_to(root).as_posix())
    return changed
