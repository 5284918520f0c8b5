"""Which process works on a session, and whether it still lives.

Why: several processes share one store — `wodsync serve` replicas on PostgreSQL beside the
daemon — and each creates and ends sessions. A session left in `creating`, `cleaning` or
`resetting` by a process that was killed must be released at once by the next one to start
(`SessionService.recover`); one that a live replica is working on right now must not be
touched, or its seat is released under the participant being given it. So each such session
names its owner (`me()`: machine, boot, pid and the process's start time, which a reused pid
does not share), and each serving process keeps a lease in the store (`Leases.beat`).

An owner is alive when it is this process; when it ran on this machine in this boot, when its
pid still runs with the same start time (no wait: a restart recovers at once); elsewhere, when
its lease was renewed within `LEASE_TTL`. A session without an owner (an older wodsync's) is
treated as its owner's gone.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update

from wodsync.store.models import ProcessLeaseRow, reading, table_of, writing

LEASE_EVERY = timedelta(seconds=10)   # how often a serving process renews its lease
LEASE_TTL = timedelta(seconds=60)     # a lease older than this is a process gone
LEASES = table_of(ProcessLeaseRow)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "noboot"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or
    None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_of(pid: int) -> str:
    """A process of this machine as an owner: `host/boot/pid/start`."""
    return f"{socket.gethostname()[:100]}/{_boot_id()}/{pid}/{_start_ticks(pid) or 0}"


_mine = cache(owner_of)


def me() -> str:
    """This process as an owner; a forked child is another owner."""
    return _mine(os.getpid())


def _parse(owner: str) -> tuple[str, str, int, str] | None:
    parts = owner.rsplit("/", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2]), parts[3]


def local_alive(owner: str) -> bool | None:
    """Whether a process of this machine and boot still runs (None: not one of this
    machine's)."""
    parsed = _parse(owner)
    if parsed is None:
        return False
    host, boot, pid, ticks = parsed
    if host != socket.gethostname()[:100] or boot != _boot_id():
        return None
    return _start_ticks(pid) == ticks


class Leases:
    """The serving processes' leases in the store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def beat(self, now: datetime | None = None) -> None:
        """Renew this process's lease (made at its first beat); old leases are dropped."""
        now = now or datetime.now(UTC)
        owner = me()
        with writing(self.engine) as conn:
            renewed = conn.execute(update(LEASES).where(LEASES.c.owner == owner)
                                   .values(heartbeat_at=now)).rowcount
            if not renewed:
                conn.execute(insert(LEASES).values(owner=owner, started_at=now,
                                                   heartbeat_at=now))
            conn.execute(delete(LEASES).where(LEASES.c.heartbeat_at < now - 10 * LEASE_TTL))

    def drop(self) -> None:
        """This process stops serving: its lease goes with it."""
        with writing(self.engine) as conn:
            conn.execute(delete(LEASES).where(LEASES.c.owner == me()))

    def alive(self, owner: str | None, now: datetime | None = None) -> bool:
        """Whether the process `owner` names may still be working on its session."""
        if owner is None:
            return False
        if owner == me():
            return True
        local = local_alive(owner)
        if local is not None:
            return local
        now = now or datetime.now(UTC)
        with reading(self.engine) as conn:
            beat = conn.scalar(select(LEASES.c.heartbeat_at).where(LEASES.c.owner == owner))
        return beat is not None and beat >= now - LEASE_TTL


def live_leases(engine: Engine, now: datetime | None = None) -> list[str]:
    """The processes serving from this store now (their lease alive, or, on this machine,
    still running), for a restore to refuse while any does."""
    now = now or datetime.now(UTC)
    with reading(engine) as conn:
        rows = conn.execute(select(LEASES.c.owner, LEASES.c.heartbeat_at)).all()
    alive = []
    for owner, beat in rows:
        local = local_alive(owner)
        if local or (local is None and beat >= now - LEASE_TTL):
            alive.append(owner)
    return alive
