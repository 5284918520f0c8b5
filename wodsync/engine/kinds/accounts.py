"""account: the seats of the host's pool — Linux accounts `<prefix><n>` with uid `uid_base+n`,
a private group `<prefix><n>` with gid `gid_base+n`, a home `<home_root>/<prefix><n>` (mode 0700,
owned by the seat, filled from /etc/skel when new) and the pool's shell.

Accounts are written straight into passwd/shadow/group/gshadow under the shadow-utils lock
(`agent.accountsdb`): `newusers` loads the PAM stack once per account, which made it 80 % of a
fresh 2000-seat host. Homes are created and repaired through directory descriptors
(`agent.safefs`), never by following a path a student could have turned into a link.

What the plan may do is decided here, purely:
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

import os
import pwd
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wodsync.agent import accountsdb, safefs
from wodsync.agent.run import kill_uid, run
from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "account"
HOME_WORKERS = 4
HOME_MODE = 0o700


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
    seats = {pool.user(n): Seat(pool.user(n), pool.uid_base + n, pool.gid_base + n,
                                f"{root.rstrip('/')}/{pool.user(n)}", pool.shell)
             for n in range(pool.first, pool.last + 1)}
    return Accounts(pool.prefix, pool.first, pool.last, pool.uid_base, pool.gid_base, root,
                    pool.shell, ctx.host.home_acl, seats)


def probe(want: Accounts) -> dict[str, Any]:
    return {"prefix": want.prefix, "first": want.first, "last": want.last,
            "uid_base": want.uid_base, "gid_base": want.gid_base, "acl_user": want.acl_user}


# ---- host side: observe ---------------------------------------------------------------------

def _seat_number(name, prefix):
    m = re.fullmatch(re.escape(prefix) + r"([1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def _home_facts(path, skel):
    """Owner and mode (read past an ACL mask); with `skel` (a home about to go), the number of
    entries the student made there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return {"mode": -1, "uid": -1, "gid": -1, "acl": [], "entries": None}
    try:
        st = os.fstat(fd)
        mode, acl = safefs.home_mode(fd)
        entries = safefs.count_own_entries(fd, skel) if skel is not None else None
        return {"mode": mode, "uid": st.st_uid, "gid": st.st_gid,
                "acl": sorted(u for u, perms in acl.items() if perms == 7), "entries": entries}
    finally:
        os.close(fd)


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    """Every account and group that touches the pool: by name, uid, gid or the inventory."""
    lo, hi = probe["first"], probe["last"]
    uids = range(probe["uid_base"] + lo, probe["uid_base"] + hi + 1)
    gids = range(probe["gid_base"] + lo, probe["gid_base"] + hi + 1)
    inv = host.inventory
    mine = inv.names(KIND) | inv.intents(KIND)
    db = accountsdb.read_databases()
    accounts = {}
    skel = None
    for u in db["users"].values():
        number = _seat_number(u["name"], probe["prefix"])
        if u["name"] in mine or u["uid"] in uids or number is not None:
            seat = number is not None and lo <= number <= hi
            if not seat and skel is None:
                skel = safefs.read_skel()
            accounts[u["name"]] = {
                "uid": u["uid"], "gid": u["gid"], "home": u["home"], "shell": u["shell"],
                "locked": db["passwords"].get(u["name"], "locked") != "set",
                "home_facts": _home_facts(u["home"], None if seat else skel)}
    groups = {g["name"]: {"gid": g["gid"], "members": sorted(g["members"])}
              for g in db["groups"].values() if g["gid"] in gids or g["name"] in accounts}
    present = set(accounts)
    return {"accounts": accounts, "groups": groups,
            "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present)),
            "acl_uid": _uid_of(probe.get("acl_user"))}


def _uid_of(name):
    if not name:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


# ---- pure diff ------------------------------------------------------------------------------

def _conflict(seat: Seat, facts: dict[str, Any], leaving: set[str]) -> str | None:
    """Why a missing seat cannot be created: its uid or gid held by something not ours."""
    for name, acc in facts["accounts"].items():
        if acc["uid"] == seat.uid and name not in leaving:
            return f"uid {seat.uid} belongs to account {name}"
    for name, group in facts["groups"].items():
        if group["gid"] == seat.gid and name != seat.name and name not in leaving:
            return f"gid {seat.gid} belongs to group {name}"
    return None


def _home_reasons(seat: Seat, have: dict[str, Any], acl_uid: int | None) -> list[str]:
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


