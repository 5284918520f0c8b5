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

from sqlalchemy import Connection, Engine, Row, Table, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from wodsync.diagnostics import Diagnostic
from wodsync.store.models import (
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
    INVALID_REVISION = "InvalidRevision"  # Stalled: the head does not validate, or is too large
    LIVE_SESSIONS = "LiveSessions"       # Stalled: the head would orphan live sessions


class Trigger(enum.StrEnum):
    COMMIT = "commit"
    WEBHOOK = "webhook"
    RESYNC = "resync"
    MANUAL = "manual"


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

    # The source's own condition, read from what is kept: a head with errors is not deployed.

    @property
    def condition(self) -> Condition:
        return Condition.STALLED if self.errors else Condition.READY

    @property
    def reason(self) -> Reason:
        if not self.errors:
            return Reason.REVISION_DEPLOYED
        if any(e.get("code") == LIVE_SESSIONS_CODE for e in self.errors):
            return Reason.LIVE_SESSIONS
        return Reason.INVALID_REVISION

    @property
    def message(self) -> str:
        """The revision deployed; or why the head is not (its first located error)."""
        if not self.errors:
            return f"revision {(self.last_good_revision or '')[:12]} is deployed"
        first = self.errors[0]
        if self.reason is Reason.LIVE_SESSIONS:
            return str(first.get("message", ""))
        located = Diagnostic(str(first.get("path", ".")), int(first.get("line", 1)),
                             int(first.get("col", 1)), str(first.get("code", "")),
                             str(first.get("message", ""))).text()
        return f"revision {(self.head_revision or '')[:12]} is invalid: {located}"

    @property
    def last_attempted_revision(self) -> str | None:
        """The head last fetched and checked (deployed unless the source is Stalled)."""
        return self.head_revision


@dataclass(frozen=True, slots=True)
class Facts:
    host: str
    facts: dict[str, Any]
    observed_at: datetime
    revision: str | None


LIVE_SESSIONS_CODE = "live-sessions"  # the error code of a head held for live sessions
HOST_FIELDS = {f.name for f in fields(HostStatus)} - {"host", "updated_at"}
HOST_COUNTERS = ("drift_count", "consecutive_failures")
HOST_DEFAULTS: dict[str, Any] = {
    "condition": Condition.RECONCILING.value, "reason": "", "message": "",
    "drift_count": 0, "consecutive_failures": 0,
}
REPOSITORY_FIELDS = ("head_revision", "last_good_revision", "errors")


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
        changes["updated_at"] = now or utcnow()
        with writing(self.engine) as conn:
            _upsert(conn, HOSTS, {"host": host}, HOST_DEFAULTS | changes, changes,
                    increments=dict(add or {}))
            return _host(conn.execute(select(HOSTS).where(HOSTS.c.host == host)).one())

    def host(self, host: str) -> HostStatus | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(HOSTS).where(HOSTS.c.host == host)).first()
        return _host(row) if row is not None else None

    def hosts(self) -> list[HostStatus]:
        with reading(self.engine) as conn:
            return [_host(row) for row in conn.execute(select(HOSTS).order_by(HOSTS.c.host))]

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
        return RepositoryState(**row._mapping)

    def repository(self, url: str, branch: str) -> RepositoryState | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(REPOSITORY).where(
                REPOSITORY.c.url == url, REPOSITORY.c.branch == branch)).first()
        return RepositoryState(**row._mapping) if row is not None else None

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


def _host(row: Row[Any]) -> HostStatus:
    values = dict(row._mapping)
    values["condition"] = Condition(values["condition"])
    return HostStatus(**values)


def _reconciliation(row: Row[Any]) -> Reconciliation:
    values = dict(row._mapping)
    values["trigger"] = Trigger(values["trigger"])
    values["result"] = Result(values["result"])
    return Reconciliation(**values)
