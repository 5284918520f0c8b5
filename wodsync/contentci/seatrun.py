"""Run a seat's notebooks on this machine as the seat's user, never as root.

`setpriv` drops to the seat's uid, gid and groups before anything of the notebooks is read;
the interpreter then runs `runner.py`'s source (`python -I -c`: no path of the home on
`sys.path`, no `PYTHON*` variable read) with a fixed environment, chdirs into the home itself
and starts one kernel per notebook: the kernels, their connection files (which hold their
keys) and whatever a notebook writes belong to the seat, and go with its release.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wodsync.contentci import runner

ANSWER_LIMIT = 4 * 1024 * 1024  # bytes of the runner's answer read back


class RunError(Exception):
    """The notebooks could not be run at all (no interpreter, no nbclient, the runner died)."""


@dataclass(frozen=True)
class CellError:
    """The first error of a notebook: its cell (1-based over all cells; None: the notebook
    could not be read or its kernel not started before any cell), the error's name, message."""

    cell: int | None
    name: str
    message: str


@dataclass(frozen=True)
class NotebookRun:
    path: str        # relative to the home: `<workshop>/<notebook>`
    code_cells: int
    ran: int
    seconds: float
    error: CellError | None

    def located(self) -> str | None:
        """`<notebook>:cell <n>: <error name>: <message>`, None when it passed."""
        if self.error is None:
            return None
        where = self.path if self.error.cell is None else f"{self.path}:cell {self.error.cell}"
        first = self.error.message.strip().splitlines()
        return f"{where}: {self.error.name}: {first[0] if first else ''}".rstrip(": ")


@dataclass(frozen=True)
class Limits:
    cell_timeout: int = 300      # seconds one cell may run
    startup_timeout: int = 60    # seconds a kernel may take to start
    total_timeout: int = 3600    # seconds all the notebooks may take


def _environment(user: pwd.struct_passwd, python: Path) -> dict[str, str]:
    """What a seat's kernel sees of its environment: its own names and home, and a PATH with
    the interpreter's folder first (its `jupyter`, its kernels' launchers)."""
    return {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
            "SHELL": user.pw_shell or "/bin/bash", "LANG": "C.UTF-8",
            "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin"}


def closed_to_others(python: Path) -> Path | None:
    """The first folder (or the file) on the interpreter's real path that an account other
    than its owner cannot pass or run (a venv made from an interpreter under /root, say):
    the seat's kernels could not start from it. None when it is open."""
    real = python.resolve()
    for step in [*reversed(real.parents), real]:
        try:
            mode = step.stat().st_mode
        except OSError:
            return step
        if not mode & 0o001:
            return step
    return None


def argv(user: pwd.struct_passwd, python: Path) -> list[str]:
    """The seat's uid, gid and groups first, then the interpreter on the runner's source."""
    if user.pw_uid == 0:
        raise RunError("the notebooks never run as root")
    source = Path(runner.__file__).read_text(encoding="utf-8")
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            "--", str(python), "-I", "-c", source]


def run_notebooks(username: str, notebooks: list[str], python: Path,
                  limits: Limits | None = None) -> list[NotebookRun]:
    """Run `notebooks` (relative to the seat's home) as `username`, in order."""
    try:
        user = pwd.getpwnam(username)
    except KeyError:
        raise RunError(f"no account {username} on this machine") from None
    limits = limits or Limits()
    closed = closed_to_others(python)
    if closed is not None:
        raise RunError(f"{python}: {closed} is closed to other accounts, so the seat's kernels "
                       "cannot run it; give an interpreter every account may run (--python)")
    request = {"home": user.pw_dir, "notebooks": notebooks, "cell_timeout": limits.cell_timeout,
               "startup_timeout": limits.startup_timeout}
    try:
        done = subprocess.run(argv(user, python), input=json.dumps(request).encode(),
                              capture_output=True, env=_environment(user, python),
                              timeout=limits.total_timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RunError(f"the notebooks ran longer than {limits.total_timeout} s") from None
    except OSError as exc:
        raise RunError(f"cannot start {python} as {username}: {exc}") from None
    return _parse(done, python)


def _parse(done: subprocess.CompletedProcess[bytes], python: Path) -> list[NotebookRun]:
    lines = done.stdout[:ANSWER_LIMIT].decode(errors="replace").strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1])["notebooks"]
    except (IndexError, ValueError, KeyError, TypeError):
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RunError(f"{python} could not run the notebooks (exit {done.returncode}): "
                       + (" | ".join(tail) or "no output")) from None
    return [NotebookRun(rel, int(r["code"]), int(r["ran"]), float(r["seconds"]),
                        CellError(**r["error"]) if r["error"] else None)
            for rel, r in answer.items()]


def default_python(hub_prefix: str | None) -> Path:
    """The interpreter the seat's kernels come with: the host's hub environment when it has
    one (its kernels are registered there), else the one running wodsync."""
    if hub_prefix:
        candidate = Path(hub_prefix) / "bin/python"
        if candidate.exists():
            return candidate
    import sys

    return Path(sys.executable)


def is_root() -> bool:
    return os.geteuid() == 0
