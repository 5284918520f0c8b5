"""The author's watch mode: re-validate and re-plan a working tree on every save, never apply.

An author editing a workshop wants the daemon's verdict before committing: the located errors
it would record, or the plan it would apply. `watch_tree` follows `catalog/`, `hosts/` and
`templates/` with watchdog, waits for a quiet moment (an editor's save is several events), then
runs one review: validation in this process, and — when the tree is valid — the plan. With a
folder of facts (`--facts DIR`, what the daemon last observed, one `<host>.json` per host) the
plan is a preview computed here without SSH or credentials; without it, `wodsync plan` runs in
a child process and observes the hosts read-only. Nothing here can apply: the only command it
starts is `plan`, and a newer save stops a plan still running. Ctrl-C ends the watch cleanly.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

WATCHED = ("catalog", "hosts", "templates")
DEBOUNCE_S = 0.3
RELEVANT_EVENTS = frozenset({"created", "deleted", "modified", "moved", "closed"})
EDITOR_TEMP_SUFFIXES = ("~", ".swp", ".swx", ".swo", ".tmp", ".part")
STOP_WAIT_S = 5.0

Echo = Callable[[str], None]


def watched_path(root: Path, path: str | bytes) -> str | None:
    """`path` relative to `root` when it lies in a watched folder and is not an editor's
    temporary file; None otherwise."""
    text = os.fsdecode(path)
    try:
        rel = Path(text).relative_to(root)
    except ValueError:
        return None
    if not rel.parts or rel.parts[0] not in WATCHED:
        return None
    name = rel.name
    if name.startswith((".#", "#")) or name.endswith(EDITOR_TEMP_SUFFIXES) or name == "4913":
        return None
    return rel.as_posix()


class _Handler(FileSystemEventHandler):
    """Queues the watched paths an event touches (reads are not changes: no `opened`)."""

    def __init__(self, root: Path, changes: queue.Queue[str]) -> None:
        self.root = root
        self.changes = changes

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in RELEVANT_EVENTS or \
                (event.is_directory and event.event_type == "modified"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            rel = watched_path(self.root, path) if path else None
            if rel is not None:
                self.changes.put(rel)


class TreeWatch:
    """A watchdog observer over the watched folders that exist; `refresh` follows a folder
    created, removed or replaced since (the root itself is watched for that)."""

    def __init__(self, root: Path, changes: queue.Queue[str]) -> None:
        self.root = root
        self.handler = _Handler(root, changes)
        self.observer = Observer()
        self.watches: dict[str, tuple[Any, tuple[int, int]]] = {}

    def start(self) -> None:
        self.observer.schedule(self.handler, str(self.root), recursive=False)
        self.refresh()
        self.observer.start()

    def refresh(self) -> None:
        for name in WATCHED:
            folder = self.root / name
            try:
                info = folder.stat()
                ident = (info.st_dev, info.st_ino) if folder.is_dir() else None
            except OSError:
                ident = None
            current = self.watches.get(name)
            if current is not None and current[1] == ident:
                continue
            if current is not None:
                self.observer.unschedule(current[0])
                del self.watches[name]
            if ident is not None:
                watch = self.observer.schedule(self.handler, str(folder), recursive=True)
                self.watches[name] = (watch, ident)

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=STOP_WAIT_S)


def next_batch(changes: queue.Queue[str], debounce: float) -> list[str]:
    """Block until a change, then gather the ones that follow until `debounce` seconds pass
    without any: one review per save, however many events the editor made."""
    batch = {changes.get()}
    while True:
        try:
            batch.add(changes.get(timeout=debounce))
        except queue.Empty:
            return sorted(batch)


@dataclass
class Reviewer:
    """One review of the tree: validate, then plan (a preview from facts, or `wodsync plan`)."""

    root: Path
    echo: Echo
    facts_dir: Path | None = None
    secrets_file: Path | None = None
    superseded: Callable[[], bool] = lambda: False
    plan_argv: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plan_argv = self.plan_argv or live_plan_argv(self.root, self.secrets_file)

    def review(self, changed: list[str]) -> bool:
        """Print the errors or the plan; True when the tree is valid. Never raises."""
        stamp = time.strftime("%H:%M:%S")
        what = describe_changes(self.root, changed)
        self.echo(f"[{stamp}] {what + ': ' if what else ''}validating {self.root}")
        try:
            catalog = self._validate()
            if catalog is None:
                return False
            if self.facts_dir is not None:
                self._preview(catalog)
            else:
                self._live_plan()
            return True
        except Exception as exc:  # a broken tree or a bug must not end the author's watch
            self.echo(f"✗ review failed: {type(exc).__name__}: {exc}")
            return False

    def _validate(self) -> Any:
        from wodsync.catalog import validate

        catalog, found = validate(self.root)
        errors = [d for d in found if d.is_error]
        for d in found:
            self.echo(d.text())
        if errors:
            self.echo(f"✗ {len(errors)} error(s): fix and save again (no plan until it is "
                      "valid)")
            return None
        self.echo(f"✓ valid: {len(catalog.workshops)} workshops, {len(catalog.hosts)} hosts")
        return catalog

    def _preview(self, catalog: Any) -> None:
        from wodsync.engine.plan import render_text

        assert self.facts_dir is not None
        plans, notes = preview_plans(catalog, self.facts_dir, self._secrets())
        self.echo(f"plan: preview against the facts in {self.facts_dir} (no SSH; nothing is "
                  "applied)")
        for note in notes:
            self.echo(f"  ! {note}")
        self.echo(render_text(plans))

    def _secrets(self) -> Any:
        from wodsync.secrets import Placeholders, Secrets

        if self.secrets_file is not None or os.environ.get("WODSYNC_SECRETS"):
            return Secrets.load(self.secrets_file)
        return Placeholders()

    def _live_plan(self) -> None:
        """`wodsync plan` in a child (its own session: Ctrl-C is ours to handle), stopped if
        a newer save supersedes it."""
        self.echo("plan: observing the hosts read-only (`wodsync plan`; nothing is applied)")
        sys.stdout.flush()
        proc = subprocess.Popen(self.plan_argv, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if self.superseded():
                        self.echo("(plan stopped: a newer save supersedes it)")
                        return
        finally:
            stop_child(proc)
        verdict = {0: "no changes", 2: "changes pending"}.get(code, f"plan failed (exit {code})")
        self.echo(f"plan: {verdict}")


def describe_changes(root: Path, changed: list[str], shown: int = 3) -> str:
    """`a.yaml, b.yaml changed` for the files saved; an editor's temporary files (gone by
    now) are named only when nothing else changed, as removed."""
    present = [p for p in changed if (root / p).is_file()]
    if present:
        more = f" and {len(present) - shown} more" if len(present) > shown else ""
        return ", ".join(present[:shown]) + more + " changed"
    gone = [p for p in changed if not (root / p).exists()]
    if gone:
        more = f" and {len(gone) - shown} more" if len(gone) > shown else ""
        return ", ".join(gone[:shown]) + more + " removed"
    return ", ".join(changed[:shown]) + " changed" if changed else ""


def live_plan_argv(root: Path, secrets_file: Path | None) -> list[str]:
    """The only command watch runs: `wodsync plan` (read-only), never `apply`."""
    argv = [sys.executable, "-m", "wodsync", "plan", "--root", str(root)]
    if secrets_file is not None:
        argv += ["--secrets", str(secrets_file)]
    return argv


def stop_child(proc: subprocess.Popen[Any]) -> None:
    """Terminate a plan still running (it only observes), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load_facts(facts_dir: Path, host: str) -> tuple[Any, str | None]:
    """A host's published facts (`wodsync.authoring.facts.FactsDocument`, sanitised) from
    `<facts_dir>/<host>.json` — an export, or an older bare facts object — with a note for the
    reader; (None, why) when there are none to plan from."""
    from wodsync.authoring.facts import FactsError, Malformed, NoFacts, load_file

    try:
        doc = load_file(facts_dir / f"{host}.json", host)
    except NoFacts as exc:
        return None, f"{exc}; not planned"
    except Malformed as exc:
        return None, (f"host {host}: the facts in {facts_dir} are incomplete or malformed "
                      f"({exc}); not planned")
    except FactsError as exc:
        return None, f"{exc}; not planned"
    seen = ", ".join(f"{k} {v}" for k, v in (("observed_at", doc.observed_at),
                                              ("revision", doc.revision)) if v)
    return doc, f"host {host}: facts {seen}" if seen else None


