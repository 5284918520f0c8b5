"""The servers a busy hub deferred, in the store.

A burst of CREATEs asks for more servers than the hub starts at once (`hub.spawn_limit`); the
hub answers 429 for the rest and the expiry loop asks again every few seconds. Kept in memory,
that list died with the process: a restart (or an upgrade) in the middle of a burst left those
students to start their server at login. Here it outlives the process and is shared by every
process on one database; asking twice for one server is harmless (the hub answers 400).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError

from wodsync.store.models import (
    DeferredServerRow,
    SessionRow,
    SessionState,
    is_conflict,
    reading,
    table_of,
    utcnow,
    writing,
)

DEFERRED = table_of(DeferredServerRow)
SESSIONS = table_of(SessionRow)


class DeferredServers:
    """The deferred server starts of one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, session_id: str, host: str, username: str,
            now: datetime | None = None) -> None:
        """The session's server waits for room in its hub (again: the first record stays)."""
        try:
            with writing(self.engine) as conn:
                conn.execute(insert(DEFERRED).values(session_id=session_id, host=host,
                                                     username=username, since=now or utcnow()))
        except DBAPIError as exc:
            if not is_conflict(exc):
                raise

    def pending(self) -> dict[str, dict[str, str]]:
        """host → {seat user: session id} of the deferred servers whose session is still
        active; a seat cleaned up (or purged) meanwhile is dropped, never started."""
        query = (select(DEFERRED.c.host, DEFERRED.c.username, DEFERRED.c.session_id)
                 .join(SESSIONS, SESSIONS.c.id == DEFERRED.c.session_id)
                 .where(SESSIONS.c.state.in_([SessionState.ACTIVE.value,
                                              SessionState.HOT.value])))
        with reading(self.engine) as conn:
            rows = conn.execute(query).all()
        found: dict[str, dict[str, str]] = {}
        for host, user, session_id in rows:
            found.setdefault(host, {})[user] = session_id
        return found

    def settle(self, session_ids: Iterable[str]) -> None:
        """These no longer wait: started, gone, refused — or their session is over."""
        ids = list(session_ids)
        if ids:
            with writing(self.engine) as conn:
                conn.execute(delete(DEFERRED).where(DEFERRED.c.session_id.in_(ids)))

    def prune(self) -> int:
        """Forget the records of sessions no longer active (or hot); how many."""
        live = select(SESSIONS.c.id).where(SESSIONS.c.state.in_(
            [SessionState.ACTIVE.value, SessionState.HOT.value]))  # a hot seat's server too
        with writing(self.engine) as conn:
            return conn.execute(delete(DEFERRED).where(
                DEFERRED.c.session_id.not_in(live))).rowcount or 0
