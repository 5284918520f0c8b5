"""hub_user, controller half: the hub users of a host, one per seat of its pool (JupyterHub's
own user table); the host half is `agent.kinds.hub_user`.

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
from typing import TYPE_CHECKING

from wodsync.agent.hubapi import Listing
from wodsync.agent.kinds.hub_user import KIND, Facts, Part, Probe
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

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


def probe(want: HubUsers) -> Probe:
    return {"api": want.api, "token": want.token}


def hub_starting(plan: PlanContext) -> bool:
    """The batch (re)starts the hub: an API that did not answer will answer after it."""
    return bool(plan.planned("service"))


def unreadable(plan: PlanContext, kind: str, what: str, api: Listing, url: str,
               data: type) -> bool:
    """Handle an API that could not be read; True when the kind must stop diffing here.

    A hub that refused wodsync's token while this batch restarts it is deferred like one that
    is down: a rotated hub token is in the new configuration (which changes the hub's
    fingerprint, hence the restart), and the running hub knows the old one only. Read with the
    new token after the restart; before, the first reconcile after a rotation failed with 403
    although the same batch was installing the token."""
    if api["ok"]:
        return False
    if hub_starting(plan):
        why = "hub not running" if api.get("down") else \
            "the running hub refused the token (a rotated one?) and restarts with it"
        plan.add(Action.UPDATE, kind, DEFERRED, f"{why}: {what} are checked after it starts",
                 data(DEFERRED, deferred=True))
    else:
        plan.errors.append(f"hub API {url} did not answer: {api.get('error')}")
    return True


def diff(plan: PlanContext) -> None:
    want: HubUsers = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    if unreadable(plan, KIND, "users", facts["api"], want.api, HubUserChange):
        return
    have, mine = set(facts["users"] or []), set(facts["managed"])
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


def batch(want: HubUsers, changes: list[Change]) -> Part:
    deferred = any(c.data.deferred for c in changes)
    return {"api": want.api, "token": want.token, "deferred": deferred,
            "users": list(want.users) if deferred else [],
            "create": [c.data.name for c in changes if c.action == Action.CREATE],
            "delete": [c.data.name for c in changes if c.action == Action.DELETE]}
