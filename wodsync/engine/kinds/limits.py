"""limits, controller half: the workshops' limits as each host enforces them, and, on hosts
whose hub systemd runs, their slices (the host half is `agent.kinds.limits`).

A seat's limits are the workshop's over the host's over the pool's, field by field
(`catalog.models.effective_limits`). The seat operations put them on the seat's cgroup at each
CREATE (`agent.limits`): the plan only says, per workshop, what enforces them here — the
host's cgroup back end, a user quota for `disk`, or, where the host cannot, a note naming the
workshop and why (never a silent skip). On a systemd host (`hub.service: systemd`) the plan
also writes, as `slice:` changes, a `wodsync-<workshop>.slice` per workshop with limits (the
workshop's parent, with accounting on) and, for each seat given to a session, a drop-in of
its user slice (`user-<uid>.slice.d/50-wodsync-limits.conf`) with its workshop's limits, so
its logins (ssh, `su`) are held to them too; systemd is reloaded when they change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wodsync.agent.kinds.limits import DROPIN, KIND, Facts, Part, Probe
from wodsync.agent.limits import CGROUP_ROOT
from wodsync.catalog.models import LIMIT_FIELDS, Limits, effective_limits, size_bytes
from wodsync.engine.change import Action, Change
from wodsync.engine.hubwant import workshops_here

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

ADDRESS_KINDS = (KIND, "slice")


@dataclass(frozen=True)
class Want:
    """Each workshop's limits here (only those with some), the homes' folder, and on systemd
    hosts the unit folder with the slice units (path relative to it → content)."""

    limits: dict[str, Limits]
    home_root: str
    unit_dir: str | None
    units: dict[str, str]
    prefix: str = ""     # the pool's seats: a seat's uid is uid_base + its number
    uid_base: int = 0


@dataclass(frozen=True)
class SliceChange:
    path: str
    sha256: str = ""


DATA = SliceChange


def desired(ctx: DesiredContext) -> Want | None:
    pool, host = ctx.pool, ctx.host
    found = {}
    for key in workshops_here(ctx.catalog, host):
        merged = effective_limits(ctx.catalog.workshops[key].limits, host.limits, pool.limits)
        if not merged.is_empty():
            found[key] = merged
    systemd = host.hub is not None and host.hub.service == "systemd"
    if not found and not systemd:
        return None
    units: dict[str, str] = {}
    if systemd:
        units = {f"{slice_name(key)}": workshop_slice(key) for key in found}
        for seat in ctx.live_seats:
            if seat.workshop in found and seat.username.startswith(pool.prefix):
                number = seat.username[len(pool.prefix):]
                if number.isdigit():
                    units[dropin(pool.uid_base + int(number))] = \
                        user_dropin(seat.workshop, found[seat.workshop])
    return Want(found, pool.home_root, host.hub.unit_dir if systemd and host.hub else None,
                units, pool.prefix, pool.uid_base)


def dropin(uid: int) -> str:
    """A seat's user slice drop-in, relative to the unit folder."""
    return f"user-{uid}.slice.d/{DROPIN}"


def escape(key: str) -> str:
    """A workshop key as a unit name part (systemd reads `-` in a slice name as nesting)."""
    return key.replace("-", "\\x2d")


def slice_name(key: str) -> str:
    return f"wodsync-{escape(key)}.slice"


def workshop_slice(key: str) -> str:
    return ("# Managed by wodsync: the parent of the seats of " + key + ".\n"
            "[Unit]\nDescription=wodsync workshop " + key + "\n\n"
            "[Slice]\nMemoryAccounting=yes\nCPUAccounting=yes\nTasksAccounting=yes\n")


def user_dropin(key: str, limits: Limits) -> str:
    """A seat's user slice held to its workshop's limits (systemd's names for them)."""
    lines = ["# Managed by wodsync: this seat is given to a session of " + key + ".",
             "[Slice]"]
    if limits.memory_high:
        lines.append(f"MemoryHigh={size_bytes(limits.memory_high)}")
    if limits.memory_max:
        lines.append(f"MemoryMax={size_bytes(limits.memory_max)}")
    if limits.cpu:
        lines.append(f"CPUQuota={round(limits.cpu * 100)}%")
    if limits.tasks:
        lines.append(f"TasksMax={limits.tasks}")
    return "\n".join(lines) + "\n"


def probe(want: Want) -> Probe:
    return {"cgroup_root": CGROUP_ROOT, "home_root": want.home_root, "unit_dir": want.unit_dir}


def summary(limits: Limits) -> str:
    return ", ".join(f"{name} {getattr(limits, name)}" for name in LIMIT_FIELDS
                     if getattr(limits, name) is not None)


def diff(plan: PlanContext) -> None:
    want: Want = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    for key, limits in sorted(want.limits.items()):
        _enforced(plan, key, limits, facts)
    _units(plan, want, facts)


def _enforced(plan: PlanContext, key: str, limits: Limits, facts: Facts) -> None:
    """Per workshop: what enforces its limits on this host, or a note saying what cannot."""
    cgroup = facts["cgroup"]
    kernel = limits.model_copy(update={"disk": None})
    if not kernel.is_empty():
        if cgroup is None:
            plan.notes.append(f"limits of {key} ({summary(kernel)}): this host has no "
                              f"writable cgroup tree at {CGROUP_ROOT}: not enforced")
        else:
            plan.noop(KIND, key, f"{summary(kernel)}: each seat's cgroup (cgroup {cgroup}), "
                                 "set at its CREATE")
    if limits.disk:
        quota = facts["quota"]
        if quota["on"]:
            plan.noop(KIND, f"{key}/disk", f"disk {limits.disk}: a user quota on "
                                           f"{quota['mount']}, set at each CREATE")
        else:
            plan.notes.append(f"disk: {limits.disk} for {key}: {quota['why']}")


def _units(plan: PlanContext, want: Want, facts: Facts) -> None:
    have = facts["units"]
    for rel, content in sorted(want.units.items()):
        sha = hashlib.sha256(content.encode()).hexdigest()
        if rel not in have:
            plan.add(Action.CREATE, "slice", rel, "", SliceChange(rel, sha))
        elif have[rel] != sha:
            plan.add(Action.UPDATE, "slice", rel, "content differs", SliceChange(rel, sha))
        else:
            plan.noop("slice", rel, "is up to date")
    held = _held_dropins(plan, want)
    for rel in sorted(set(have) - set(want.units)):
        if rel in held:
            plan.noop("slice", rel, f"seat {held[rel]} is held on the host by a session the "
                                    "store does not know: its limits stay")
        else:
            plan.add(Action.DELETE, "slice", rel, "no longer wanted", SliceChange(rel))


def _held_dropins(plan: PlanContext, want: Want) -> dict[str, str]:
    """The user slice drop-ins of seats the host holds for sessions the store does not know
    (path → seat)."""
    found = {}
    for user in plan.held_on_host():
        number = user[len(want.prefix):]
        if want.prefix and user.startswith(want.prefix) and number.isdigit():
            found[dropin(want.uid_base + int(number))] = user
    return found


def batch(want: Want, changes: list[Change]) -> Part:
    return {"unit_dir": want.unit_dir or "",
            "write": {c.data.path: want.units[c.data.path] for c in changes
                      if c.action != Action.DELETE},
            "remove": [c.data.path for c in changes if c.action == Action.DELETE]}
