"""Seat records: the host's own word on which session holds which seat.

Each seat in use has a record, `<state_dir>/seats/<user>.json` (a root-only folder), written
before the seat is touched for a session and dropped only once its release is complete. The
controller's store can be lost, restored from an old backup or pointed at the wrong database;
these records are what keeps a seat in use from being given twice or wiped by a catalog edit:
a full apply never locks or empties a recorded seat, a CREATE never takes a seat recorded for
another session, and the controller re-adopts the sessions its store does not know from them.
A record carries what adoption needs (workshop, participant, times), never a password.

Seat operations lock the host shared (an apply holds it exclusively) and each seat they touch
exclusively, in name order, so two calls locking several seats never wait in a circle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TypedDict, cast

from wodsync.agent import hostlock, seatbase

SEATS_DIR = "seats"
# What a record may hold, and so what crosses back to the controller.
FIELDS = ("session", "workshop", "state", "since", "email", "name", "company", "location",
          "duration_hours", "created_at")


class Record(TypedDict, total=False):
    """A seat's record (`FIELDS`): the session, its workshop, the seat's state (`creating`,
    `active`, `held`, `releasing`; `unreadable` for a record that does not parse) and since
    when, and what adoption needs of the participant."""

    session: str
    workshop: str
    state: str
    since: float
    email: str
    name: str
    company: str
    location: str
    duration_hours: float
    created_at: float


def folder(state_dir: str) -> str:
    return os.path.join(state_dir, SEATS_DIR)


def read_all(state_dir: str) -> dict[str, Record]:
    """user → record, for every seat the host knows to be in use."""
    found: dict[str, Record] = {}
    try:
        names = os.listdir(folder(state_dir))
    except FileNotFoundError:
        return found
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            user = name[:-5]
            found[user] = read(state_dir, user) or {"session": "?", "state": "unreadable"}
    return found


def read(state_dir: str, user: str) -> Record | None:
    """The seat's record, or None when the seat is free."""
    try:
        with open(os.path.join(folder(state_dir), user + ".json"), encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"session": "?", "state": "unreadable"}
    if not isinstance(data, dict):
        return {"session": "?", "state": "unreadable"}
    return cast(Record, {k: data[k] for k in FIELDS if k in data})


def write(state_dir: str, user: str, record: Record) -> None:
    """Replace the seat's record atomically (a unique temporary file, then rename)."""
    where = folder(state_dir)
    os.makedirs(where, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, prefix=".seat-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: record.get(k) for k in FIELDS if k in record}, f)
        os.replace(tmp, os.path.join(where, user + ".json"))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def drop(state_dir: str, user: str) -> None:
    """The record gone, and with it the seat's base (`seatbase`): the seat is free."""
    seatbase.drop(state_dir, user)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder(state_dir), user + ".json"))


def belongs_to_other(record: Record | None, session: str) -> bool:
    """True when the record names another session than `session` (a seat not ours to touch)."""
    return record is not None and record.get("session") != session


@contextlib.contextmanager
def locked(state_dir: str, users: Iterable[str], timeout: float = 30.0) -> Iterator[None]:
    """The host shared (no apply meanwhile), the seats exclusively."""
    with hostlock.hold(state_dir, "seat", exclusive=False, timeout=timeout), \
            contextlib.ExitStack() as held:
        os.makedirs(folder(state_dir), mode=0o700, exist_ok=True)
        for user in sorted(set(users)):
            fd = os.open(os.path.join(folder(state_dir), user + ".lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            held.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
