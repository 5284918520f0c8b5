"""group, controller half: the pool's shared group (`group:` of the pool), with every seat as a
member; the host half is `agent.kinds.group`.

Its gid is chosen by the catalog (`group_gid`, default `gid_base`), never left to `groupadd`:
a gid inside the seat gid range would later become a new seat's primary group. A shared group
found with another gid is reported, not renumbered (files may carry that gid), and is an error
when that gid is a seat's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wodsync.agent.kinds.group import KIND, Facts, Part, Probe
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

@dataclass(frozen=True)
class SharedGroup:
    name: str
    gid: int
    members: tuple[str, ...]
    seat_gids: tuple[int, int]


@dataclass(frozen=True)
class GroupChange:
    name: str
    gid: int
    members: list[str] = field(default_factory=list)


DATA = GroupChange


def desired(ctx: DesiredContext) -> SharedGroup | None:
    pool = ctx.pool
    if not pool.group:
        return None
    return SharedGroup(pool.group, pool.shared_gid,
                       tuple(pool.user(n) for n in range(pool.first, pool.last + 1)),
                       (pool.gid_base + pool.first, pool.gid_base + pool.last))


def probe(want: SharedGroup) -> Probe:
    return {"name": want.name}


def diff(plan: PlanContext) -> None:
    want: SharedGroup = plan.want[KIND]
    have: Facts = plan.facts[KIND]
    members = sorted(want.members)
    if have["gid"] is None:
        plan.add(Action.CREATE, KIND, want.name, f"gid {want.gid}, {len(members)} members",
                 GroupChange(want.name, want.gid, members))
        return
    low, high = want.seat_gids
    if have["gid"] != want.gid:
        message = (f"group {want.name} has gid {have['gid']}, the catalog says {want.gid}: "
                   "left as is (wodsync does not renumber groups)")
        if low <= have["gid"] <= high:
            plan.errors.append(message + f"; gid {have['gid']} is a seat's gid: renumber or "
                               "remove the group by hand")
        else:
            plan.notes.append(message)
    have_members = have["members"] or []  # a group with a gid has its members listed
    if have_members != members:
        add, remove = set(members) - set(have_members), set(have_members) - set(members)
        plan.add(Action.UPDATE, KIND, want.name,
                 f"{len(add)} members to add, {len(remove)} to remove",
                 GroupChange(want.name, have["gid"], members))
    else:
        plan.noop(KIND, want.name, f"has its {len(members)} members")


def batch(want: SharedGroup, changes: list[Change]) -> Part:
    (change,) = changes
    return {"name": change.data.name, "gid": change.data.gid, "members": change.data.members}
