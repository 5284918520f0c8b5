"""Numeric ids for WoD's api-db routes: a workshop's, a customer's, a student's.

Why a table: wod-frontend builds its pages and links from numeric ids (`/workshop/7`,
`/customers/12`), where wodsync names things by key (`WKSHP-Python101`, a session's id). An id
must not move when the catalog changes (a workshop added before another in sort order) nor
when the controller restarts, and must never be given to another key: so it is given once, in
a write transaction, and kept. A fresh store gives a catalog's workshops 1, 2, 3… in the order
of their keys, as WoD's seeder numbers its workshops (`wod-build-seeders.pl`, sorted folders),
so an unchanged WoD catalog keeps the ids its portal's links carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update

from wodsync.store.models import WodIdRow, reading, table_of, utcnow, writing
from wodsync.store.sessions import SESSIONS

WOD_IDS = table_of(WodIdRow)
KINDS = ("workshop", "customer", "student")
LOCK_CLASS = 0x776F6469  # first key of the advisory locks that number a kind ("wodi")


@dataclass(frozen=True, slots=True)
class WodId:
    kind: str
    id: int
    key: str
    created_at: datetime
    updated_at: datetime


def _wod_id(row: object) -> WodId:
    m = row._mapping  # type: ignore[attr-defined]
    return WodId(m["kind"], m["id"], m["key"], m["created_at"], m["updated_at"])


class WodIds:
    """The ids of one store; each method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def workshops(self, digests: Mapping[str, str],
                  now: datetime | None = None) -> dict[str, WodId]:
        """The id of every workshop key of `digests` (key → digest of its definition): new keys
        get the next ids in key order; a changed digest moves `updated_at` to now."""
        known = self._read("workshop")
        if any(known.get(k, ("", None))[1] != d for k, d in digests.items()):
            with writing(self.engine) as conn:
                _serialize(conn, "workshop")
                self._write_workshops(conn, digests, now or utcnow())
            known = self._read("workshop")
        return {k: known[k][0] for k in digests}

    def _read(self, kind: str) -> dict[str, tuple[WodId, str | None]]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(WOD_IDS).where(WOD_IDS.c.kind == kind)).all()
        return {r.key: (_wod_id(r), r.digest) for r in rows}

    def _write_workshops(self, conn: Connection, digests: Mapping[str, str],
                         now: datetime) -> None:
        """New keys numbered in key order, changed digests dated now (read again under the
        lock: another process may have done it meanwhile)."""
        rows = {r.key: r for r in conn.execute(
            select(WOD_IDS).where(WOD_IDS.c.kind == "workshop")).all()}
        for key in sorted(digests):
            if key in rows:
                if rows[key].digest != digests[key]:
                    conn.execute(update(WOD_IDS).where(
                        WOD_IDS.c.kind == "workshop", WOD_IDS.c.key == key)
                        .values(digest=digests[key], updated_at=now))
            else:
                conn.execute(insert(WOD_IDS).values(
                    kind="workshop", id=_next(conn, "workshop"), key=key,
                    digest=digests[key], created_at=now, updated_at=now))

    def id_of(self, kind: str, key: str, now: datetime | None = None) -> int:
        """The id of `key`, given now if it has none yet."""
        assert kind in KINDS, kind
        found = self.key_id(kind, key)
        if found is not None:
            return found
        with writing(self.engine) as conn:
            _serialize(conn, kind)
            found = conn.scalar(select(WOD_IDS.c.id).where(
                WOD_IDS.c.kind == kind, WOD_IDS.c.key == key))
            if found is not None:
                return int(found)
            new = _next(conn, kind)
            conn.execute(insert(WOD_IDS).values(kind=kind, id=new, key=key,
                                                created_at=now or utcnow(),
                                                updated_at=now or utcnow()))
            return new

    def key_id(self, kind: str, key: str) -> int | None:
        """The id `key` has, or None (none given yet)."""
        with reading(self.engine) as conn:
            found: int | None = conn.scalar(select(WOD_IDS.c.id).where(
                WOD_IDS.c.kind == kind, WOD_IDS.c.key == key))
        return found

    def key_of(self, kind: str, ident: int) -> str | None:
        """The key that has id `ident`, or None."""
        with reading(self.engine) as conn:
            found: str | None = conn.scalar(select(WOD_IDS.c.key).where(
                WOD_IDS.c.kind == kind, WOD_IDS.c.id == ident))
        return found


def _serialize(conn: Connection, kind: str) -> None:
    """One numbering of `kind` at a time: on PostgreSQL an advisory lock held until the
    transaction ends (SQLite's BEGIN IMMEDIATE already serializes all writers), so two
    processes never both read the same highest number."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(LOCK_CLASS, KINDS.index(kind))))


def _next(conn: Connection, kind: str) -> int:
    highest = conn.scalar(select(func.max(WOD_IDS.c.id)).where(WOD_IDS.c.kind == kind))
    return int(highest or 0) + 1


def popular(engine: Engine, count: int = 10) -> list[str]:
    """The `count` workshops most people took (distinct addresses, any state), as WoD's
    `popular` flag counts its customers: most first, ties by key."""
    people = func.count(func.distinct(func.lower(SESSIONS.c.email)))
    with reading(engine) as conn:
        rows = conn.execute(select(SESSIONS.c.workshop, people.label("n"))
                            .group_by(SESSIONS.c.workshop)
                            .order_by(people.desc(), SESSIONS.c.workshop).limit(count)).all()
    return [r.workshop for r in rows]
