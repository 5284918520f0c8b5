"""hub_group: the hub's groups — the pool's group with every seat, and one group per workshop
served at the host's location with the seats its live sessions hold — so an operator can see
and act on a workshop's current students as a group in the hub. A CREATE adds its seat to the
workshop's group and a CLEANUP takes it out; a full apply keeps the groups as the sessions say.

Membership is synced with `POST`/`DELETE /groups/{name}/users`; a group is deleted only when
the inventory says wodsync made it. A group found existing when it was planned as new (the hub
was down when the host was observed) is treated as existing: its members are synced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wodsync.agent import hubapi
from wodsync.engine.change import Action
from wodsync.engine.kinds import hubusers

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "hub_group"


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
    from wodsync.engine import hubwant

    hub = ctx.host.hub
    if hub is None or ctx.hub_token is None:
        return None
    live = {s.username: s.workshop for s in ctx.live_seats if s.in_group}
    return HubGroups(hub.api, ctx.hub_token,
                     hubwant.hub_groups(ctx.catalog, ctx.host, ctx.pool, live))


def probe(want: HubGroups) -> dict[str, Any]:
    return {"api": want.api, "token": want.token}


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    found = hubapi.listing(probe["api"], probe["token"], "/groups")
    groups = {g["name"]: sorted(g.get("users", [])) for g in found.pop("items", [])} \
        if found["ok"] else None
    return {"api": found, "groups": groups, "managed": sorted(host.inventory.names(KIND))}


def membership(want: dict[str, Any], have: dict[str, list[str]], leaving: set[str]):
    """(name, add, remove) for every wanted group whose members differ, missing ones included
    (pure: also used on the host when the hub was down at planning)."""
    for name, members in sorted(want.items()):
        current = set(have.get(name, []))
        add = sorted(set(members) - current)
        remove = sorted(current - set(members) - leaving)
        if name not in have or add or remove:
            yield name, add, remove


def diff(plan: PlanContext) -> None:
    want: HubGroups = plan.want[KIND]
    facts = plan.facts[KIND]
    if hubusers.unreadable(plan, KIND, "groups", facts["api"], want.api, HubGroupChange):
        return
    have = facts["groups"]
    # Deleting a hub user takes it out of its groups; removing it again would be refused.
    leaving = plan.names("hub_user", Action.DELETE)
    changed = set()
    for name, add, remove in membership(want.groups, have, leaving):
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


def batch(want: HubGroups, changes: list[Any]) -> dict[str, Any]:
    deferred = any(c.data.deferred for c in changes)
    return {"api": want.api, "token": want.token, "deferred": deferred,
            "groups": {k: list(v) for k, v in want.groups.items()} if deferred else {},
            "sync": [{"name": c.data.name, "add": c.data.add, "remove": c.data.remove,
                      "create": c.action == Action.CREATE}
                     for c in changes if c.action != Action.DELETE and not c.data.deferred],
            "delete": [c.data.name for c in changes if c.action == Action.DELETE]}


def _create(part, name, members):
    """A new group; one that exists after all (the hub was down at planning) is synced."""
    try:
        hubapi.request(part["api"], part["token"], "POST", f"/groups/{hubapi.quote(name)}",
                       {"users": members})
        return []
    except hubapi.HubApiError as exc:
        if exc.status != 409:
            raise
    group = hubapi.request(part["api"], part["token"], "GET", f"/groups/{hubapi.quote(name)}")
    return group.get("users", [])


def _members(part, name, add, remove):
    path = f"/groups/{hubapi.quote(name)}/users"
    if add:
        hubapi.request(part["api"], part["token"], "POST", path, {"users": add})
    if remove:
        hubapi.request(part["api"], part["token"], "DELETE", path, {"users": remove})


def _deferred_sync(part, host):
    """Read now that the hub answers: the groups to sync, and ours no longer wanted."""
    have = {g["name"]: g.get("users", []) for g in
            hubapi.paged(part["api"], part["token"], "/groups")}
    mine = host.inventory.names(KIND)
    part["delete"] = sorted(n for n in set(have) - set(part["groups"]) if n in mine)
    return [{"name": name, "add": add, "remove": remove, "create": name not in have}
            for name, add, remove in membership(part["groups"], have, set())]


def sync(part, host):
    todo = _deferred_sync(part, host) if part["deferred"] else part["sync"]
    made = []
    for g in todo:
        host.checkpoint()
        if g["create"]:
            existing = _create(part, g["name"], g["add"])
            made.append(g["name"])
            if existing:  # it was there: bring its members to the wish
                wanted = set(g["add"])
                _members(part, g["name"], sorted(wanted - set(existing)),
                         sorted(set(existing) - wanted))
        else:
            _members(part, g["name"], g["add"], g["remove"])
    mine = host.inventory.names(KIND)
    for name in part["delete"]:
        if name in mine:
            hubapi.request(part["api"], part["token"], "DELETE", f"/groups/{hubapi.quote(name)}")
    host.inventory.made(KIND, made)
    if part["delete"]:
        host.inventory.forget(KIND, part["delete"])
    if todo or part["delete"]:
        host.say(f"synced {len(todo) + len(part['delete'])} hub groups")


PHASES = ((85, "sync", sync),)
