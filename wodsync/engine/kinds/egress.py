"""egress, controller half: which seats in use get which egress allow-list (`egress:` of their
workshop), kept in the host's firewall by the host half (`agent.kinds.egress`).

A seat given to a session of a workshop with a list may reach only its list, loopback and the
hub (`hub_entries`), and the host's resolvers on port 53; every other seat and uid is left
alone. The seat operations set and drop a seat's rules at once (CREATE, the release); a full
apply keeps them as the live sessions say — rules restored after a reboot, rules of a seat no
longer in use dropped. Only seats wodsync's ruleset holds are ever dropped, and never those of
a session the host records but the store does not know.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wodsync.agent.firewall import SeatRules, WorkshopRules, entries
from wodsync.agent.kinds.egress import KIND, Facts, Part, Probe, SeatWish
from wodsync.agent.protocol import Egress
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog
    from wodsync.catalog.models import Host, Pool
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

LOOPBACK = ("127.0.0.0/8", "::1")
TABLE = "*"  # the address of a rewrite of the whole ruleset


@dataclass(frozen=True)
class EgressChange:
    """A seat's rules written (`allow`, `hub`) or dropped (`drop`); `rewrite`: the ruleset
    written again whole, for rules in it that are not wodsync's."""

    uid: int
    user: str
    workshop: str = ""
    allow: list[str] = field(default_factory=list)
    hub: list[str] = field(default_factory=list)
    drop: bool = False
    rewrite: bool = False


DATA = EgressChange


def _with_port(address: str, port: int | None) -> str | None:
    """`address:port` as an entry, or None for an address a seat reaches anyway (loopback) or
    that names no destination (every interface)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return entries.canonical(f"{address}:{port}" if port else address)
    if ip.is_loopback or ip.is_unspecified:
        return None
    where = f"[{ip}]" if ip.version == 6 else str(ip)
    return entries.canonical(f"{where}:{port}" if port else str(ip))


def hub_entries(host: Host) -> list[str]:
    """What a seat with a list may reach besides it: loopback (the hub, its proxy, the seat's
    own server), and the proxy's public address and port and the hub's API where they are not
    on loopback."""
    found = list(LOOPBACK)
    hub = host.hub
    if hub is None:
        return found
    extra = [_with_port(hub.ip, hub.port) if hub.ip else None]
    if hub.api_url:
        url = urlsplit(hub.api_url)
        if url.hostname:
            extra.append(_with_port(url.hostname,
                                    url.port or (443 if url.scheme == "https" else 80)))
    return found + [e for e in dict.fromkeys(extra) if e]


def seat_egress(catalog: Catalog, host_name: str, workshop: str) -> Egress | None:
    """A CREATE's `egress`: the workshop's list and the hub's entries (None: no list)."""
    ws = catalog.workshops.get(workshop)
    if ws is None or ws.egress is None:
        return None
    return {"allow": list(ws.egress), "hub": hub_entries(catalog.hosts[host_name])}


def _uid(pool: Pool, user: str) -> int | None:
    tail = user[len(pool.prefix):] if user.startswith(pool.prefix) else ""
    return pool.uid_base + int(tail) if tail.isdigit() else None


def desired(ctx: DesiredContext) -> dict[int, SeatWish] | None:
    """uid → its wish, for each seat a participant holds in a workshop with a list; None
    (the kind is not looked at) when no workshop of the catalog has one."""
    if all(ws.egress is None for ws in ctx.catalog.workshops.values()):
        return None
    wants: dict[int, SeatWish] = {}
    for seat in ctx.live_seats:
        egress = seat_egress(ctx.catalog, ctx.name, seat.workshop)
        uid = _uid(ctx.pool, seat.username)
        if seat.in_group and egress is not None and uid is not None:
            wants[uid] = {"user": seat.username, "workshop": seat.workshop, **egress}
    return wants


def probe(want: dict[int, SeatWish]) -> Probe:
    return {}


def _same(seat: SeatRules, rules: WorkshopRules | None, wish: SeatWish) -> bool:
    return rules is not None and (seat["user"], seat["workshop"]) == \
        (wish["user"], wish["workshop"]) and \
        (sorted(rules["allow"]), sorted(rules["hub"])) == (sorted(wish["allow"]),
                                                           sorted(wish["hub"]))


