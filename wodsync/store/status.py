"""What the GitOps daemon knows and reports: host status, recent reconciliations, the git
source, and the facts last observed on each host.

Why in the store: `wodsync status`, the API and a standby daemon read what the running daemon
wrote, like Flux's status subresources (conditions Ready/Reconciling/Stalled with a reason
from `Reason`, last attempted and applied revisions, a short history). The source and the hosts
each have their own condition: a bad head stalls the source (its row keeps the head and its
located errors), while the hosts keep theirs on the last good revision. Writes are upserts in
one statement, so two writers never trip over a missing row.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    case,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy import update as update_
from sqlalchemy.dialects import postgresql, sqlite

from wodsync.diagnostics import Diagnostic
from wodsync.store.models import (
    AlertRow,
    FactsRow,
    HostStatusRow,
    ReconciliationRow,
    RepositoryRow,
    reading,
    table_of,
    utcnow,
    writing,
)

HOSTS = table_of(HostStatusRow)
HISTORY = table_of(ReconciliationRow)
REPOSITORY = table_of(RepositoryRow)
FACTS = table_of(FactsRow)
ALERTS = table_of(AlertRow)
HISTORY_KEPT = 20  # reconciliations kept per host


class Condition(enum.StrEnum):
    """Where a host, or the source, stands (Flux's vocabulary)."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(enum.StrEnum):
    """Why a host or the source is in its condition: one word a monitoring check can match."""

    # a host
    PROGRESSING = "Progressing"          # Reconciling: observe, plan, apply under way
    UP_TO_DATE = "UpToDate"              # Ready: nothing to change
    APPLIED = "Applied"                  # Ready: a new revision applied
    DRIFT_REPAIRED = "DriftRepaired"     # Ready: a resync fixed drift
    RECONCILE_FAILED = "ReconcileFailed"  # Stalled: observe or plan failed (host unreachable …)
    DELETIONS_REFUSED = "DeletionsRefused"  # Stalled: the deletion cap refused the plan
    APPLY_FAILED = "ApplyFailed"         # Stalled: a change or phase failed
    NOT_CONVERGED = "NotConverged"       # Stalled: changes still pending after the apply
    # the source
    REVISION_DEPLOYED = "RevisionDeployed"  # Ready: the head is the deployed revision
    INVALID_REVISION = "InvalidRevision"  # Stalled: the head does not validate
    LIVE_SESSIONS = "LiveSessions"       # Stalled: the head would orphan live sessions
    FETCH_FAILED = "FetchFailed"         # Stalled: the remote cannot be fetched (retried)
    EXPORT_REFUSED = "ExportRefused"     # Stalled: the head is too large, or cannot be written


class Trigger(enum.StrEnum):
    COMMIT = "commit"
    WEBHOOK = "webhook"
    RESYNC = "resync"
    MANUAL = "manual"
    RELOAD = "reload"  # SIGHUP: the secrets file read again (a rotated hub token goes out)
    PROBE = "probe"  # a failed hub probe (daemon.probe): the host is due at once


class Result(enum.StrEnum):
    APPLIED = "applied"
    NOOP = "no-op"
    FAILED = "failed"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class HostStatus:
    host: str
    condition: Condition
    reason: str  # a `Reason` when the daemon wrote it
    message: str
    last_attempted_revision: str | None
    last_applied_revision: str | None
    last_success_at: datetime | None
    last_error: str | None
    drift_count: int
    consecutive_failures: int
    next_attempt_at: datetime | None
    updated_at: datetime
    stalled_since: datetime | None = None  # not Ready since, after a Stalled (kept by the store)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    host: str
    revision: str
    trigger: Trigger
    started_at: datetime
    duration_s: float
    result: Result
    created: int = 0
    changed: int = 0
    deleted: int = 0
    message: str = ""
    id: int | None = None  # given by the store


@dataclass(frozen=True, slots=True)
class RepositoryState:
    url: str
    branch: str
    head_revision: str | None
    last_good_revision: str | None
    errors: list[dict[str, Any]]  # of the head when it is bad: {path, line, col, code, message}
    updated_at: datetime
    # The source's own condition as the daemon recorded it (None in a row older than 0007:
    # read from `errors` then), since when, and its fetches.
    recorded_condition: str | None = None
    recorded_reason: str | None = None
    recorded_message: str | None = None
    since: datetime | None = None
    last_fetch_at: datetime | None = None
    last_fetched_at: datetime | None = None
    fetch_failures: int = 0
    next_fetch_at: datetime | None = None

    @property
    def condition(self) -> Condition:
        if self.recorded_condition:
            return Condition(self.recorded_condition)
        return Condition.STALLED if self.errors else Condition.READY

    @property
    def reason(self) -> str:
        """A `Reason`: the one recorded, else read from the head's errors."""
        if self.recorded_reason:
            return self.recorded_reason
        if not self.errors:
            return Reason.REVISION_DEPLOYED
        return reason_of(self.errors)

    @property
    def message(self) -> str:
        """The revision deployed; or why the head is not (its first located error), or why
        it could not be fetched or written."""
        if self.recorded_message:
            return self.recorded_message
        return message_of(self.head_revision, self.last_good_revision, self.errors)

    @property
    def last_attempted_revision(self) -> str | None:
        """The head last fetched and checked (deployed unless the source is Stalled)."""
        return self.head_revision


def reason_of(errors: Sequence[Mapping[str, Any]]) -> Reason:
    """Why a head with these located errors is not deployed."""
    codes = {e.get("code") for e in errors}
    if LIVE_SESSIONS_CODE in codes:
        return Reason.LIVE_SESSIONS
    if TOO_LARGE_CODE in codes:
        return Reason.EXPORT_REFUSED
    return Reason.INVALID_REVISION


def message_of(head: str | None, last_good: str | None,
               errors: Sequence[Mapping[str, Any]]) -> str:
    """The source's message for a fetched head: deployed, or its first located error."""
    if not errors:
        return f"revision {(last_good or '')[:12]} is deployed"
    first = errors[0]
    if reason_of(errors) is Reason.LIVE_SESSIONS:
        return str(first.get("message", ""))
    located = Diagnostic(str(first.get("path", ".")), int(first.get("line", 1)),
                         int(first.get("col", 1)), str(first.get("code", "")),
                         str(first.get("message", ""))).text()
    return f"revision {(head or '')[:12]} is invalid: {located}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode of a subject (`source`, `host:<name>`) Stalled since `since`, told at
    `fired_at`, Ready again at `resolved_at`."""

    subject: str
    since: datetime
    message: str
    fired_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class Facts:
    host: str
    facts: dict[str, Any]
    observed_at: datetime
    revision: str | None


LIVE_SESSIONS_CODE = "live-sessions"  # the error code of a head held for live sessions
TOO_LARGE_CODE = "revision-too-large"  # the error code of a head too large to export
HOST_FIELDS = {f.name for f in fields(HostStatus)} - {"host", "updated_at", "stalled_since"}
HOST_COUNTERS = ("drift_count", "consecutive_failures")
HOST_DEFAULTS: dict[str, Any] = {
    "condition": Condition.RECONCILING.value, "reason": "", "message": "",
    "drift_count": 0, "consecutive_failures": 0,
}
REPOSITORY_FIELDS = ("head_revision", "last_good_revision", "errors")
FETCH_FIELDS = ("last_fetch_at", "last_fetched_at", "fetch_failures", "next_fetch_at")


class Status:
    """Daemon status in one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- hosts ------------------------------------------------------------------------------

    def update_host(self, host: str, *, now: datetime | None = None,
                    add: Mapping[str, int] | None = None, **changes: Any) -> HostStatus:
        """Set the given fields of a host's status (creating it), leave the others alone.

        `add` increments counters in the same statement, e.g. `add={"drift_count": 1}`, so
        concurrent writers never lose an increment.
        """
        unknown = sorted(set(changes) - HOST_FIELDS) + sorted(set(add or {}) - set(HOST_COUNTERS))
        if unknown:
            raise TypeError(f"unknown host status field(s) for {host}: {', '.join(unknown)}")
        if "condition" in changes:
            changes["condition"] = Condition(changes["condition"]).value
        if "reason" in changes:  # a `Reason` is kept as its plain text
            changes["reason"] = str(changes["reason"])
        changes["updated_at"] = now = now or utcnow()
        create, update = _condition_kept(changes, now)
        with writing(self.engine) as conn:
            _upsert(conn, HOSTS, {"host": host}, HOST_DEFAULTS | create, update,
                    increments=dict(add or {}))
            return _host(conn.execute(select(HOSTS).where(HOSTS.c.host == host)).one())

    def host(self, host: str) -> HostStatus | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(HOSTS).where(HOSTS.c.host == host)).first()
        return _host(row) if row is not None else None

    def hosts(self) -> list[HostStatus]:
        with reading(self.engine) as conn:
            return [_host(row) for row in conn.execute(select(HOSTS).order_by(HOSTS.c.host))]

    def forget_host(self, host: str) -> bool:
        """A host that left the catalog: its status and last facts go (its reconciliation
        history stays, for the record); False when nothing was recorded of it."""
        with writing(self.engine) as conn:
            gone = conn.execute(delete(HOSTS).where(HOSTS.c.host == host)).rowcount
            conn.execute(delete(FACTS).where(FACTS.c.host == host))
        return bool(gone)

    # -- reconciliation history -------------------------------------------------------------

    def record_reconciliation(self, rec: Reconciliation) -> Reconciliation:
        """Keep one reconciliation and drop the host's older ones beyond the last 20."""
        values = {f.name: getattr(rec, f.name) for f in fields(rec) if f.name != "id"}
        values["trigger"] = Trigger(rec.trigger).value
        values["result"] = Result(rec.result).value
        with writing(self.engine) as conn:
            row = conn.execute(insert(HISTORY).values(**values).returning(*HISTORY.c)).one()
            keep = (select(HISTORY.c.id).where(HISTORY.c.host == rec.host)
                    .order_by(HISTORY.c.started_at.desc(), HISTORY.c.id.desc())
                    .limit(HISTORY_KEPT))
            conn.execute(delete(HISTORY).where(HISTORY.c.host == rec.host,
                                               HISTORY.c.id.not_in(keep.scalar_subquery())))
        return _reconciliation(row)

    def reconciliations(self, host: str | None = None,
                        limit: int = HISTORY_KEPT) -> list[Reconciliation]:
        """Newest first, of one host or of all."""
        query = select(HISTORY).order_by(HISTORY.c.started_at.desc(), HISTORY.c.id.desc())
        if host is not None:
            query = query.where(HISTORY.c.host == host)
        with reading(self.engine) as conn:
            return [_reconciliation(row) for row in conn.execute(query.limit(limit))]

    # -- git source -------------------------------------------------------------------------

    def update_repository(self, url: str, branch: str, *, now: datetime | None = None,
                          head_revision: str | None = None,
                          last_good_revision: str | None = None,
                          errors: Sequence[Mapping[str, Any]] | None = None) -> RepositoryState:
        """Set what is given (None leaves a field alone), creating the source's row."""
        changes: dict[str, Any] = {"updated_at": now or utcnow()}
        if head_revision is not None:
            changes["head_revision"] = head_revision
        if last_good_revision is not None:
            changes["last_good_revision"] = last_good_revision
        if errors is not None:
            changes["errors"] = [dict(e) for e in errors]
        key = {"url": url, "branch": branch}
        with writing(self.engine) as conn:
            _upsert(conn, REPOSITORY, key, {"errors": []} | changes, changes)
            row = conn.execute(select(REPOSITORY).where(
                REPOSITORY.c.url == url, REPOSITORY.c.branch == branch)).one()
        return _repository(row)

    def record_source(self, url: str, branch: str, condition: Condition, reason: Reason,
                      message: str, *, now: datetime | None = None,
                      **fetch: Any) -> RepositoryState:
        """The source's condition (`since` moves only when the condition changes) and what is
        given of its fetches (`FETCH_FIELDS`), in one statement."""
        unknown = sorted(set(fetch) - set(FETCH_FIELDS))
        if unknown:
            raise TypeError(f"unknown source field(s): {', '.join(unknown)}")
        now = now or utcnow()
        values = {"condition": Condition(condition).value, "reason": str(reason),
                  "message": message, "updated_at": now, **fetch}
        changed = REPOSITORY.c.condition.is_distinct_from(values["condition"])
        update = values | {"since": case((changed, literal(now, REPOSITORY.c.since.type)),
                                         else_=REPOSITORY.c.since)}
        key = {"url": url, "branch": branch}
        with writing(self.engine) as conn:
            _upsert(conn, REPOSITORY, key, {"errors": []} | values | {"since": now}, update)
            row = conn.execute(select(REPOSITORY).where(
                REPOSITORY.c.url == url, REPOSITORY.c.branch == branch)).one()
        return _repository(row)

    def repository(self, url: str, branch: str) -> RepositoryState | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(REPOSITORY).where(
                REPOSITORY.c.url == url, REPOSITORY.c.branch == branch)).first()
        return _repository(row) if row is not None else None

    def repositories(self) -> list[RepositoryState]:
        """Every followed source, the most recently updated first."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(REPOSITORY).order_by(REPOSITORY.c.updated_at.desc()))
            return [_repository(row) for row in rows]

    # -- alerts -----------------------------------------------------------------------------

    def fire_alert(self, subject: str, since: datetime, message: str, *,
                   now: datetime | None = None) -> bool:
        """Open the episode of `subject` Stalled since `since`; False when it was already
        told (so it is told once, whoever asks and however often)."""
        now = now or utcnow()
        with writing(self.engine) as conn:
            row = conn.execute(select(ALERTS).where(ALERTS.c.subject == subject)).first()
            if row is not None and row.since == since:
                return False
            values = {"since": since, "message": message, "fired_at": now, "resolved_at": None}
            _upsert(conn, ALERTS, {"subject": subject}, values, values)
        return True

    def resolve_alert(self, subject: str, *, now: datetime | None = None) -> Alert | None:
        """Close the open episode of `subject` (it is Ready again): the episode, or None
        when none was open."""
        now = now or utcnow()
        with writing(self.engine) as conn:
            row = conn.execute(select(ALERTS).where(ALERTS.c.subject == subject,
                                                    ALERTS.c.resolved_at.is_(None))).first()
            if row is None:
                return None
            conn.execute(update_(ALERTS).where(ALERTS.c.subject == subject)
                         .values(resolved_at=now))
        return Alert(**(dict(row._mapping) | {"resolved_at": now}))

    def alerts(self) -> list[Alert]:
        with reading(self.engine) as conn:
            return [Alert(**row._mapping)
                    for row in conn.execute(select(ALERTS).order_by(ALERTS.c.subject))]

    # -- facts ------------------------------------------------------------------------------

    def put_facts(self, host: str, facts: Mapping[str, Any], *, revision: str | None = None,
                  observed_at: datetime | None = None) -> Facts:
        """Replace the host's last observed facts."""
        kept = Facts(host=host, facts=dict(facts), observed_at=observed_at or utcnow(),
                     revision=revision)
        values = {"facts": kept.facts, "observed_at": kept.observed_at, "revision": revision}
        with writing(self.engine) as conn:
            _upsert(conn, FACTS, {"host": host}, values, values)
        return kept

    def facts(self, host: str) -> Facts | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(FACTS).where(FACTS.c.host == host)).first()
        return Facts(**row._mapping) if row is not None else None


