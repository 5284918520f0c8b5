"""Content CI: a workshop run for real on an ephemeral seat, the host left as it was found.

The seat is given through the session service, exactly as a participant's CREATE (rendering,
hooks, compile, records, hub); its notebooks then run as the seat's user (`seatrun`), the
workshop's checks (issue 21's `checks:`, their `solve` scripts first) must all pass
(`run_checks`), and the seat is ended — CLEANUP, then RESET for a `reset: true` workshop,
PURGE if anything is left — whatever happened before. What failed is reported located:
`<notebook>:cell <n>: <error name>: <message>`, `<workshop>: check <name>: <FAIL message>`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodsync.catalog.loader import Catalog
from wodsync.contentci.seatrun import Limits, NotebookRun, RunError, run_notebooks
from wodsync.sessions.service import SessionError, SessionService
from wodsync.store import Participant, Session, StoreError

PARTICIPANT = Participant("wodsync test", "contentci@wodsync.invalid", "content CI")


class ContentSetupError(Exception):
    """The workshop cannot be tested here (unknown, no local host serving it)."""


@dataclass
class ContentReport:
    workshop: str
    host: str
    user: str = ""
    revision: str = ""
    notebooks: list[NotebookRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)     # located, one line each
    released: bool = False                              # the seat's release finished
    score: int | None = None                            # of the checks (None: none declared)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.errors and self.released

    def as_json(self) -> dict[str, Any]:
        return {"workshop": self.workshop, "host": self.host, "seat": self.user,
                "revision": self.revision, "passed": self.passed, "released": self.released,
                "score": self.score,
                "seconds": self.seconds, "errors": self.errors,
                "notebooks": [{"path": n.path, "code_cells": n.code_cells, "ran": n.ran,
                               "seconds": n.seconds, "error": n.located()}
                              for n in self.notebooks]}


def choose_host(catalog: Catalog, key: str, host: str | None) -> str:
    """The host the test runs on: the one named (a `local` host of a location serving the
    workshop), else the first `local` host of the workshop's locations in their order."""
    ws = catalog.workshops.get(key)
    if ws is None:
        raise ContentSetupError(f"unknown workshop '{key}'")
    serving = [ws.location, *ws.alternate_locations]
    if host is not None:
        found = catalog.hosts.get(host)
        if found is None:
            raise ContentSetupError(f"unknown host '{host}'")
        if found.transport != "local":
            raise ContentSetupError(f"host {host} is reached over ssh: content CI runs the "
                                 "notebooks on this machine, so it needs a `transport: local` "
                                 "host (run `wodsync test` on that host)")
        if found.location not in serving:
            raise ContentSetupError(f"host {host} (location {found.location}) does not serve {key} "
                                 f"(it runs at {', '.join(serving)})")
        return host
    for location in serving:
        local = sorted(h for h in catalog.hosts_in(location)
                       if catalog.hosts[h].transport == "local")
        if local:
            return local[0]
    raise ContentSetupError(f"no `transport: local` host serves {key} (locations "
                         f"{', '.join(serving)}): add one, e.g. hosts/ci.yaml")


def notebooks_of(catalog: Catalog, key: str) -> list[str]:
    """The workshop's notebooks as they land in a seat's home (`<key>/<rel>`), in order."""
    return [f"{key}/{rel}" for rel in sorted(catalog.folders[key].files)
            if rel.endswith(".ipynb")]


def run_checks(sessions: SessionService, session: Session, report: ContentReport) -> None:
    """The workshop's `solve` scripts (when a step has one), then its `checks`, which must
    all pass (score 100): the score and a line per step that did not pass
    (`<workshop>: check <name>: <its FAIL message>`) go into the report."""
    key = session.workshop
    ws = sessions.deployment().catalog.workshops[key]
    if not ws.checks:
        return
    try:
        if any(c.solve for c in ws.checks):
            solved = sessions.check(session.id, "solve")
            report.errors += [f"{key}: solve {s.name}: {s.message or 'failed'}"
                              for s in solved.steps if not s.passed]
        score = sessions.check(session.id)
    except SessionError as exc:
        report.errors.append(f"{key}: checks: {exc}")
        return
    report.score = score.score
    failed = [f"{key}: check {s.name}: {s.message or 'did not pass'}"
              for s in score.steps if not s.passed]
    report.errors += failed or ([f"{key}: score {score.score}, not 100"]
                                if score.score < 100 else [])


def run_test(sessions: SessionService, key: str, host: str | None, python: Path,
             limits: Limits | None = None) -> ContentReport:
    """CREATE a seat of `key`, run its notebooks and checks, end the seat whatever happened."""
    started = time.monotonic()
    catalog = sessions.deployment().catalog
    name = choose_host(catalog, key, host)
    report = ContentReport(key, name)
    try:
        created = sessions.create(key, PARTICIPANT, catalog.hosts[name].location, name)
    except (SessionError, StoreError) as exc:
        report.errors.append(f"CREATE of {key} on {name}: {exc}")
        if isinstance(exc, SessionError) and exc.session is not None:
            report.released = end_seat(sessions, exc.session, report)
        report.seconds = round(time.monotonic() - started, 3)
        return report
    session = created.session
    report.user, report.revision = session.username, session.revision
    try:
        report.notebooks = run_notebooks(session.username, notebooks_of(catalog, key), python,
                                         limits or Limits())
        report.errors += [n.located() or "" for n in report.notebooks if n.error]
        run_checks(sessions, session, report)
    except RunError as exc:
        report.errors.append(f"{key}: {exc}")
    finally:
        report.released = end_seat(sessions, session, report)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def end_seat(sessions: SessionService, session: Session, report: ContentReport) -> bool:
    """CLEANUP (then RESET when the seat is held), PURGE when either did not finish: True
    once the host released the seat; what stopped it is added to the report."""
    steps = [sessions.cleanup, sessions.reset, sessions.purge]
    current = sessions.store.sessions.get(session.id)
    for step in steps:
        if not current.holds_seat:
            break
        try:
            current = step(session.id)
        except (SessionError, StoreError, ValueError) as exc:
            report.errors.append(f"{step.__name__} of {session.username}: {exc}")
            current = sessions.store.sessions.get(session.id)
    if current.holds_seat:
        report.errors.append(f"the release of {session.username} on {session.host} did not "
                             f"finish ({current.state.value}): {current.error or 'pending'}")
        return False
    return True