def _delta(seat: SeatRules, rules: WorkshopRules | None, wish: SeatWish) -> str:
    have = rules or {"allow": {}, "hub": {}, "dns": []}
    words = [f"+{e}" for e in sorted(set(wish["allow"]) - set(have["allow"]))] + \
        [f"-{e}" for e in sorted(set(have["allow"]) - set(wish["allow"]))]
    if seat["workshop"] != wish["workshop"] or seat["user"] != wish["user"]:
        words.insert(0, f"{seat['user']}/{seat['workshop']} → {wish['user']}/{wish['workshop']}")
    if set(have["hub"]) != set(wish["hub"]):
        words.append("hub: " + ", ".join(wish["hub"]))
    return " ".join(words)


def _set(plan: PlanContext, action: Action, uid: int, wish: SeatWish, detail: str) -> None:
    plan.add(action, KIND, wish["user"], detail,
             EgressChange(uid, wish["user"], wish["workshop"], wish["allow"], wish["hub"]))


def _kept(plan: PlanContext, seat: SeatRules, rules: WorkshopRules) -> None:
    allowed = ", ".join(rules["allow"]) or "nothing"
    plan.noop(KIND, seat["user"], f"{seat['workshop']} allows {allowed} (and loopback, hub, "
              f"DNS); {seat['rejected']} packets refused")


def _unresolved(plan: PlanContext, facts: Facts) -> None:
    for workshop, rules in sorted(facts["workshops"].items()):
        names = [e for e, networks in rules["allow"].items() if not networks]
        if names:
            plan.notes.append(f"egress of {workshop}: {', '.join(names)} did not resolve on the "
                              "host when its rules were written: nothing allowed for them")


def diff(plan: PlanContext) -> None:
    want: dict[int, SeatWish] = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    if facts["backend"] is None:
        if want:
            plan.errors.append("neither nft nor iptables works on this host: the egress lists "
                               f"of {', '.join(w['user'] for w in want.values())} cannot be "
                               "enforced")
        return
    have = {int(uid): seat for uid, seat in facts["seats"].items()}
    for uid, wish in sorted(want.items()):
        seat = have.get(uid)
        rules = facts["workshops"].get(seat["workshop"]) if seat else None
        if seat is None:
            _set(plan, Action.CREATE, uid, wish, f"{wish['workshop']} allows "
                 f"{', '.join(wish['allow']) or 'nothing'} (and loopback, hub, DNS)")
        elif rules is None or not _same(seat, rules, wish):
            _set(plan, Action.UPDATE, uid, wish, _delta(seat, rules, wish))
        else:
            _kept(plan, seat, rules)
    _unresolved(plan, facts)
    _drops(plan, want, have)
    if facts["foreign"]:
        plan.add(Action.UPDATE, KIND, TABLE, f"{facts['foreign']} rules or chains in wodsync's "
                 "ruleset are not wodsync's: written again whole",
                 EgressChange(0, "", rewrite=True))


def _drops(plan: PlanContext, want: dict[int, SeatWish], have: dict[int, SeatRules]) -> None:
    """Rules of seats not wanted go, unless the host records the seat for a session the store
    does not know (the seat kind notes it; its rules stay with it)."""
    held = plan.held_on_host()
    for uid, seat in sorted(have.items()):
        if uid in want:
            continue
        if seat["user"] in held:
            plan.noop(KIND, seat["user"], "is held on the host by a session the store does "
                      "not know: its rules are left")
            continue
        plan.add(Action.DELETE, KIND, seat["user"], f"no longer in use by {seat['workshop']}: "
                 "its rules go", EgressChange(uid, seat["user"], seat["workshop"], drop=True))


def batch(want: dict[int, SeatWish], changes: list[Change]) -> Part:
    data: list[EgressChange] = [c.data for c in changes]
    return {"set": {str(d.uid): {"user": d.user, "workshop": d.workshop, "allow": d.allow,
                                 "hub": d.hub} for d in data if not (d.drop or d.rewrite)},
            "drop": [str(d.uid) for d in data if d.drop],
            "rewrite": any(d.rewrite for d in data)}
