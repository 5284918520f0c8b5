"""Published facts: what the daemon last observed on each host, safe to hand to a pull request.

Why: an author's pull request should show what it will do to the hosts, but CI must hold no host
credential and no secret. The daemon observes every host anyway; the facts it read are enough
for the pure `plan_host`. This module turns a stored observation into a *facts document* that
anyone with the read-only facts token may read, and plans previews from such documents.

Nothing leaves without passing `sanitise`: a whitelist of every field the agent reports, kind by
kind, each with its class — a number, a flag, a name, a hex digest, or free text — declared by
each kind beside its `observe` (`agent.kinds.<kind>.FACTS`). Unknown fields are dropped (a newer
agent's additions are published only once its kind declares them), a known
field of the wrong type refuses the document, free text (an error a hub or a command printed) is
scrubbed of credentials in URLs, tokens and long opaque strings, and session ids are replaced by
pseudonyms. Password hashes are never observed (accounts say only `locked`); digests of files are
published, never their content.

Previews against these documents are `preview`'s; scrubbing free text is `scrub`'s.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from wodsync.agent.factspec import (
    BOOL,
    DIGEST,
    NAME,
    SESSION,
    ListOf,
    MapOf,
    Nullable,
    Record,
    Scalar,
    Spec,
)
from wodsync.agent.kinds import KINDS
from wodsync.authoring.scrub import CONTROL, find_leaks, pseudonym, scrub

if TYPE_CHECKING:
    from wodsync.engine.desired import LiveSeat
    from wodsync.store import Store

FACTS_TOKEN = "WODSYNC_FACTS_TOKEN"
FACTS_PATH = "/api/v1/facts"
FETCH_TIMEOUT = 30.0
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
HEX = re.compile(r"[0-9a-f]*")


class LiveSeatRecord(TypedDict):
    """A seat a session holds, as a facts document lists it (`LIVE_SEAT` checks one read in):
    a preview plans with the live sessions the daemon saw, so a seat in use is not emptied."""

    username: str
    session: str
    workshop: str
    in_group: NotRequired[bool]  # optional in a document: absent means in its group


class FactsError(Exception):
    """A facts document that cannot be used or published; the message names the host and
    field, or the file or URL."""


class NoFacts(FactsError):
    """Nothing was published for a host (a host new in the catalog has none yet)."""


class Malformed(FactsError):
    """A document whose fields do not have the shapes the agent reports."""


# -- the whitelist -------------------------------------------------------------------------------

def check(spec: Spec, value: Any, path: str) -> Any:
    """The published value of a field of class `spec`, or `ValueError` naming `path`."""
    if isinstance(spec, Scalar):
        return _scalar(spec.kind, value, path)
    if isinstance(spec, Nullable):
        return None if value is None else check(spec.inner, value, path)
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {_shown(value)}")
        return [check(spec.inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {_shown(value)}")
        return {check(NAME, k, f"{path} key"): check(spec.inner, v, f"{path}.{k}")
                for k, v in value.items()}
    if isinstance(spec, Record):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {_shown(value)}")
        missing = [k for k in spec.required if k not in value]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        specs = {**spec.required, **spec.optional}
        return {k: check(specs[k], v, f"{path}.{k}") for k, v in value.items() if k in specs}
    raise TypeError(f"{path}: not a facts spec: {spec!r}")


def _scalar(kind: str, value: Any, path: str) -> Any:
    """int, bool, a name (short text without control characters), a lowercase hex digest, free
    text (scrubbed) or a session id (a pseudonym)."""
    if kind == "int" and (type(value) is not int):
        raise ValueError(f"{path}: expected an integer, got {_shown(value)}")
    if kind == "bool" and type(value) is not bool:
        raise ValueError(f"{path}: expected true or false, got {_shown(value)}")
    if kind in ("name", "hex", "text", "session") and not isinstance(value, str):
        raise ValueError(f"{path}: expected a string, got {_shown(value)}")
    if kind == "name" and (len(value) > 4096 or CONTROL.search(value)):
        raise ValueError(f"{path}: not a name or path (control characters or too long)")
    if kind == "hex" and not HEX.fullmatch(value):
        raise ValueError(f"{path}: expected a hex digest")
    if kind == "text":
        return scrub(value)
    if kind == "session":
        return pseudonym(value)
    return value


# Each kind's published facts, as its host half declares them: a kind that declares none, or a
# kind this controller does not know, is not published.
SCHEMA: dict[str, Spec] = {kind: module.FACTS for kind, module in KINDS.items()}
LIVE_SEAT = Record({"username": NAME, "session": SESSION, "workshop": NAME},
                   {"in_group": BOOL})


def _shown(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, str) else "a string"


def sanitise(facts: Mapping[str, Any], host: str = "?") -> dict[str, Any]:
    """The publishable facts: every kind through its whitelist (unknown kinds dropped)."""
    clean = {}
    for kind, value in facts.items():
        spec = SCHEMA.get(kind)
        if spec is None:
            continue
        try:
            clean[kind] = check(spec, value, kind)
        except ValueError as exc:
            raise Malformed(f"facts of host {host}: {exc}") from None
    return clean


# -- the document --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FactsDocument:
    """One host's published facts: `<host>.json` of `facts export`, an item of /api/v1/facts."""

    host: str
    facts: dict[str, Any]
    digests: dict[str, str] = field(default_factory=dict)
    observed_at: str | None = None
    revision: str | None = None
    live_seats: list[LiveSeatRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "observed_at": self.observed_at, "revision": self.revision,
                "facts": self.facts, "digests": self.digests, "live_seats": self.live_seats}

    @classmethod
    def from_json(cls, data: Any, host: str | None = None) -> FactsDocument:
        """A document (or a bare facts object, as older exports wrote), sanitised on the way in:
        a file from anywhere gets no further than one from the store."""
        if not isinstance(data, dict):
            raise Malformed(f"facts of host {host or '?'}: not a JSON object")
        named = data.get("host") if isinstance(data.get("facts"), dict) else None
        if host and named and named != host:
            raise Malformed(f"facts of host {host}: the document is of host {named!r}")
        name = host or named
        if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
            raise Malformed(f"facts document names no valid host ({name!r})")
        if not isinstance(data.get("facts"), dict):
            return cls(name, sanitise(data, name))
        digests = data.get("digests") or {}
        seats = data.get("live_seats") or []
        try:
            digests = check(MapOf(DIGEST), digests, "digests")
            seats = check(ListOf(LIVE_SEAT), seats, "live_seats")
            observed = check(Nullable(NAME), _iso(data.get("observed_at")), "observed_at")
            revision = check(Nullable(NAME), data.get("revision"), "revision")
        except ValueError as exc:
            raise Malformed(f"facts of host {name}: {exc}") from None
        return cls(name, sanitise(data["facts"], name), digests, observed, revision, seats)

    def header(self) -> str:
        when = self.observed_at or "an unknown time"
        return f"preview against facts observed at {when}, revision {self.revision or 'unknown'}"

    def seats(self) -> list[LiveSeat]:
        from wodsync.engine.desired import LiveSeat

        return [LiveSeat(s["username"], s["session"], s["workshop"], s.get("in_group", True))
                for s in self.live_seats]


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def from_store(store: Store, host: str, known: Iterable[str] = ()) -> FactsDocument | None:
    """A host's document from the store (the daemon's record), with the seats live now."""
    from wodsync.engine.desired import LiveSeat

    stored = store.status.facts(host)
    if stored is None:
        return None
    body = dict(stored.facts)
    record = body if isinstance(body.get("facts"), dict) else {"facts": body}
    seats: list[LiveSeatRecord] = [
        {"username": seat.username, "session": seat.session, "workshop": seat.workshop,
         "in_group": seat.in_group}
        for seat in map(LiveSeat.of, store.sessions.holding_seats(host))]
    doc = FactsDocument.from_json({**record, "host": host, "observed_at": stored.observed_at,
                                   "revision": stored.revision, "live_seats": seats}, host)
    leaks = find_leaks(doc.to_json(), known)
    if leaks:
        raise FactsError(f"facts of host {host} hold a secret value at {', '.join(leaks)}: "
                         "not published")
    return doc