def preview_plans(catalog: Any, facts_dir: Path, secrets: Any) -> tuple[list[Any], list[str]]:
    """Each host's plan against its published facts (pure: no SSH, nothing applied), as
    `wodsync plan --facts` computes it."""
    from wodsync.authoring.preview import preview_host

    plans, notes = [], []
    for name in sorted(catalog.hosts):
        doc, note = load_facts(facts_dir, name)
        if note:
            notes.append(note)
        if doc is None:
            continue
        found = preview_host(catalog, doc, secrets)
        if found.error:
            notes.append(found.error)
        else:
            plans.append(found.plan)
    return plans, notes


def watch_tree(root: Path, echo: Echo, *, facts_dir: Path | None = None,
               secrets_file: Path | None = None, debounce: float = DEBOUNCE_S) -> None:
    """Review the tree now and after every save until Ctrl-C (KeyboardInterrupt) or SIGTERM,
    which return normally."""
    root = root.resolve()
    changes: queue.Queue[str] = queue.Queue()
    reviewer = Reviewer(root, echo, facts_dir, secrets_file,
                        superseded=lambda: not changes.empty())
    tree = TreeWatch(root, changes)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        tree.start()
        echo(f"watching {', '.join(f'{n}/' for n in WATCHED)} under {root} (Ctrl-C to stop)")
        reviewer.review([])
        while True:
            batch = next_batch(changes, debounce)
            tree.refresh()
            reviewer.review(batch)
    except KeyboardInterrupt:
        echo("stopped watching")
    finally:
        signal.signal(signal.SIGTERM, previous)
        tree.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
