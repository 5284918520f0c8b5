"""limits, host half: what a host can enforce of the workshops' limits, and its systemd slices.

The facts say which cgroup back end the host has (`v2`, `v1` or none), whether the homes'
filesystem has user quotas, and which of wodsync's slice units are in the systemd unit folder
(`wodsync-<workshop>.slice`, `user-<uid>.slice.d/50-wodsync-limits.conf`: wodsync's by name,
nothing else there is read or touched). The phase writes and removes those units and runs
`systemctl daemon-reload` once. The seats' cgroups themselves are set by the seat operations
(`agent.limits`); the controller half is `engine.kinds.limits`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from typing import Optional, TypedDict

from wodsync.agent.factspec import BOOL, DIGEST, NAME, TEXT, MapOf, Nullable, Record
from wodsync.agent.host import HostSide
from wodsync.agent.limits import backends, quota
from wodsync.agent.run import CommandFailed, run

KIND = "limits"
DROPIN = "50-wodsync-limits.conf"
SLICE_RE = re.compile(r"^wodsync-[A-Za-z0-9_\\-]+\.slice$")
USER_SLICE_RE = re.compile(r"^user-[0-9]+\.slice\.d$")


class Probe(TypedDict):
    cgroup_root: str
    home_root: str
    unit_dir: Optional[str]       # a systemd host's unit folder; None: no slices


class Facts(TypedDict):
    """`cgroup`: the back end (`v2`, `v1`, None); `quota`: the homes' filesystem; `units`:
    wodsync's slice units (path relative to the unit folder → sha256 of its content)."""

    cgroup: Optional[str]
    quota: quota.QuotaState
    units: dict[str, str]


FACTS = Record({"cgroup": Nullable(NAME),
                "quota": Record({"mount": NAME, "fstype": NAME, "on": BOOL, "why": TEXT}),
                "units": MapOf(DIGEST)})


class Part(TypedDict):
    unit_dir: str
    write: dict[str, str]         # path relative to unit_dir → content
    remove: list[str]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _units(unit_dir: str) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        names = os.listdir(unit_dir)
    except FileNotFoundError:
        return found
    for name in sorted(names):
        rel = name if SLICE_RE.match(name) else \
            f"{name}/{DROPIN}" if USER_SLICE_RE.match(name) else None
        if rel is None:
            continue
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            fd = os.open(os.path.join(unit_dir, rel), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                found[rel] = _sha(f.read())
    return found


def observe(probe: Probe, host: HostSide) -> Facts:
    unit_dir = probe["unit_dir"]
    return {"cgroup": backends.detect(probe["cgroup_root"]),
            "quota": quota.state(probe["home_root"]),
            "units": _units(unit_dir) if unit_dir else {}}


def _check(rel: str) -> None:
    head, _, tail = rel.partition("/")
    if not (SLICE_RE.match(rel) or (USER_SLICE_RE.match(head) and tail == DROPIN)):
        raise ValueError(f"{rel!r} is not a wodsync slice unit")


def _write(unit_dir: str, rel: str, content: str) -> None:
    folder = os.path.dirname(os.path.join(unit_dir, rel))
    os.makedirs(folder, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".wodsync-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(unit_dir, rel))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_units(part: Part, host: HostSide) -> None:
    """The slices written and removed, then one `systemctl daemon-reload`."""
    unit_dir, changed = part["unit_dir"], 0
    for rel, content in sorted(part["write"].items()):
        try:
            _check(rel)
            _write(unit_dir, rel, content)
            changed += 1
        except (OSError, ValueError) as exc:
            host.fail("limits.units", f"{rel}: {exc}")
    for rel in part["remove"]:
        try:
            _check(rel)
            os.unlink(os.path.join(unit_dir, rel))
            if "/" in rel:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(unit_dir, rel.split("/")[0]))
            changed += 1
        except FileNotFoundError:
            changed += 1
        except (OSError, ValueError) as exc:
            host.fail("limits.units", f"{rel}: {exc}")
    if not changed:
        return
    try:
        run(["systemctl", "daemon-reload"], timeout=120)
        host.say(f"slices: {changed} units changed, systemd reloaded")
    except CommandFailed as exc:
        host.fail("limits.units", str(exc))


PHASES = ((15, "units", write_units),)
