"""account, host half: the pool's accounts, groups and homes as they are, and the phases that
delete, create, repair and lock them.

Accounts are written straight into passwd/shadow/group/gshadow under the shadow-utils lock
(`agent.accountsdb`): `newusers` loads the PAM stack once per account, which made it 80 % of a
fresh 2000-seat host. Homes are created and repaired through directory descriptors
(`agent.safefs`), never by following a path a student could have turned into a link. What may
be done is decided by the controller half (`engine.kinds.account`), purely.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

from wodsync.agent import accountsdb, safefs
from wodsync.agent.factspec import BOOL, INT, NAME, NAMES, ListOf, MapOf, Nullable, Record
from wodsync.agent.host import HostSide
from wodsync.agent.run import kill_uid, run

KIND = "account"
HOME_WORKERS = 4
HOME_MODE = 0o700


class Probe(TypedDict):
    prefix: str
    first: int
    last: int
    uid_base: int
    gid_base: int
    acl_user: str | None


class HomeFacts(TypedDict):
    """A home's owner and mode (-1 when it cannot be opened as a folder), the uids given rwx
    by its ACL, and — for a home about to go — how many entries the student made there."""

    mode: int
    uid: int
    gid: int
    acl: list[int]
    entries: int | None


class AccountFacts(TypedDict):
    uid: int
    gid: int
    home: str
    shell: str
    locked: bool
    home_facts: HomeFacts | None


class GroupFacts(TypedDict):
    gid: int
    members: list[str]


class Facts(TypedDict):
    """Every account and group that touches the pool, the accounts wodsync made (`managed`)
    and the uid of the `home_acl` user (None: none asked; -1: no such user)."""

    accounts: dict[str, AccountFacts]
    groups: dict[str, GroupFacts]
    managed: list[str]
    acl_uid: int | None


FACTS = Record({
    "accounts": MapOf(Record({
        "uid": INT, "gid": INT, "home": NAME, "shell": NAME, "locked": BOOL,
        "home_facts": Nullable(Record({"mode": INT, "uid": INT, "gid": INT,
                                       "acl": ListOf(INT), "entries": Nullable(INT)}))})),
    "groups": MapOf(Record({"gid": INT, "members": NAMES})),
    "managed": NAMES, "acl_uid": Nullable(INT)})


class Entry(TypedDict):
    """One account of a batch, and what to do to it."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    fix_home: bool
    move_from: str
    set_shell: bool
    set_gid: bool
    lock: bool


class Part(TypedDict):
    create: list[Entry]
    delete: list[Entry]
    update: list[Entry]
    home_root: str
    acl_user: str | None


# ---- observe ------------------------------------------------------------------------------------

def _seat_number(name: str, prefix: str) -> int | None:
    m = re.fullmatch(re.escape(prefix) + r"([1-9][0-9]*)", name)
    return int(m.group(1)) if m else None


def _home_facts(path: str, skel: list[safefs.SkelEntry] | None) -> HomeFacts | None:
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


def observe(probe: Probe, host: HostSide) -> Facts:
    """Every account and group that touches the pool: by name, uid, gid or the inventory."""
    lo, hi = probe["first"], probe["last"]
    uids = range(probe["uid_base"] + lo, probe["uid_base"] + hi + 1)
    gids = range(probe["gid_base"] + lo, probe["gid_base"] + hi + 1)
    inv = host.inventory
    mine = inv.names(KIND) | inv.intents(KIND)
    db = accountsdb.read_databases()
    accounts: dict[str, AccountFacts] = {}
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
    groups: dict[str, GroupFacts] = {
        g["name"]: {"gid": g["gid"], "members": sorted(g["members"])}
        for g in db["groups"].values() if g["gid"] in gids or g["name"] in accounts}
    present = set(accounts)
    return {"accounts": accounts, "groups": groups,
            "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present)),
            "acl_uid": _uid_of(probe.get("acl_user"))}


def _uid_of(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


# ---- apply --------------------------------------------------------------------------------------

def delete_accounts(part: Part, host: HostSide) -> None:
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


def create_accounts(part: Part, host: HostSide) -> None:
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


def _report_refusals(outcome: accountsdb.Outcome, phase: str, host: HostSide) -> None:
    for refusal in outcome["errors"]:
        host.fail(phase, f"{refusal['subject']}: {refusal['message']}")


def _acl_uid(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise RuntimeError(f"home_acl user {name} does not exist on this host") from None


def fix_homes(part: Part, host: HostSide) -> None:
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

    def fix(a: Entry) -> None:
        host.checkpoint()
        if a["move_from"]:
            _move_home(a["move_from"], a["home"])
        root, name = os.path.dirname(a["home"]), os.path.basename(a["home"])
        done = safefs.ensure_home(root, name, a["uid"], a["gid"], HOME_MODE, acl)
        if "created" in done and a["name"] in created:
            with safefs.opened_home(a["home"], a["uid"], a["gid"]) as fd:
                safefs.fill_from_skel(fd, skel, a["uid"], a["gid"])

    with ThreadPoolExecutor(max_workers=HOME_WORKERS) as pool:
        # each home paired with its own error; not zip(strict=True), which Python 3.9 lacks
        for a, error in pool.map(lambda a: (a, _catching(fix)(a)), todo):
            if error:
                host.fail("account.homes", f"home of {a['name']}: {error}")
    host.say(f"prepared {len(todo)} homes")


def _move_home(old: str, new: str) -> None:
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


def _catching(fn: Callable[[Entry], None]) -> Callable[[Entry], str | None]:
    def call(arg: Entry) -> str | None:
        try:
            fn(arg)
            return None
        except Exception as exc:  # reported per home, the others go on
            return f"{type(exc).__name__}: {exc}"
    return call


def _existing(names: Iterable[str]) -> set[str]:
    return {n for n in names if _exists(n)}


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _modify(a: Entry) -> None:
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


def update_accounts(part: Part, host: HostSide) -> None:
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