def stored_hosts(store: Store) -> list[str]:
    """Hosts the store has facts of."""
    from sqlalchemy import select

    from wodsync.store.models import reading
    from wodsync.store.status import FACTS

    with reading(store.engine) as conn:
        return list(conn.scalars(select(FACTS.c.host).order_by(FACTS.c.host)))


def export(documents: Iterable[FactsDocument], folder: Path) -> list[Path]:
    """Write `<folder>/<host>.json` for each document, each replaced whole (never half)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in documents:
        target = folder / f"{doc.host}.json"
        temp = folder / f".{doc.host}.json.tmp"
        temp.write_text(json.dumps(doc.to_json(), indent=2, sort_keys=True) + "\n",
                        encoding="utf-8")
        temp.replace(target)
        written.append(target)
    return written


# -- reading documents back ----------------------------------------------------------------------

def load_file(path: Path, host: str) -> FactsDocument:
    """`<host>.json` of an export (or of an older bare-facts file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoFacts(f"host {host}: no facts ({path} is missing)") from None
    except (OSError, ValueError) as exc:
        raise FactsError(f"host {host}: facts file {path} is unreadable: {exc}") from None
    return FactsDocument.from_json(data, host)


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def safe_url(url: str) -> str:
    """A URL fit for a message: no user or password."""
    return scrub(url)


def get_json(url: str, token: str | None, variable: str) -> Any:
    """GET a daemon endpoint with `Authorization: Bearer <token>`; errors name the URL (its
    credentials masked) and never the token."""
    if not token:
        raise FactsError(f"set {variable} to read {safe_url(url)}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler())
    try:
        with opener.open(request, timeout=FETCH_TIMEOUT) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        hint = f" (check {variable})" if exc.code in (401, 403) else ""
        raise FactsError(f"{safe_url(url)} answered HTTP {exc.code}{hint}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FactsError(f"cannot read {safe_url(url)}: {scrub(str(reason), [token])}") from None


def facts_url(url: str) -> str:
    """The facts endpoint of a daemon given by its base URL or by the endpoint itself."""
    parts = urllib.parse.urlsplit(url)
    if parts.path.rstrip("/") in ("",):
        return urllib.parse.urlunsplit(parts._replace(path=FACTS_PATH))
    return url


def fetch(url: str, token: str | None = None) -> dict[str, FactsDocument]:
    """Every host's document from a daemon's /api/v1/facts (token: `$WODSYNC_FACTS_TOKEN`)."""
    url = facts_url(url)
    data = get_json(url, token if token is not None else os.environ.get(FACTS_TOKEN),
                    FACTS_TOKEN)
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not isinstance(hosts, list):
        raise FactsError(f"{safe_url(url)} did not answer a facts listing ({{\"hosts\": […]}})")
    docs = [FactsDocument.from_json(item) for item in hosts]
    return {d.host: d for d in docs}


class FactsSource:
    """Where previews read facts: a folder of exports or a daemon's URL (read once); not the
    git source of revisions (`wodsync.source`)."""

    def __init__(self, where: str | Path, token: str | None = None) -> None:
        self.where = str(where)
        self.token = token
        self._fetched: dict[str, FactsDocument] | None = None

    def describe(self) -> str:
        return safe_url(self.where)

    def open(self) -> None:
        """Read the daemon's listing, or check the folder: facts that cannot be read
        fails the whole preview, a host missing from it only that host."""
        if is_url(self.where):
            if self._fetched is None:
                self._fetched = fetch(self.where, self.token)
        elif not Path(self.where).is_dir():
            raise FactsError(f"facts folder {self.where} does not exist (give a folder of "
                             "`wodsync facts export` or the daemon's URL)")

    def get(self, host: str) -> FactsDocument:
        self.open()
        if self._fetched is not None:
            doc = self._fetched.get(host)
            if doc is None:
                raise NoFacts(f"host {host}: no facts at {self.describe()}")
            return doc
        return load_file(Path(self.where) / f"{host}.json", host)