def _upsert(conn: Connection, table: Table, key: dict[str, Any], create: dict[str, Any],
            changes: dict[str, Any], increments: Mapping[str, int] | None = None) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE: one statement, in SQLite and PostgreSQL alike."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}[conn.dialect.name]
    increments = increments or {}
    stmt = dialect.insert(table).values(key | create | dict(increments))
    updates = dict(changes) | {name: table.c[name] + n for name, n in increments.items()}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=updates))


def _condition_kept(changes: dict[str, Any], now: datetime) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
    """What a host's new condition implies, whoever sets it: Stalled starts `stalled_since`
    (kept through the retries' Reconciling), Ready ends it and clears the last error — so a
    Ready host never shows an old error. The values to insert and to update."""
    condition = changes.get("condition")
    if condition == Condition.STALLED.value:
        return (changes | {"stalled_since": now},
                changes | {"stalled_since": func.coalesce(
                    HOSTS.c.stalled_since, literal(now, HOSTS.c.stalled_since.type))})
    if condition == Condition.READY.value:
        cleared = {"stalled_since": None, "last_error": None} | changes
        return cleared, cleared
    return changes, changes


def _repository(row: Row[Any]) -> RepositoryState:
    values = dict(row._mapping)
    for name in ("condition", "reason", "message"):
        values[f"recorded_{name}"] = values.pop(name, None)
    values["fetch_failures"] = values.get("fetch_failures") or 0
    return RepositoryState(**values)


def _host(row: Row[Any]) -> HostStatus:
    values = dict(row._mapping)
    values["condition"] = Condition(values["condition"])
    return HostStatus(**values)


def _reconciliation(row: Row[Any]) -> Reconciliation:
    values = dict(row._mapping)
    values["trigger"] = Trigger(values["trigger"])
    values["result"] = Result(values["result"])
    return Reconciliation(**values)
