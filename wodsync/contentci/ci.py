"""Content CI: a workshop run for real on an ephemeral seat, the host left as it was found.

The seat is given through the session service, exactly as a participant's CREATE (rendering,
hooks, compile, records, hub); its notebooks then run as the seat's user (`seatrun`), the
workshop's checks must all pass (`run_checks`), and the seat is ended — CLEANUP, then RESET for
a `reset: true` workshop, PURGE if anything is left — whatever happened before. What failed
is reported located: `<notebook>:cell <n>: <error name>: <message>`.
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
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.errors and self.released

    def as_json(self) -> dict[str, Any]:
        return {"workshop": self.workshop, "host": self.host, "seat": self.user,
                "revision": self.revision, "passed": self.passed, "released": self.released,
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


def run_checks(sessions: SessionService, session: Session) -> list[str]:
    """The workshop's `solve` scripts, then its `checks`, which must all pass (score 100):
    the located failures, one line each (`<workshop>: check <name>: <FAIL message>`).

    THE PLUG for issue 21's checks (branch s29-checks, not on main when this was written):
    once merged, this calls `sessions.check(session.id, "solve")` when the workshop declares
    `checks`, then `sessions.check(session.id)`, and returns one line per step of the second
    `Score` whose `passed` is false (and one if `score < 100`); `CannotCheck`/`ChecksFailed`
    become a line too. Until then a workshop has no checks and nothing is run here."""
    del sessions, session
    return []


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
        report.errors += run_checks(sessions, session)
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
