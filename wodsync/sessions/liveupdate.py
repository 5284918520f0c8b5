"""Live update of running sessions (controller side): a revision's fix reaches the students
mid-workshop without losing their edits.

The sessions to update are grouped by host and each host gets one `seat_update` round trip
with every seat's files rendered as a CREATE renders them, from the deployment that host
applied; the host decides per file against what each seat was given (`agent.liveupdate`).
Each seat's answer goes into its session's history with the per-file report, and the
session's revision becomes the one applied. A workshop with `live_update: off` is never
touched; a session that is not active, or whose files depend on values its create hook wrote
at CREATE (not kept, so not rendered again), is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wodsync.agent.protocol import FileReport, Seat, SeatUpdateRequest
from wodsync.catalog.loader import Catalog
from wodsync.catalog.repofs import RepoFileError, load_repo_file
from wodsync.engine.remote import HostError
from wodsync.engine.transport import TransportError
from wodsync.render.content import ContentError
from wodsync.render.seatvalues import hook_names
from wodsync.secrets import SecretError
from wodsync.sessions import seat
from wodsync.source.revision import Deployment
from wodsync.store import Session, SessionState, Store

_log = logging.getLogger("wodsync.sessions")

Call = Callable[[str, str, Any], Any]
"""One agent round trip: (host, operation, payload) → the result."""


@dataclass(frozen=True)
class Updated:
    """One session's live update: the files' reports, or why it was not updated (`error`:
    the host's answer or a failed call; `skipped`: not tried)."""

    session: str
    host: str
    revision: str
    files: list[FileReport] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


def report_lines(files: Iterable[FileReport]) -> list[str]:
    """`updated  1-Intro.ipynb`, `beside   2-Lab.ipynb → 2-Lab.updated.ipynb (why)`."""
    lines = []
    for f in files:
        where = f["path"] + (f" → {f['beside']}" if f.get("beside") else "")
        lines.append(f"{f['action']:<9}{where}" + (f" ({f['note']})" if f.get("note") else ""))
    return lines


def summary(files: list[FileReport]) -> str:
    """`2 updated, 1 beside` (or `nothing to change`)."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f["action"]] = counts.get(f["action"], 0) + 1
    return ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) \
        or "nothing to change"


class LiveUpdate:
    """Updates sessions from the deployment each host applied (`on_host`)."""

    def __init__(self, store: Store, on_host: Callable[[str], Deployment], call: Call) -> None:
        self.store = store
        self.on_host = on_host
        self.call = call

    def run(self, sessions: Iterable[Session]) -> list[Updated]:
        """Each session's update, in one round trip per host."""
        done: list[Updated] = []
        by_host: dict[str, list[tuple[Session, Seat]]] = {}
        revisions: dict[str, str] = {}
        for session in sessions:
            payload, why, revision = self._payload(session)
            if payload is None:
                done.append(Updated(session.id, session.host, revision, skipped=why))
                continue
            by_host.setdefault(session.host, []).append((session, payload))
            revisions[session.host] = revision
        for host, seats in by_host.items():
            done += self._on(host, revisions[host], seats)
        return done

    def _payload(self, session: Session) -> tuple[Seat | None, str, str]:
        """The session's `seat_update` part, or why it is skipped; and the revision."""
        if session.state is not SessionState.ACTIVE:
            return None, f"session is {session.state.value}", ""
        dep = self.on_host(session.host)
        ws = dep.catalog.workshops.get(session.workshop)
        if ws is None or session.host not in dep.catalog.hosts:
            return None, f"revision {dep.revision[:12]} has no workshop {session.workshop} " \
                         f"on host {session.host}", dep.revision
        if ws.live_update == "off":
            return None, f"workshop {session.workshop} has live_update: off", dep.revision
        if hook_names(ws):
            return None, (f"workshop {session.workshop}'s files use values its create hook "
                          "wrote at CREATE, which are not kept"), dep.revision
        try:
            return seat.update_payload(dep.catalog, session, dep.secrets, dep.revision), "", \
                dep.revision
        except (ContentError, SecretError) as exc:
            return None, f"rendering failed: {exc}", dep.revision

    def _on(self, host: str, revision: str, seats: list[tuple[Session, Seat]]) -> list[Updated]:
        """One host's round trip; each answer recorded in its session's history."""
        first = seats[0][1]
        request: SeatUpdateRequest = {"state_dir": first["state_dir"], "owner": first["owner"],
                                      "seats": [payload for _, payload in seats]}
        try:
            answers = self.call(host, "seat_update", request)["seats"]
        except (TransportError, HostError) as exc:
            answers = [{"ok": False, "error": f"host {host}: {exc}", "files": []}
                       for _ in seats]
        done = []
        for (session, _), answer in zip(seats, answers, strict=True):
            files = list(answer.get("files") or [])
            error = None if answer.get("ok") else str(answer.get("error"))
            done.append(Updated(session.id, host, revision, files, error))
        self.store.sessions.record_updates([_history(u) for u in done])
        for u in done:
            _log.info("session %s: live update to %s: %s", u.session, revision[:12],
                      u.error or summary(u.files))
        return done


def _history(u: Updated) -> tuple[str, str, str, str]:
    """(session, revision, message, output) of the update's entry in the session's history."""
    if u.error is not None:
        return (u.session, "", f"live update to revision {u.revision[:12]} not applied: "
                f"{u.error}", "")
    return (u.session, u.revision, f"live update to revision {u.revision[:12]}: "
            f"{summary(u.files)}", "\n".join(report_lines(u.files)))

def workshop_digest(catalog: Catalog, key: str) -> str:
    """What a workshop's rendered files depend on in the catalog: its model (variables
    included), the global variables and every file of its folder."""
    h = hashlib.sha256()
    h.update(catalog.workshops[key].model_dump_json().encode())
    h.update(json.dumps(catalog.variables, sort_keys=True, default=str).encode())
    folder = catalog.folders[key]
    base = folder.path.relative_to(catalog.root).as_posix()
    for rel in folder.files:
        h.update(rel.encode() + b"\0")
        try:
            h.update(load_repo_file(catalog.root, f"{base}/{rel}").data)
        except RepoFileError as exc:
            h.update(str(exc).encode())
    return h.hexdigest()


def changed_workshops(old: Catalog, new: Catalog) -> set[str]:
    """The workshops of `new` whose files a revision going from `old` to `new` may change."""
    return {key for key in new.workshops
            if key not in old.workshops or workshop_digest(old, key) != workshop_digest(new, key)}


def due(sessions: Iterable[Session], new: Deployment,
        catalog_of: Callable[[str], Catalog | None]) -> list[Session]:
    """The active sessions on an older revision that `new` changes for them: their workshop
    changed between their revision (`catalog_of`; None when it cannot be loaded any more: the
    host's per-file decision says what changed) and `new`'s; `live_update: off` left out."""
    changed: dict[str, set[str] | None] = {}
    found = []
    for s in sessions:
        ws = new.catalog.workshops.get(s.workshop)
        if s.state is not SessionState.ACTIVE or s.revision == new.revision or ws is None \
                or ws.live_update == "off":
            continue
        if s.revision not in changed:
            old = catalog_of(s.revision)
            changed[s.revision] = None if old is None else changed_workshops(old, new.catalog)
        keys = changed[s.revision]
        if keys is None or s.workshop in keys:
            found.append(s)
    return found
