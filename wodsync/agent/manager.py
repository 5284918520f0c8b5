"""Who manages this host: the record a daemon leaves on it, and the check every apply meets.

Why on the host: an `apply` run by hand without the daemon's store (or with another one) does
not know the live sessions, so its plan empties the workshops' hub groups and would lock seats
in use. A check on the controller only works when it is given the same store; the host is the
one place every apply reaches, whatever store it was given. So the daemon's first apply
records, root-only in the state folder (`manager.json`), which store manages the host — the
store's random identity and a description for a person, never a URL or a secret — and an
apply (or a claim) from another store, or from none, is refused under the host lock, naming
the manager and how to force. A forced apply goes on and is logged on the host
(`manager.log`, one JSON line each), as is a daemon taking a host over.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, TypedDict, cast

from wodsync.agent import hostlock

RECORD_FILE = "manager.json"
LOG_FILE = "manager.log"
FORCE_FLAG = "--force-manager"


class ManagerRecord(TypedDict, total=False):
    """What a managed host records: the managing store's identity, a description of the
    daemon for a person, and since when (UTC, ISO 8601)."""

    store: str
    description: str
    since: str


class Caller(TypedDict):
    """Who asks, on the wire: its store's identity (None: it has none), a description for a
    person, whether it claims the host (a daemon) and whether it forces past another
    manager."""

    store: str | None
    description: str
    claim: bool
    force: bool


class ManagedElsewhere(Exception):
    """The host is managed by another store: nothing was done."""


def path(state_dir: str) -> str:
    return os.path.join(state_dir, RECORD_FILE)


def read(state_dir: str) -> ManagerRecord | None:
    """The host's manager record, or None when no daemon manages it. A record that does not
    parse stands for an unknown manager: only a forced call goes past it."""
    try:
        with open(path(state_dir), encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"store": "?", "description": f"an unreadable record ({exc})", "since": "?"}
    if not isinstance(data, dict) or not isinstance(data.get("store"), str):
        return {"store": "?", "description": "an unreadable record", "since": "?"}
    return cast(ManagerRecord, {k: str(data[k]) for k in ("store", "description", "since")
                                if k in data})


def describe(record: ManagerRecord) -> str:
    return (f"{record.get('description', 'a wodsync daemon')} (store "
            f"{record.get('store', '?')}, since {record.get('since', '?')})")


def refusal(state_dir: str, record: ManagerRecord | None, caller: Caller | None) -> str | None:
    """Why `caller` may not change this host, or None when it may (no manager yet, the same
    store, or forced)."""
    if record is None or (caller is not None and caller["store"] == record.get("store")):
        return None
    if caller is not None and caller["force"]:
        return None
    given = "without a store" if caller is None or caller["store"] is None else \
        f"from another store ({caller['store']})"
    return (f"{path(state_dir)}: this host is managed by {describe(record)}; an apply "
            f"{given} does not know its live sessions and is refused — let the daemon apply "
            f"(commit and push), run with the daemon's store (--db, --state), or pass "
            f"{FORCE_FLAG} to go on anyway (logged on the host)")


def _log(state_dir: str, event: str, record: ManagerRecord | None, caller: Caller) -> None:
    line = {"at": _now(), "event": event, "by": caller["description"],
            "by_store": caller["store"], "manager": record}
    fd = os.open(os.path.join(state_dir, LOG_FILE),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def admit(state_dir: str, caller: Caller | None) -> None:
    """Under the host lock, before anything is changed: raise ManagedElsewhere unless
    `caller` may change the host; a forced call past another manager is logged."""
    record = read(state_dir)
    why = refusal(state_dir, record, caller)
    if why is not None:
        raise ManagedElsewhere(why)
    if caller is not None and record is not None and caller["store"] != record.get("store"):
        _log(state_dir, "forced", record, caller)


def _write(state_dir: str, record: ManagerRecord) -> None:
    """Replace the record atomically, root-only (a unique temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".manager-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path(state_dir))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def claim(payload: Any) -> ManagerRecord:
    """`manage` (its request: `protocol.ManageRequest`): record the caller (a daemon) as
    this host's manager, under the host lock. Another store's record is replaced only when
    forced (logged: a take-over)."""
    state_dir, caller = payload["state_dir"], payload["manager"]
    with hostlock.hold(state_dir, "manage", timeout=payload.get("lock_timeout", 30.0)):
        record = read(state_dir)
        why = refusal(state_dir, record, caller)
        if why is not None:
            raise ManagedElsewhere(why)
        if record is not None and record.get("store") == caller["store"] and \
                record.get("description") == caller["description"]:
            return record
        if record is not None and record.get("store") != caller["store"]:
            _log(state_dir, "taken over", record, caller)
        if not caller["store"]:
            raise ManagedElsewhere("only a daemon with a store records itself as a host's "
                                   "manager")
        new: ManagerRecord = {"store": caller["store"], "since": _now(),
                              "description": caller["description"]}
        _write(state_dir, new)
        return new

