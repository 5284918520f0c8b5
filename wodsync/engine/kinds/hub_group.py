"""hub_group, controller half: the hub's groups — the pool's group with every seat, and one
group per workshop served at the host's location with the seats its live sessions hold — so an
operator can see and act on a workshop's current students as a group in the hub. A CREATE adds
its seat to the workshop's group and a CLEANUP takes it out; a full apply keeps the groups as
the sessions say, and never takes out a seat the host records in use for a session the store
does not know (another store's, or a CREATE made after the apply read the sessions).

The host half (`agent.kinds.hub_group`) syncs memberships; a group is deleted only when the
inventory says wodsync made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wodsync.agent.kinds.hub_group import KIND, Facts, Part, Probe, membership
from wodsync.engine import hubwant
from wodsync.engine.change import Action, Change
from wodsync.engine.kinds import hub_user

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

@dataclass(frozen=True)
class HubGroups:
    api: str
    token: str = field(repr=False)
    groups: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class HubGroupChange:
    name: str
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    deferred: bool = False


DATA = HubGroupChange


def desired(ctx: DesiredContext) -> HubGroups | None:
    hub = ctx.host.hub
    if hub is None or ctx.hub_token is None:
        return None
    live = {s.username: s.workshop for s in ctx.live_seats if s.in_group}
    return HubGroups(hub.api, ctx.hub_token,
                     hubwant.hub_groups(ctx.catalog, ctx.host, ctx.pool, live))


def probe(want: HubGroups) -> Probe:
    return {"api": want.api, "token": want.token}


def diff(plan: PlanContext) -> None:
    want: HubGroups = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    if hub_user.unreadable(plan, KIND, "groups", facts["api"], want.api, HubGroupChange):
        return
    have = facts["groups"] or {}
    # Deleting a hub user takes it out of its groups; removing it again would be refused. A
    # seat the host holds for a session the store does not know stays where it is.
    kept = plan.names("hub_user", Action.DELETE) | plan.held_on_host()
    changed = set()
    for name, add, remove in membership(want.groups, have, kept):
        changed.add(name)
        if name not in have:
            plan.add(Action.CREATE, KIND, name, f"{len(add)} members",
                     HubGroupChange(name, add))
        else:
            plan.add(Action.UPDATE, KIND, name, f"{len(add)} members to add, {len(remove)} "
                     "to remove", HubGroupChange(name, add, remove))
    for name in sorted(set(want.groups) - changed):
        plan.noop(KIND, name, f"has its {len(want.groups[name])} members")
    for name in sorted(set(have) - set(want.groups)):
        if name in facts["managed"]:
            plan.add(Action.DELETE, KIND, name, "no longer declared", HubGroupChange(name))


def batch(want: HubGroups, changes: list[Change]) -> Part:
    deferred = any(c.data.deferred for c in changes)
    return {"api": want.api, "token": want.token, "deferred": deferred,
            "groups": {k: list(v) for k, v in want.groups.items()} if deferred else {},
            "sync": [{"name": c.data.name, "add": c.data.add, "remove": c.data.remove,
                      "create": c.action == Action.CREATE}
                     for c in changes if c.action != Action.DELETE and not c.data.deferred],
            "delete": [c.data.name for c in changes if c.action == Action.DELETE]}
