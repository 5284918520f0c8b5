"""account, controller half: the seats of the host's pool — Linux accounts `<prefix><n>` with
uid `uid_base+n`, a private group `<prefix><n>` with gid `gid_base+n`, a home
`<home_root>/<prefix><n>` (mode 0700, owned by the seat, filled from /etc/skel when new) and the
pool's shell.

Accounts are written straight into passwd/shadow/group/gshadow under the shadow-utils lock
(`agent.accountsdb`): `newusers` loads the PAM stack once per account, which made it 80 % of a
fresh 2000-seat host. Homes are created and repaired through directory descriptors
(`agent.safefs`), never by following a path a student could have turned into a link.

The host half (`agent.kinds.account`) observes and applies; what the plan may do is decided
here, purely:
- a seat whose name, uid or gid belongs to an account or group wodsync did not create is an
  error for that seat, which is never created (two passwd entries on one uid would give the
  other account the seat's home);
- only accounts the inventory lists are deleted, before any account is created (a renamed
  prefix frees its uids before the new names take them), and a home with the student's files
  in it is kept; a seat in use is never deleted;
- a free seat's password is locked; a seat in use keeps the password its session gave it;
- a changed `home_root` moves the homes with their files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wodsync.agent.kinds.account import HOME_MODE, KIND, AccountFacts, Entry, Facts, Part, Probe
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

@dataclass(frozen=True)
class Seat:
    """A desired seat account."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class Accounts:
    """The pool as this host must have it."""

    prefix: str
    first: int
    last: int
    uid_base: int
    gid_base: int
    home_root: str
    shell: str
    acl_user: str | None
    seats: dict[str, Seat]


@dataclass(frozen=True)
class AccountChange:
    name: str
    uid: int = 0
    gid: int = 0
    home: str = ""
    shell: str = ""
    fix_home: bool = False
    move_from: str = ""
    set_shell: bool = False
    set_gid: bool = False
    lock: bool = False


DATA = AccountChange


def desired(ctx: DesiredContext) -> Accounts:
    pool = ctx.pool
    root = pool.home_root.rstrip("/") or "/"
    base = root.rstrip("/")
    seats = {}
    for n in range(pool.first, pool.last + 1):  # 2000 seats at each resync: each name once
        name = pool.user(n)
        seats[name] = Seat(name, pool.uid_base + n, pool.gid_base + n, f"{base}/{name}",
                           pool.shell)
    return Accounts(pool.prefix, pool.first, pool.last, pool.uid_base, pool.gid_base, root,
                    pool.shell, ctx.host.home_acl, seats)


def probe(want: Accounts) -> Probe:
    return {"prefix": want.prefix, "first": want.first, "last": want.last,
            "uid_base": want.uid_base, "gid_base": want.gid_base, "acl_user": want.acl_user}


def _conflict(seat: Seat, facts: Facts, leaving: set[str]) -> str | None:
    """Why a missing seat cannot be created: its uid or gid held by something not ours."""
    for name, acc in facts["accounts"].items():
        if acc["uid"] == seat.uid and name not in leaving:
            return f"uid {seat.uid} belongs to account {name}"
    for name, group in facts["groups"].items():
        if group["gid"] == seat.gid and name != seat.name and name not in leaving:
            return f"gid {seat.gid} belongs to group {name}"
    return None


def _home_reasons(seat: Seat, have: AccountFacts, acl_uid: int | None) -> list[str]:
    facts = have.get("home_facts")
    if have["home"] != seat.home:
        return [f"home {have['home']} → {seat.home} (moved with its files)"]
    if facts is None:
        return ["home missing"]
    if (facts["mode"], facts["uid"], facts["gid"]) != (HOME_MODE, seat.uid, seat.gid):
        return [f"home mode {facts['mode']:04o} owner {facts['uid']}:{facts['gid']}"]
    if acl_uid is not None and acl_uid not in facts.get("acl", []):
        return [f"home ACL for uid {acl_uid} missing"]
    return []


