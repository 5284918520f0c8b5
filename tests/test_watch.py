"""`wodsync watch` as an author runs it: a real process on a copy of the example catalog, real
saves, the located error and then the plan printed, Ctrl-C; never an apply."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wodsync.authoring.watch import (
    Reviewer,
    describe_changes,
    live_plan_argv,
    next_batch,
    preview_plans,
    watched_path,
)
from wodsync.catalog import validate
from wodsync.engine.desired import desired_state
from wodsync.secrets import Placeholders

from conftest import Repo
from facts import converged

WAIT_S = 30.0  # an upper bound for output to show up, not a performance figure
NO_CHANGES = "Plan: 0 to create, 0 to change, 0 to delete."


def _as_a_terminal_job() -> None:
    """Ctrl-C reaches a terminal's job even when the test run itself was started in the
    background (`cmd &` in a script ignores SIGINT, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class WatchProcess:
    """`wodsync watch` in its own session (as a terminal's foreground job), output collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wodsync", "watch", *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
            preexec_fn=_as_a_terminal_job)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, start: int = 0) -> int:
        """Index of the first line from `start` matching `pattern`, waiting up to WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        n = start
        while True:
            while n < len(self.lines):
                if re.search(pattern, self.lines[n]):
                    return n
                n += 1
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self._new.empty()):
                raise AssertionError(f"no line matching {pattern!r}; output:\n" +
                                     "\n".join(self.lines))
            with contextlib.suppress(queue.Empty):
                self.lines.append(self._new.get(timeout=min(left, 0.5)))

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)
        while not self._new.empty():
            self.lines.append(self._new.get())
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def watches() -> Iterator[list[WatchProcess]]:
    started: list[WatchProcess] = []
    yield started
    for w in started:
        w.close()


def write_converged_facts(root: Path, folder: Path) -> None:
    """The facts of hosts where the catalog at `root` is fully deployed, one file per host."""
    catalog, _ = validate(root)
    folder.mkdir()
    for name in catalog.hosts:
        facts = converged(desired_state(catalog, name, Placeholders()))
        record = {"facts": facts, "observed_at": "2026-01-01T00:00:00Z", "revision": "abc123"}
        (folder / f"{name}.json").write_text(json.dumps(record))


def test_watch_prints_the_located_error_then_the_plan_from_facts(
        repo: Repo, tmp_path: Path, watches: list[WatchProcess]) -> None:
    facts = tmp_path / "facts"
    write_converged_facts(repo.root, facts)
    watch = WatchProcess(["--root", str(repo.root), "--facts", str(facts), "--debounce", "0.2"])
    watches.append(watch)
    at = watch.wait_for(re.escape(NO_CHANGES))

    rel = "hosts/hub-emea.yaml"
    line = repo.line_of(rel, "port: 22")
    repo.replace(rel, "port: 22", "port: '22'")
    at = watch.wait_for(rf"^{re.escape(rel)}:{line}:\d+: error\[", at + 1)
    at = watch.wait_for(r"✗ 1 error", at + 1)

    repo.replace(rel, "port: '22'", "port: 22")
    repo.replace(rel, "tcp_keepalive_time: 1800", "tcp_keepalive_time: 1900")
    at = watch.wait_for(r"✓ valid", at + 1)
    at = watch.wait_for(r"~ sysctl:net\.ipv4\.tcp_keepalive_time\s+\(1800 → 1900\)", at + 1)
    watch.wait_for(r"^Plan: 0 to create, 2 to change, 0 to delete\.$", at + 1)

    assert watch.interrupt() == 0
    output = "\n".join(watch.lines)
    assert "stopped watching" in output and "Traceback" not in output
    assert "facts observed_at 2026-01-01T00:00:00Z, revision abc123" in output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_facts_watch_runs_a_read_only_plan_against_the_hosts(
        repo: Repo, watches: list[WatchProcess]) -> None:
    port = closed_port()
    for name in ("hub-amer", "hub-emea"):
        rel = f"hosts/{name}.yaml"
        text = re.sub(r"(?m)^address: .*$", "address: 127.0.0.1", repo.read(rel))
        repo.write(rel, text.replace("port: 22", f"port: {port}"))
    tokens = {"HUB_AMER_TOKEN": "t1", "HUB_EMEA_TOKEN": "t2"}
    watch = WatchProcess(["--root", str(repo.root), "--debounce", "0.2"], env=tokens)
    watches.append(watch)
    at = watch.wait_for(r"observing the hosts read-only")
    at = watch.wait_for(rf"hub-emea: cannot connect to 127\.0\.0\.1:{port}", 0)
    at = watch.wait_for(r"^plan: plan failed \(exit 1\)$", at)

    repo.replace("catalog/workshops/WKSHP-Python101/workshop.yaml", "capacity: 40",
                 "capcity: 40")
    at = watch.wait_for(r"^catalog/workshops/WKSHP-Python101/workshop\.yaml:\d+:\d+: error\[",
                        at + 1)
    assert watch.interrupt() == 0
    assert "Traceback" not in "\n".join(watch.lines)


