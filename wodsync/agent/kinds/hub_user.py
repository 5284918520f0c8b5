"""hub_user, host half: the hub's users read with the paginated `GET /users`, retired (server
stopped, then deleted) and created in one bulk `POST /users`.

While the hub is down its users cannot be read: they are unknown, not absent. When the same
batch starts the hub (`deferred`), they are read once it answers and what is missing is created
in the same call — and nothing is deleted on the strength of facts that could not be read. The
controller half (`engine.kinds.hub_user`) decides whom to create and delete.
"""

from __future__ import annotations

from typing import TypedDict

from wodsync.agent import hubapi
from wodsync.agent.factspec import HUB_API, NAMES, Nullable, Record
from wodsync.agent.host import HostSide

KIND = "hub_user"


class Probe(TypedDict):
    api: str
    token: str


class Facts(TypedDict):
    """How the listing went, the users (None when the hub could not be read) and those
    wodsync made (`managed`)."""

    api: hubapi.Listing
    users: list[str] | None
    managed: list[str]


FACTS = Record({"api": HUB_API, "users": Nullable(NAMES), "managed": NAMES})


class Part(TypedDict):
    api: str
    token: str
    deferred: bool
    users: list[str]
    create: list[str]
    delete: list[str]


def observe(probe: Probe, host: HostSide) -> Facts:
    found = hubapi.listing(probe["api"], probe["token"], "/users")
    inv = host.inventory
    users = [u["name"] for u in found.pop("items", [])] if found["ok"] else None
    present = set(users or [])
    return {"api": found, "users": users,
            "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present))}


def retire(part: Part, host: HostSide) -> None:
    """Servers stopped, then hub users deleted — before the seats' accounts go."""
    mine = host.inventory.names(KIND)
    gone = [u for u in part["delete"] if u in mine]
    for name in gone:
        host.checkpoint()
        hubapi.stop_server(part["api"], part["token"], name)
        try:
            hubapi.request(part["api"], part["token"], "DELETE", f"/users/{hubapi.quote(name)}")
        except hubapi.HubApiError as exc:
            if exc.status != 404:
                raise
    if gone:
        host.inventory.forget(KIND, gone)
        host.say(f"deleted {len(gone)} hub users (servers stopped first)")


def create(part: Part, host: HostSide) -> None:
    """The planned users, or — when the hub was down at planning — what is missing now."""
    names = part["create"]
    if part["deferred"]:
        have = {u["name"] for u in hubapi.paged(part["api"], part["token"], "/users")}
        host.inventory.settle(KIND, have)
        names = [n for n in part["users"] if n not in have]
    if not names:
        return
    host.inventory.intend(KIND, names)
    try:
        hubapi.request(part["api"], part["token"], "POST", "/users", {"usernames": names})
    except hubapi.HubApiError as exc:
        if exc.status != 409:  # 409: all of them exist already
            raise
    host.inventory.made(KIND, names)
    host.say(f"created {len(names)} hub users")


PHASES = ((45, "retire", retire), (80, "create", create))
