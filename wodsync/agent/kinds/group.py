"""group, host half: the pool's shared group as it is, and setting its members.

The controller half (`engine.kinds.group`) decides the gid and the members; the host leaves out
a member that is not an account here (a seat refused at creation).
"""

from __future__ import annotations

from typing import TypedDict

from wodsync.agent import accountsdb
from wodsync.agent.factspec import INT, NAMES, Nullable, Record
from wodsync.agent.host import HostSide

KIND = "group"


class Probe(TypedDict):
    name: str


class Facts(TypedDict):
    """The group's gid and members; both None when there is no such group."""

    gid: int | None
    members: list[str] | None


FACTS = Record({"gid": Nullable(INT), "members": Nullable(NAMES)})


class Part(TypedDict):
    name: str
    gid: int
    members: list[str]


def observe(probe: Probe, host: HostSide) -> Facts:
    group = accountsdb.read_databases()["groups"].get(probe["name"])
    return {"gid": group["gid"] if group else None,
            "members": sorted(group["members"]) if group else None}


def set_members(part: Part, host: HostSide) -> None:
    """Members that are accounts on the host (a seat refused at creation is left out)."""
    users = accountsdb.read_databases()["users"]
    members = [m for m in part["members"] if m in users]
    outcome = accountsdb.apply({"groups": [{"name": part["name"], "gid": part["gid"],
                                            "members": members}]})
    for refusal in outcome["errors"]:
        host.fail("group.members", f"{refusal['subject']}: {refusal['message']}")
    host.say(f"group {part['name']}: {len(members)} members")


PHASES = ((56, "members", set_members),)