def _drift(seat: Seat, have: AccountFacts, acl_uid: int | None,
           in_use: bool) -> tuple[list[str], AccountChange | None]:
    home = _home_reasons(seat, have, acl_uid)
    reasons = list(home)
    if have["shell"] != seat.shell:
        reasons.append(f"shell {have['shell']} → {seat.shell}")
    if have["gid"] != seat.gid:
        reasons.append(f"primary gid {have['gid']} → {seat.gid}")
    relock = not have["locked"] and not in_use
    if relock:
        reasons.append("password not locked while the seat is free")
    if not reasons:
        return [], None
    moved = have["home"] != seat.home
    return reasons, AccountChange(seat.name, seat.uid, seat.gid, seat.home, seat.shell,
                                  fix_home=bool(home), move_from=have["home"] if moved else "",
                                  set_shell=have["shell"] != seat.shell,
                                  set_gid=have["gid"] != seat.gid, lock=relock)


def _deletions(plan: PlanContext, want: Accounts, facts: Facts) -> set[str]:
    leaving = set()
    in_use = plan.in_use()
    for name in facts["managed"]:
        have = facts["accounts"].get(name)
        if name in want.seats or have is None:
            continue
        if name in in_use:
            plan.refusals.append(f"the plan would delete seat {name}, held by session "
                                 f"{in_use[name]}: end the session first")
            continue
        home = have.get("home_facts")
        entries = home["entries"] if home else None
        kept = f"home {have['home']} kept: {entries} entries" if entries else "empty home removed"
        plan.add(Action.DELETE, KIND, name, kept,
                 AccountChange(name, have["uid"], have["gid"], have["home"]))
        leaving.add(name)
    for name, have in sorted(facts["accounts"].items()):
        if name not in want.seats and name not in facts["managed"]:
            plan.notes.append(f"account {name} (uid {have['uid']}) is in the pool's range but "
                              "was not created by wodsync: never deleted")
    return leaving


def diff(plan: PlanContext) -> None:
    want: Accounts = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    if want.acl_user and facts.get("acl_uid") == -1:
        plan.errors.append(f"home_acl user {want.acl_user} does not exist on this host")
    leaving = _deletions(plan, want, facts)
    managed = set(facts["managed"])
    in_use = set(plan.in_use())
    for name, seat in want.seats.items():
        have = facts["accounts"].get(name)
        if have is None:
            why = _conflict(seat, facts, leaving)
            if why:
                plan.errors.append(f"seat {name} cannot be created: {why}, not made by "
                                   "wodsync")
            else:
                plan.add(Action.CREATE, KIND, name, f"uid {seat.uid}, home {seat.home}",
                         AccountChange(seat.name, seat.uid, seat.gid, seat.home, seat.shell))
            continue
        if have["uid"] != seat.uid:
            owner = "wodsync" if name in managed else "someone else"
            plan.errors.append(f"seat {name} exists with uid {have['uid']} (made by {owner}), "
                               f"expected {seat.uid}: left alone, renumbering is not done")
            continue
        if name not in managed:  # the same name and uid is not a reason to take it over
            plan.errors.append(f"seat {name} exists (uid {seat.uid}) but was not made by "
                               "wodsync: left alone; remove the account, or give the pool "
                               "another prefix or uid_base")
            continue
        reasons, change = _drift(seat, have, facts.get("acl_uid"), name in in_use)
        if change:
            plan.add(Action.UPDATE, KIND, name, "; ".join(reasons), change)
        else:
            plan.noop(KIND, name, f"is uid {seat.uid}, home {seat.home}")


def batch(want: Accounts, changes: list[Change]) -> Part:
    return {"create": [_entry(c.data) for c in changes if c.action == Action.CREATE],
            "delete": [_entry(c.data) for c in changes if c.action == Action.DELETE],
            "update": [_entry(c.data) for c in changes if c.action == Action.UPDATE],
            "home_root": want.home_root, "acl_user": want.acl_user}


def _entry(d: AccountChange) -> Entry:
    return {"name": d.name, "uid": d.uid, "gid": d.gid, "home": d.home, "shell": d.shell,
            "fix_home": d.fix_home, "move_from": d.move_from, "set_shell": d.set_shell,
            "set_gid": d.set_gid, "lock": d.lock}
