"""hub_user: the hub users of a host, one per seat of its pool (JupyterHub's own user table).

Observed with the paginated `GET /users` from the host side; created in one bulk
`POST /users`. A hub user is deleted only when wodsync's inventory says wodsync made it, after
its server is stopped, and before its Linux account goes (`userdel` refuses an account whose
processes still run); others are reported and left. While the hub is down its users cannot be
read: they are unknown, not absent. When the same batch starts the hub, the host half reads
them once it answers and creates what is missing in the same call — and deletes nothing on the
strength of facts it could not read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wodsync.agent import hubapi
from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "hub_user"
DEFERRED = "*"


@dataclass(frozen=True)
class HubUsers:
    api: str
    token: str = field(repr=False)
    users: tuple[str, ...]


@dataclass(frozen=True)
class HubUserChange:
    name: str
    deferred: bool = False


DATA = HubUserChange


def desired(ctx: DesiredContext) -> HubUsers | None:
    hub, pool = ctx.host.hub, ctx.pool
    if hub is None or ctx.hub_token is None:
        return None
    return HubUsers(hub.api, ctx.hub_token,
                    tuple(pool.user(n) for n in range(pool.first, pool.last + 1)))


def probe(want: HubUsers) -> dict[str, Any]:
    return {"api": want.api, "token": want.token}


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    found = hubapi.listing(probe["api"], probe["token"], "/users")
    inv = host.inventory
    users = [u["name"] for u in found.pop("items", [])] if found["ok"] else None
    present = set(users or [])
    return {"api": found, "users": users,
            "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present))}


def hub_starting(plan: PlanContext) -> bool:
    """The batch (re)starts the hub: an API that did not answer will answer after it."""
    return bool(plan.planned("service"))


def unreadable(plan: PlanContext, kind: str, what: str, api: dict[str, Any], url: str,
               data: type) -> bool:
    """Handle an API that could not be read; True when the kind must stop diffing here."""
    if api["ok"]:
        return False
    if api.get("down") and hub_starting(plan):
        plan.add(Action.UPDATE, kind, DEFERRED, f"hub not running: {what} are checked after "
                 "it starts", data(DEFERRED, deferred=True))
    else:
        plan.errors.append(f"hub API {url} did not answer: {api.get('error')}")
    return True


def diff(plan: PlanContext) -> None:
    want: HubUsers = plan.want[KIND]
    facts = plan.facts[KIND]
    if unreadable(plan, KIND, "users", facts["api"], want.api, HubUserChange):
        return
    have, mine = set(facts["users"]), set(facts["managed"])
    missing = [n for n in want.users if n not in have]
    for name in missing:
        plan.add(Action.CREATE, KIND, name, "", HubUserChange(name))
    if len(missing) < len(want.users):
        plan.noop(KIND, f"{want.users[0]}…", f"{len(want.users) - len(missing)} hub users exist")
    extra = sorted(have - set(want.users))
    for name in extra:
        if name in mine:
            plan.add(Action.DELETE, KIND, name, "server stopped first", HubUserChange(name))
    foreign = [n for n in extra if n not in mine]
    if foreign:
        plan.notes.append(f"{len(foreign)} hub users not created by wodsync are left alone "
                          f"({', '.join(foreign[:5])}{'…' if len(foreign) > 5 else ''})")


def batch(want: HubUsers, changes: list[Any]) -> dict[str, Any]:
    deferred = any(c.data.deferred for c in changes)
    return {"api": want.api, "token": want.token, "deferred": deferred,
            "users": list(want.users) if deferred else [],
            "create": [c.data.name for c in changes if c.action == Action.CREATE],
            "delete": [c.data.name for c in changes if c.action == Action.DELETE]}


def retire(part, host):
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


def create(part, host):
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
