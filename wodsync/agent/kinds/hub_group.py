"""hub_group, host half: the hub's groups read with `GET /groups`, and their membership synced
with `POST`/`DELETE /groups/{name}/users`; a group is deleted only when the inventory says
wodsync made it. A group found existing when it was planned as new (the hub was down when the
host was observed) is treated as existing: its members are synced. `membership` is the pure
comparison the controller half (`engine.kinds.hub_group`) plans with, and the host too when
the hub was down at planning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypedDict

from wodsync.agent import hubapi, records
from wodsync.agent.factspec import HUB_API, NAMES, MapOf, Nullable, Record
from wodsync.agent.host import HostSide

KIND = "hub_group"


class Probe(TypedDict):
    api: str
    token: str


class Facts(TypedDict):
    """How the listing went, each group's members (None when the hub could not be read) and
    the groups wodsync made (`managed`)."""

    api: hubapi.Listing
    groups: dict[str, list[str]] | None
    managed: list[str]


FACTS = Record({"api": HUB_API, "groups": Nullable(MapOf(NAMES)), "managed": NAMES})


class Sync(TypedDict):
    name: str
    add: list[str]
    remove: list[str]
    create: bool


class Part(TypedDict):
    api: str
    token: str
    deferred: bool
    groups: dict[str, list[str]]
    sync: list[Sync]
    delete: list[str]


def observe(probe: Probe, host: HostSide) -> Facts:
    found = hubapi.listing(probe["api"], probe["token"], "/groups")
    groups = {g["name"]: sorted(g.get("users", [])) for g in found.pop("items", [])} \
        if found["ok"] else None
    return {"api": found, "groups": groups, "managed": sorted(host.inventory.names(KIND))}


def membership(want: Mapping[str, Iterable[str]], have: Mapping[str, Iterable[str]],
               leaving: set[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """(name, add, remove) for every wanted group whose members differ, missing ones included
    (pure: also used on the host when the hub was down at planning)."""
    for name, members in sorted(want.items()):
        current = set(have.get(name, []))
        add = sorted(set(members) - current)
        remove = sorted(current - set(members) - leaving)
        if name not in have or add or remove:
            yield name, add, remove


def _create(part: Part, name: str, members: list[str]) -> list[str]:
    """A new group; one that exists after all (the hub was down at planning) is synced."""
    try:
        hubapi.request(part["api"], part["token"], "POST", f"/groups/{hubapi.quote(name)}",
                       {"users": members})
        return []
    except hubapi.HubApiError as exc:
        if exc.status != 409:
            raise
    group = hubapi.request(part["api"], part["token"], "GET", f"/groups/{hubapi.quote(name)}")
    users: list[str] = group.get("users", [])
    return users


def _members(part: Part, name: str, add: list[str], remove: list[str]) -> None:
    path = f"/groups/{hubapi.quote(name)}/users"
    if add:
        hubapi.request(part["api"], part["token"], "POST", path, {"users": add})
    if remove:
        hubapi.request(part["api"], part["token"], "DELETE", path, {"users": remove})


def _deferred_sync(part: Part, host: HostSide) -> list[Sync]:
    """Read now that the hub answers: the groups to sync, and ours no longer wanted."""
    have = {g["name"]: g.get("users", []) for g in
            hubapi.paged(part["api"], part["token"], "/groups")}
    mine = host.inventory.names(KIND)
    part["delete"] = sorted(n for n in set(have) - set(part["groups"]) if n in mine)
    return [{"name": name, "add": add, "remove": remove, "create": name not in have}
            for name, add, remove in membership(part["groups"], have,
                                                _held(host, part["groups"]))]


def _held(host: HostSide, groups: Mapping[str, Iterable[str]]) -> set[str]:
    """Seats this host records in use (not held out of their group for a RESET) that the
    wish puts in no group: a session the controller did not know when it planned. They stay
    in their groups, as the controller half keeps them."""
    wanted = {user for members in groups.values() for user in members}
    return {user for user, record in records.read_all(host.state_dir).items()
            if record.get("state") != "held" and user not in wanted}


def sync(part: Part, host: HostSide) -> None:
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
