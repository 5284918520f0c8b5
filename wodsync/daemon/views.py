"""What `GET /api/v1/status` and `GET /api/v1/facts` answer, built from the store.

Why pure functions over the store: the daemon serves them, and `wodsync status`, `history` and
`facts export` print the same data straight from the store when no daemon is asked — one shape,
whichever way it is read. Status follows Flux's vocabulary (a condition with reason and
message, last attempted and applied revisions) in camelCase JSON; free text that could quote a
credential (an error naming a URL) is scrubbed, and a repository URL loses its password.

Status needs the API token (`WODSYNC_API_TOKEN`), as sessions do: it names hosts and errors.
Facts need their own read-only token (`WODSYNC_FACTS_TOKEN`), the one CI holds for previews.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy import select

from wodsync.api.app import bearer
from wodsync.authoring.facts import FactsError, from_store, stored_hosts
from wodsync.authoring.scrub import scrub
from wodsync.store import HostStatus, Reconciliation, RepositoryState, SessionState, Store
from wodsync.store.models import reading
from wodsync.store.status import HISTORY_KEPT, REPOSITORY

API_TOKEN = "WODSYNC_API_TOKEN"
FACTS_TOKEN = "WODSYNC_FACTS_TOKEN"
HISTORY_MAX = 1000

Token = Callable[[], str | None]


def iso(value: datetime | None) -> str | None:
    """UTC as `2026-01-01T12:00:00Z` (what the CLI and a browser both read)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _text(value: str | None) -> str | None:
    return None if value is None else scrub(value)


def host_json(h: HostStatus) -> dict[str, Any]:
    return {"host": h.host, "condition": h.condition.value, "ready": h.condition == "Ready",
            "reason": h.reason, "message": _text(h.message),
            "lastAttemptedRevision": h.last_attempted_revision,
            "lastAppliedRevision": h.last_applied_revision,
            "lastSuccess": iso(h.last_success_at), "lastError": _text(h.last_error),
            "driftCount": h.drift_count, "consecutiveFailures": h.consecutive_failures,
            "nextAttempt": iso(h.next_attempt_at), "updatedAt": iso(h.updated_at)}


def reconciliation_json(r: Reconciliation) -> dict[str, Any]:
    return {"host": r.host, "revision": r.revision, "trigger": r.trigger.value,
            "startedAt": iso(r.started_at), "durationSeconds": round(r.duration_s, 3),
            "created": r.created, "changed": r.changed, "deleted": r.deleted,
            "result": r.result.value, "message": _text(r.message)}


def repository_json(r: RepositoryState) -> dict[str, Any]:
    return {"url": scrub(r.url), "branch": r.branch, "headRevision": r.head_revision,
            "lastGoodRevision": r.last_good_revision,
            "valid": not r.errors,
            "errors": [{k: _text(v) if isinstance(v, str) else v for k, v in e.items()}
                       for e in r.errors],
            "updatedAt": iso(r.updated_at)}


def repositories(store: Store) -> list[RepositoryState]:
    """Every followed source, the most recently updated first."""
    with reading(store.engine) as conn:
        rows = conn.execute(select(REPOSITORY).order_by(REPOSITORY.c.updated_at.desc()))
        return [RepositoryState(**row._mapping) for row in rows]


def releases_json(store: Store) -> list[dict[str, Any]]:
    """Seats whose release has not finished on their host (`releasing`): retried until it
    has; an operator sees which, since when and why."""
    return [{"session": s.id, "host": s.host, "seat": s.username, "workshop": s.workshop,
             "operation": s.release_op, "attempts": s.release_attempts,
             "nextAttempt": iso(s.next_release_at), "error": _text(s.error)}
            for s in store.sessions.find(state=SessionState.RELEASING)]


def status_view(store: Store, host: str | None = None,
                limit: int = HISTORY_KEPT) -> dict[str, Any]:
    """The repository (the source followed last), every host's status, the releases pending,
    and the last `limit` reconciliations (of `host` only when given), newest first."""
    repos = repositories(store)
    hosts = store.status.hosts()
    return {"repository": repository_json(repos[0]) if repos else None,
            "ready": bool(hosts) and all(h.condition == "Ready" for h in hosts),
            "hosts": [host_json(h) for h in hosts],
            "releasesPending": releases_json(store),
            "reconciliations": [reconciliation_json(r)
                                for r in store.status.reconciliations(host, limit)]}


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


def _as_token(token: Token | str | None, variable: str) -> Token:
    if callable(token):
        return token
    if token is not None:
        return lambda: token
    return lambda: os.environ.get(variable)


def needs_token(token: Token | str | None, variable: str) -> Callable[..., None]:
    """`bearer`, with a 503 naming `variable` when no token is configured."""
    get = _as_token(token, variable)
    check = bearer(get)

    def guard(request: Request) -> None:
        if not get():
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                                f"no token is configured ({variable})")
        check(request)
    return guard


def status_router(store: Store, auth: Callable[..., None] | None = None) -> APIRouter:
    """GET /api/v1/status behind `auth` (default: the API token from `$WODSYNC_API_TOKEN`)."""
    guard = auth or needs_token(None, API_TOKEN)
    router = APIRouter(prefix="/api/v1", tags=["daemon"], dependencies=[Depends(guard)])

    @router.get("/status")
    def get_status(host: str | None = None,
                   limit: int = Query(HISTORY_KEPT, ge=1, le=HISTORY_MAX)) -> dict[str, Any]:
        """The repository, each host's condition, and the last reconciliations."""
        return status_view(store, host, limit)

    return router


def facts_router(store: Store, token: Token | str | None = None,
                 known: Callable[[], Iterable[str]] = tuple) -> APIRouter:
    """GET /api/v1/facts behind the read-only facts token (`$WODSYNC_FACTS_TOKEN` by default);
    `known` gives secret values to guard against (the daemon's own secrets)."""
    guard = needs_token(token, FACTS_TOKEN)
    router = APIRouter(prefix="/api/v1", tags=["daemon"], dependencies=[Depends(guard)])

    @router.get("/facts")
    def get_facts() -> dict[str, Any]:
        """The facts last observed on each host, without anything secret."""
        return facts_view(store, known())

    return router