def test_a_newer_save_stops_a_plan_still_running(repo: Repo) -> None:
    out: list[str] = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    reviewer = Reviewer(repo.root, out.append, superseded=lambda: True, plan_argv=sleeper)
    assert reviewer.review(["catalog/locations.yaml"])
    assert "(plan stopped: a newer save supersedes it)" in out


def test_the_only_command_watch_starts_is_plan(tmp_path: Path) -> None:
    argv = live_plan_argv(tmp_path, tmp_path / "secrets.yaml")
    assert argv[1:4] == ["-m", "wodsync", "plan"] and "apply" not in argv
    assert argv[argv.index("--root") + 1] == str(tmp_path)


def test_a_review_of_an_invalid_tree_prints_errors_and_no_plan(repo: Repo) -> None:
    repo.replace("catalog/workshops/WKSHP-Python101/workshop.yaml", "capacity: 40",
                 "capacity: '40'")
    out: list[str] = []
    never = [sys.executable, "-c", "raise SystemExit('a plan ran')"]
    assert not Reviewer(repo.root, out.append, plan_argv=never).review([])
    assert any(line.startswith("catalog/workshops/WKSHP-Python101/workshop.yaml:")
               for line in out)
    assert not any(line.startswith("plan:") for line in out)


def test_hosts_without_or_with_broken_facts_are_named_and_skipped(repo: Repo,
                                                                 tmp_path: Path) -> None:
    catalog, _ = validate(repo.root)
    folder = tmp_path / "facts"
    folder.mkdir()
    (folder / "hub-emea.json").write_text(json.dumps({"account": {}}))
    plans, notes = preview_plans(catalog, folder, Placeholders())
    assert plans == []
    assert any(n.startswith("host hub-amer: no facts") for n in notes)
    assert any(n.startswith("host hub-emea: the facts in") and "incomplete" in n
               for n in notes)


def test_only_saves_in_the_watched_folders_count(tmp_path: Path) -> None:
    root = tmp_path
    assert watched_path(root, str(root / "catalog/workshops/W/workshop.yaml")) == \
        "catalog/workshops/W/workshop.yaml"
    assert watched_path(root, os.fsencode(root / "hosts/a.yaml")) == "hosts/a.yaml"
    assert watched_path(root, str(root / "templates")) == "templates"
    for ignored in (".git/index", "README.md", "catalog/.workshop.yaml.swp",
                    "catalog/workshop.yaml~", "hosts/4913", "hosts/.#a.yaml"):
        assert watched_path(root, str(root / ignored)) is None, ignored
    assert watched_path(root, "/elsewhere/catalog/x.yaml") is None


def test_a_burst_of_events_is_one_review() -> None:
    changes: queue.Queue[str] = queue.Queue()
    for path in ("hosts/b.yaml", "hosts/a.yaml", "hosts/b.yaml"):
        changes.put(path)
    assert next_batch(changes, debounce=0.05) == ["hosts/a.yaml", "hosts/b.yaml"]
    assert changes.empty()


def test_a_save_is_described_by_the_files_saved_not_the_editor_temporaries(
        repo: Repo) -> None:
    rel = "catalog/locations.yaml"
    assert describe_changes(repo.root, ["catalog", rel, "catalog/sedAbC123"]) == \
        f"{rel} changed"
    assert describe_changes(repo.root, ["catalog/workshops/WKSHP-Gone"]) == \
        "catalog/workshops/WKSHP-Gone removed"
    assert describe_changes(repo.root, []) == ""