def _drift(seat: Seat, have: dict[str, Any], acl_uid: int | None,
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


def _deletions(plan: PlanContext, want: Accounts, facts: dict[str, Any]) -> set[str]:
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
        entries = (have.get("home_facts") or {}).get("entries")
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
    facts = plan.facts[KIND]
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
        reasons, change = _drift(seat, have, facts.get("acl_uid"), name in in_use)
        if change:
            plan.add(Action.UPDATE, KIND, name, "; ".join(reasons), change)
        else:
            plan.noop(KIND, name, f"is uid {seat.uid}, home {seat.home}")


def batch(want: Accounts, changes: list[Any]) -> dict[str, Any]:
    return {"create": [_entry(c.data) for c in changes if c.action == Action.CREATE],
            "delete": [_entry(c.data) for c in changes if c.action == Action.DELETE],
            "update": [_entry(c.data) for c in changes if c.action == Action.UPDATE],
            "home_root": want.home_root, "acl_user": want.acl_user}


def _entry(d: AccountChange) -> dict[str, Any]:
    return {"name": d.name, "uid": d.uid, "gid": d.gid, "home": d.home, "shell": d.shell,
            "fix_home": d.fix_home, "move_from": d.move_from, "set_shell": d.set_shell,
            "set_gid": d.set_gid, "lock": d.lock}


# ---- host side: apply -----------------------------------------------------------------------

def delete_accounts(part, host):
    """Processes ended, entries removed, homes removed only when nothing of the student's is in
    them; the inventory forgets each account once it is gone."""
    items = part["delete"]
    if not items:
        return
    for a in items:
        kill_uid(a["uid"])
    outcome = accountsdb.apply({"delete": [a["name"] for a in items]})
    _report_refusals(outcome, "account.delete", host)
    host.inventory.forget(KIND, [a["name"] for a in items])
    skel = safefs.read_skel()
    kept = 0
    for a in items:
        try:
            safefs.remove_home(os.path.dirname(a["home"]), os.path.basename(a["home"]), skel)
        except safefs.NotEmpty:
            kept += 1
        except safefs.SafeFsError as exc:
            host.fail("account.delete", f"home of {a['name']} left: {exc}")
    host.say(f"deleted {len(items)} accounts ({kept} homes with files kept)")


def create_accounts(part, host):
    items = part["create"]
    if not items:
        return
    names = [a["name"] for a in items]
    host.inventory.intend(KIND, names)
    outcome = accountsdb.apply({"create": [
        {"name": a["name"], "uid": a["uid"], "gid": a["gid"], "home": a["home"],
         "shell": a["shell"], "gecos": "wodsync seat"} for a in items]})
    _report_refusals(outcome, "account.create", host)
    done = set(outcome["created"]) | set(outcome["skipped"]) | set(outcome["repaired"])
    host.inventory.made(KIND, [n for n in names if n in done])
    host.inventory.settle(KIND, [])
    host.inventory.save()
    host.say(f"created {len(outcome['created'])} accounts")


def _report_refusals(outcome, phase, host):
    for refusal in outcome["errors"]:
        host.fail(phase, f"{refusal['subject']}: {refusal['message']}")


def _acl_uid(name):
    if not name:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise RuntimeError(f"home_acl user {name} does not exist on this host") from None


def fix_homes(part, host):
    """New homes filled from /etc/skel, others repaired; a few threads, bound by the
    filesystem rather than by Python."""
    created = _existing({a["name"] for a in part["create"]})
    todo = [a for a in part["create"] if a["name"] in created]
    todo += [a for a in part["update"] if a["fix_home"]]
    if not todo:
        return
    acl = _acl_uid(part["acl_user"])
    skel = safefs.read_skel() if created else []
    os.makedirs(part["home_root"], mode=0o755, exist_ok=True)

    def fix(a):
        host.checkpoint()
        if a["move_from"]:
            _move_home(a["move_from"], a["home"])
        root, name = os.path.dirname(a["home"]), os.path.basename(a["home"])
        done = safefs.ensure_home(root, name, a["uid"], a["gid"], HOME_MODE, acl)
        if "created" in done and a["name"] in created:
            with safefs.opened_home(a["home"], a["uid"], a["gid"]) as fd:
                safefs.fill_from_skel(fd, skel, a["uid"], a["gid"])

    with ThreadPoolExecutor(max_workers=HOME_WORKERS) as pool:
        for a, error in zip(todo, pool.map(_catching(fix), todo), strict=True):
            if error:
                host.fail("account.homes", f"home of {a['name']}: {error}")
    host.say(f"prepared {len(todo)} homes")


def _move_home(old, new):
    """A home moves between two root-owned home roots: a rename of the folder itself (never a
    link, never across filesystems: a copy would run as root through the student's files)."""
    st = os.lstat(old)
    if not os.path.isdir(old) or os.path.islink(old):
        raise RuntimeError(f"{old} is not a folder: not moved")
    if os.path.lexists(new):
        raise RuntimeError(f"cannot move {old} to {new}: {new} exists")
    os.makedirs(os.path.dirname(new), mode=0o755, exist_ok=True)
    if os.stat(os.path.dirname(new)).st_dev != st.st_dev:
        raise RuntimeError(f"cannot move {old} to {new}: another filesystem; move it by hand")
    os.rename(old, new)


def _catching(fn):
    def call(arg):
        try:
            fn(arg)
            return None
        except Exception as exc:  # reported per home, the others go on
            return f"{type(exc).__name__}: {exc}"
    return call


def _existing(names):
    return {n for n in names if _exists(n)}


def _exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _modify(a):
    """Rare repairs of one account (a shell, a primary group, a moved home): `usermod`."""
    if a["set_gid"]:
        outcome = accountsdb.apply({"groups": [{"name": a["name"], "gid": a["gid"],
                                                "members": []}]})
        if outcome["errors"]:
            raise RuntimeError("; ".join(e["message"] for e in outcome["errors"]))
        run(["usermod", "-g", str(a["gid"]), a["name"]])
    if a["set_shell"]:
        run(["usermod", "-s", a["shell"], a["name"]])
    if a["move_from"]:
        run(["usermod", "-d", a["home"], a["name"]])


def update_accounts(part, host):
    items = part["update"]
    modified = 0
    for a in items:
        if a["set_shell"] or a["set_gid"] or a["move_from"]:
            try:
                _modify(a)
                modified += 1
            except Exception as exc:  # one account's repair never stops the others
                host.fail("account.update", f"{a['name']}: {exc}")
    locks = [a["name"] for a in items if a["lock"]]
    if locks:
        outcome = accountsdb.apply({"password_fields": dict.fromkeys(locks, "!")})
        _report_refusals(outcome, "account.lock", host)
    if modified or locks:
        host.say(f"updated {modified} accounts, locked {len(locks)} passwords")


PHASES = ((48, "delete", delete_accounts), (50, "create", create_accounts),
          (52, "homes", fix_homes), (54, "update", update_accounts))
