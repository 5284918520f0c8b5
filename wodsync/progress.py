"""What long work is doing while it does it: `apply`, `demo` and the daemon's installs.

A host's first apply takes minutes (a venv, JupyterHub from PyPI, the proxy from npm, the
accounts), and a silent terminal for that long looks like a hang. Each host reports where it
is — observing, applying (the agent's phase, and what a long phase is at), observing again —
with n/m of its planned changes done and the time since it started. On a terminal that is a
`rich` display, one row per host; otherwise (output to a file or a pipe, `--log-json`, the
daemon) one log line per step through wodsync's log format (`wodsync.logs`), so a log pipeline
reads them as it reads every other line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import (
    Progress as RichBar,
)

LOGGER = "wodsync.progress"


@dataclass
class HostStep:
    """Where one host is: its phase, what that phase is at, changes done of its total."""

    host: str
    phase: str = "starting"
    detail: str = ""
    done: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        what = f"{self.phase}: {self.detail}" if self.detail else self.phase
        counts = f"{self.done}/{self.total} changes, " if self.total is not None else ""
        return f"{self.host}: {what} [{counts}{self.elapsed:.1f} s]"


class Progress:
    """Receives each host's steps. This base shows nothing: for callers that want no output
    (a `plan`, a test); `Lines` and `Live` show them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hosts: dict[str, HostStep] = {}

    def update(self, host: str, phase: str | None = None, detail: str = "",
               done: int | None = None, total: int | None = None) -> None:
        """A host's new step (arguments left out keep their value; `detail` is per step)."""
        with self._lock:
            step = self.hosts.setdefault(host, HostStep(host))
            step.phase = phase or step.phase
            step.detail = detail
            step.done = step.done if done is None else done
            step.total = step.total if total is None else total
            self.show(step)

    def show(self, step: HostStep) -> None:
        """Shows `step` (the lock is held)."""

    def close(self) -> None:
        """The work is over."""


class Lines(Progress):
    """One log line per step (`wodsync.progress`, with host, phase, detail and counts as
    fields; `fields=False`: the message alone, for a person reading a command's output).
    `changes_only`: nothing for a host with nothing to change (the daemon observes every host
    at each resync; only the work is worth a line)."""

    def __init__(self, log: logging.Logger | None = None, changes_only: bool = False,
                 fields: bool = True) -> None:
        super().__init__()
        self.log = log or logging.getLogger(LOGGER)
        self.changes_only = changes_only
        self.fields = fields

    def show(self, step: HostStep) -> None:
        if self.changes_only and not step.total:
            return
        fields = {"host": step.host, "phase": step.phase, "detail": step.detail or None,
                  "done": step.done, "total": step.total, "elapsed": round(step.elapsed, 1)}
        self.log.info(step.text(), extra={"fields": {
            k: v for k, v in fields.items() if v is not None} if self.fields else {}})


class Live(Progress):
    """A rich display on a terminal: per host a spinner, phase, n/m changes and elapsed."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.bar = RichBar(SpinnerColumn(), TextColumn("[bold]{task.fields[host]}"),
                           TextColumn("{task.description}"), MofNCompleteColumn(),
                           TextColumn("changes"), TimeElapsedColumn(),
                           console=Console(file=stream), transient=False)
        self.tasks: dict[str, TaskID] = {}
        self.bar.start()

    def show(self, step: HostStep) -> None:
        what = f"{step.phase}: {step.detail}" if step.detail else step.phase
        if step.host not in self.tasks:
            self.tasks[step.host] = self.bar.add_task(what, host=step.host, total=step.total)
        self.bar.update(self.tasks[step.host], description=what, completed=step.done,
                        total=step.total)

    def close(self) -> None:
        self.bar.stop()


def is_terminal(stream: IO[str]) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


@contextlib.contextmanager
def _lines_to(stream: IO[str], as_json: bool) -> Iterator[logging.Logger]:
    """A logger whose lines reach `stream` in wodsync's log format for the command's time."""
    from wodsync.logs import JsonFormatter, TextFormatter

    log = logging.getLogger(LOGGER + ".command")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log
    finally:
        log.removeHandler(handler)


@contextlib.contextmanager
def shown(stream: IO[str] | None = None, as_json: bool = False) -> Iterator[Progress]:
    """The display for a command: rich on a terminal, log lines otherwise (or with JSON)."""
    stream = stream or sys.stderr
    if is_terminal(stream) and not as_json:
        live = Live(stream)
        try:
            yield live
        finally:
            live.close()
        return
    with _lines_to(stream, as_json) as log:
        yield Lines(log, fields=as_json)


class Batch:
    """n/m changes of one host's apply, from the agent's phase steps: a phase starts only when
    every phase before it in the global order ended, so the changes of the kinds whose phases
    are all behind are done."""

    def __init__(self, changes_by_kind: dict[str, int]) -> None:
        from wodsync.agent.kinds import KINDS

        phases = sorted((order, f"{kind}.{name}", kind)
                        for kind in changes_by_kind for order, name, _ in KINDS[kind].PHASES)
        self.names = [name for _, name, _ in phases]
        last = {kind: i for i, (_, _, kind) in enumerate(phases)}
        self.changes = changes_by_kind
        self.last = last
        self.total = sum(changes_by_kind.values())

    def done_before(self, step: int) -> int:
        """Changes done when phase number `step` starts."""
        return sum(n for kind, n in self.changes.items() if self.last[kind] < step)


def agent_step(progress: Progress, host: str, batch: Batch) -> Any:
    """A `remote.call` step listener: the agent's phase steps onto `progress`."""
    def step(event: dict[str, Any]) -> None:
        at = event.get("step")
        done = batch.done_before(at) if isinstance(at, int) else None
        progress.update(host, f"applying {event.get('phase', '')}", str(event.get("detail", "")),
                        done=done)
    return step
