"""Disk limits: a user quota on the filesystem of the seat's home, where it has them.

Whether it has them is a fact (`state`): the mount holding the home, its type, whether user
quotas are on there (`quotaon -p`). Where they are not, the plan says so at the workshop — a
`disk` limit is never skipped in silence. Limits are set and lifted with `setquota` (argv).
"""

from __future__ import annotations

import os
import shutil
from typing import Optional, TypedDict

from wodsync.agent.run import CommandFailed, run

QUOTA_OPTIONS = ("usrquota", "usrjquota", "quota", "uquota")


class QuotaState(TypedDict):
    """The filesystem of a folder: its mount, type, and whether user quotas are on (`why` not,
    when not)."""

    mount: str
    fstype: str
    on: bool
    why: str


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def filesystem(path: str) -> tuple[str, str, set[str]]:
    """The mount point holding `path`, its type and its options (from mountinfo)."""
    path = os.path.realpath(path)
    best: tuple[str, str, set[str]] = ("/", "?", set())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            mount = _unescape(fields[4])
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]) and len(tail) >= 3:
                best = (mount, tail[0], set(fields[5].split(",")) | set(tail[2].split(",")))
    return best


def state(path: str) -> QuotaState:
    """Whether `path`'s filesystem enforces user quotas now."""
    mount, fstype, options = filesystem(path)
    where = f"the filesystem of {path} ({fstype} at {mount})"
    if not options.intersection(QUOTA_OPTIONS):
        return {"mount": mount, "fstype": fstype, "on": False, "why": f"{where} has no quotas"}
    if shutil.which("quotaon") is None:
        return {"mount": mount, "fstype": fstype, "on": False,
                "why": f"{where} has quotas but the quota tools (quotaon) are not installed"}
    try:
        out = run(["quotaon", "-p", "-u", mount], timeout=30).stdout
    except CommandFailed as exc:  # quotaon -p exits non-zero when quotas are on
        out = str(exc)
    on = " is on" in out
    return {"mount": mount, "fstype": fstype, "on": on,
            "why": "" if on else f"user quotas are off on {where}"}


def human(size: int) -> str:
    """Bytes as the catalog writes them (`2G`, `1536M`)."""
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def set_limit(user: str, size: Optional[int], mount: str) -> None:
    """The user's block quota on `mount`: `size` bytes (soft = hard), or none (0)."""
    blocks = str(size // 1024) if size else "0"
    run(["setquota", "-u", user, blocks, blocks, "0", "0", mount], timeout=60)
