"""What `GET /api/v1/status` and `GET /api/v1/facts` answer, built from the store.

Why pure functions over the store: the daemon serves them (`wodsync.api.routes`), and `wodsync
status`, `history` and `facts export` print the same data straight from the store when no
daemon is asked — one shape, whichever way it is read. Status follows Flux's vocabulary (a
condition with reason and message, last attempted and applied revisions — for the source and
for each host) in camelCase JSON; free text that could quote a credential (an error naming a
URL) is scrubbed, and a repository URL loses its password.

Status needs the API token (`API_TOKEN`), as sessions do: it names hosts and errors. Facts need
their own read-only token (`FACTS_TOKEN`), the one CI holds for previews.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from wodsync.authoring.facts import FactsError, from_store, stored_hosts
from wodsync.authoring.scrub import scrub
from wodsync.store import HostStatus, Reconciliation, RepositoryState, SessionState, Store
from wodsync.store.status import HISTORY_KEPT

API_TOKEN = "WODSYNC_API_TOKEN"
FACTS_TOKEN = "WODSYNC_FACTS_TOKEN"
HISTORY_MAX = 1000


def iso(value: datetime | None) -> str | None:
    """UTC as `2026-01-01T12:00:00Z` (what the CLI and a browser both read)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _text(value: str | None) -> str | None:
    return None if value is None else scrub(value)


def host_json(h: HostStatus) -> dict[str, Any]:
    """One host's condition: its own, whatever the source's (`lastAppliedRevision` is the
    revision it is on)."""
    return {"host": h.host, "condition": h.condition.value, "ready": h.condition == "Ready",
            "reason": h.reason, "message": _text(h.message),
            "lastAttemptedRevision": h.last_attempted_revision,
            "lastAppliedRevision": h.last_applied_revision,
            "lastSuccess": iso(h.last_success_at), "lastError": _text(h.last_error),
            "driftCount": h.drift_count, "consecutiveFailures": h.consecutive_failures,
            "nextAttempt": iso(h.next_attempt_at), "stalledSince": iso(h.stalled_since),
            "updatedAt": iso(h.updated_at)}


def reconciliation_json(r: Reconciliation) -> dict[str, Any]:
    return {"host": r.host, "revision": r.revision, "trigger": r.trigger.value,
            "startedAt": iso(r.started_at), "durationSeconds": round(r.duration_s, 3),
            "created": r.created, "changed": r.changed, "deleted": r.deleted,
            "result": r.result.value, "message": _text(r.message)}


def repository_json(r: RepositoryState) -> dict[str, Any]:
    """The source: its own condition (`Stalled` while the head is not deployed: not fetched,
    invalid, not exported, or held for live sessions) since when, its fetches (the last
    attempt, the last success, failures in a row, the next try), the head last attempted,
    the last good revision and the head's located errors."""
    return {"url": scrub(r.url), "branch": r.branch, "headRevision": r.head_revision,
            "lastGoodRevision": r.last_good_revision,
            "condition": r.condition.value, "reason": str(r.reason),
            "message": _text(r.message), "since": iso(r.since),
            "lastFetchAttempt": iso(r.last_fetch_at), "lastFetch": iso(r.last_fetched_at),
            "fetchFailures": r.fetch_failures, "nextFetch": iso(r.next_fetch_at),
            "lastAttemptedRevision": r.last_attempted_revision,
            "valid": not r.errors,
            "errors": [{k: _text(v) if isinstance(v, str) else v for k, v in e.items()}
                       for e in r.errors],
            "updatedAt": iso(r.updated_at)}


def repositories(store: Store) -> list[RepositoryState]:
    """Every followed source, the most recently updated first."""
    return store.status.repositories()


def alerts_json(store: Store) -> list[dict[str, Any]]:
    """Each subject's last alert episode: Stalled since, told at, Ready again at."""
    return [{"subject": a.subject, "since": iso(a.since), "message": _text(a.message),
             "firedAt": iso(a.fired_at), "resolvedAt": iso(a.resolved_at)}
            for a in store.status.alerts()]


def releases_json(store: Store) -> list[dict[str, Any]]:
    """Seats whose release has not finished on their host (`releasing`): retried until it
    has; an operator sees which, since when and why."""
    return [{"session": s.id, "host": s.host, "seat": s.username, "workshop": s.workshop,
             "operation": s.release_op, "attempts": s.release_attempts,
             "nextAttempt": iso(s.next_release_at), "error": _text(s.error)}
            for s in store.sessions.find(state=SessionState.RELEASING)]


def guard_json(store: Store, limit: int = 20) -> dict[str, Any]:
    """The seat guard: its last events (rule, action, outcome, evidence) and the seats it
    quarantined (given to nobody until `wodsync seat release`)."""
    return {"events": [{"at": iso(e.at), "host": e.host, "seat": e.username,
                        "session": e.session_id, "rule": e.rule, "action": e.action,
                        "outcome": _text(e.outcome),
                        "evidence": {k: _text(v) if isinstance(v, str) else v
                                     for k, v in e.evidence.items()}}
                       for e in store.guard.events(limit=limit)],
            "quarantined": [{"host": q.host, "seat": q.username, "rule": q.rule,
                             "since": iso(q.since), "by": q.by}
                            for q in store.guard.quarantined()]}


def status_view(store: Store, host: str | None = None,
                limit: int = HISTORY_KEPT) -> dict[str, Any]:
    """The repository (the source followed last), every host's status, the releases pending,
    the alerts, and the last `limit` reconciliations (of `host` only when given), newest
    first. `ready`: every host Ready (the source's own condition is `repository.condition`;
    `/readyz` counts it past a threshold)."""
    repos = repositories(store)
    hosts = store.status.hosts()
    return {"repository": repository_json(repos[0]) if repos else None,
            "ready": bool(hosts) and all(h.condition == "Ready" for h in hosts),
            "hosts": [host_json(h) for h in hosts],
            "releasesPending": releases_json(store),
            "guard": guard_json(store),
            "alerts": alerts_json(store),
            "hotSeats": hot_seats_json(store),
            "reconciliations": [reconciliation_json(r)
                                for r in store.status.reconciliations(host, limit)]}


def hot_seats_json(store: Store) -> dict[str, dict[str, int]]:
    """event → its hot seats ready, preparing and taken (`sessions.hotseats`)."""
    return {event: {"ready": c.ready, "preparing": c.preparing, "taken": c.taken}
            for event, c in sorted(store.hot.per_event().items())}


def facts_view(store: Store, known: Iterable[str] = ()) -> dict[str, Any]:
    """Every host's published facts; a host whose record cannot be published is named in
    `errors` (with why, never with its facts)."""
    known = list(known)
    docs, errors = [], []
    for name in stored_hosts(store):
        try:
            doc = from_store(store, name, known)
        except FactsError as exc:
            errors.append({"host": name, "error": str(exc)})
            continue
        if doc is not None:
            docs.append(doc.to_json())
    return {"hosts": docs, "errors": errors}
