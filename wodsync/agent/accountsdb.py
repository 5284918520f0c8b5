"""passwd, shadow, group and gshadow edited in bulk: one lock and one write per file per batch.

Why: `newusers` and `useradd` load the PAM stack and rewrite the four databases once per account;
2000 seats cost 10.5 s of a 13.3 s converge. This module does what shadow-utils does (take the
lock, read, edit, write a temporary file, keep a `-` backup, rename it into place), once for a
whole batch of creations, deletions, group member lists and password fields.

Lock: the one glibc's `lckpwdf()` takes and every shadow-utils tool takes first (a POSIX write
lock on `<root>/.pwd.lock`), waited for at most `timeout` seconds.

Lines: every line a change does not concern is written back byte for byte (order, comments, odd
spacing, a missing newline at the end). New entries go before the first NIS (`+`/`-`) entry, as
shadow-utils puts them.

Crash safety. Each file is replaced atomically, so a `kill -9` always leaves four complete files;
but four renames cannot be one. Measured with `pwck -r`/`grpck -r` (Debian 12, shadow 4.13):
a passwd entry without its shadow entry, a shadow entry without its passwd entry, a group entry
without its gshadow entry and the reverse are all errors; so are a passwd entry whose primary
gid has no group and a group member that is no account; a member listed in gshadow but not in
group (or the reverse) is a warning. Every order therefore has windows, and the edits are staged
so that the only ones ever on disk are entries that name lookups never read:

  1. group    members leaving their groups          window: gshadow lists members group does not
  2. gshadow  the same, and new groups' lines       window: gshadow lines without a group line
  3. group    new groups (empty member lists)       clean
  4. shadow   new accounts' lines, password fields  window: shadow lines without a passwd line
  5. passwd   new accounts in, deleted accounts out window: shadow lines without a passwd line
  6. shadow   deleted accounts' lines out           clean
  7. gshadow  members joining their groups          window: gshadow lists members group does not
  8. group    the same; deleted private groups out  window: gshadow lines without a group line
  9. gshadow  deleted groups' lines out             clean

Stages with nothing to do are skipped and consecutive writes of one file merged (a pure creation
is gshadow, group, shadow, passwd). So no passwd entry ever lacks its shadow entry or its group,
no group ever lists a missing account, and no group entry lacks its gshadow entry. Before the
first rename the accepted change is saved in `<root>/.accountsdb-journal`; it is removed after
the last. The next call (any call) finds it and applies that change again before its own: every
request is idempotent (a creation completes whatever parts of an account exist, a deletion
removes whatever parts remain), so the windows above are closed by the next call and a rerun of
the same request converges. Temporary files left by a killed run are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, TypedDict

FILES = ("passwd", "shadow", "group", "gshadow")
FIELDS = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
NUMERIC = {"passwd": (2, 3), "group": (2,)}  # uid, gid
LOCK_FILE = ".pwd.lock"
TEMP_PREFIX = ".accountsdb-tmp."
JOURNAL = ".accountsdb-journal"
DEFAULT_TIMEOUT = 15.0
MAX_ID = 4294967294  # (uid_t)-1 means "no change" to the kernel
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")
CACHE_TOOLS = (["nscd", "-i", "passwd"], ["nscd", "-i", "group"], ["sss_cache", "-E"])

# Edits applied per stage (file, kinds); see the module docstring for the reasons of this order.
STAGES = (
    ("group", ("shrink",)),
    ("gshadow", ("shrink", "put")),
    ("group", ("put",)),
    ("shadow", ("put", "fields")),
    ("passwd", ("drop", "put")),
    ("shadow", ("drop",)),
    ("gshadow", ("grow",)),
    ("group", ("grow", "drop")),
    ("gshadow", ("drop",)),
)

_HOOK: Callable[[str], None] | None = None  # tests: called after each durable step
_IN_PROCESS = threading.Lock()  # POSIX locks are per process: threads queue here first


class NewAccount(TypedDict):
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    gecos: str


class GroupMembers(TypedDict):
    """A pool's shared group: created with `gid` when missing, its member list set exactly."""

    name: str
    gid: int
    members: list[str]


class AccountsEdit(TypedDict, total=False):
    """Everything one batch does, under one lock and with one write per file."""

    create: list[NewAccount]
    delete: list[str]
    groups: list[GroupMembers]
    password_fields: dict[str, str]


class Refusal(TypedDict):
    subject: str
    message: str


class Outcome(TypedDict):
    """What a call did. `skipped`: accounts already there with the same uid, gid and home;
    `repaired`: such accounts that lacked a shadow, group or gshadow entry; `absent`: names
    to delete that were nowhere; `written`: the files replaced, in order; `recovered`: a change
    interrupted in an earlier run was completed first (see `notes`)."""

    created: list[str]
    skipped: list[str]
    repaired: list[str]
    deleted: list[str]
    absent: list[str]
    groups: list[str]
    passwords: list[str]
    errors: list[Refusal]
    notes: list[str]
    written: list[str]
    recovered: bool


class User(TypedDict):
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


class Group(TypedDict):
    name: str
    gid: int
    members: list[str]


class Databases(TypedDict):
    users: dict[str, User]
    passwords: dict[str, str]  # name -> "locked", "empty" or "set"
    groups: dict[str, Group]


class AccountsDbError(Exception):
    """The databases could not be read, locked or written; the message names the file."""


class LockTimeout(AccountsDbError):
    """Another process held the account databases' lock for longer than the timeout."""


# ---------------------------------------------------------------- public API


def apply(change: AccountsEdit, root: str = "/etc", timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """Apply a batch. Conflicts are refused per account or group (`errors`), never written;
    AccountsDbError (LockTimeout) when the files cannot be read, locked or written."""
    out = _outcome()
    with _Lock(root, timeout):
        _remove_leftovers(root)
        saved = _read_journal(root)
        if saved is not None:
            replay = _run(root, saved.get("change", {}), saved.get("gids", {}))
            _remove_journal(root)
            out["recovered"] = True
            out["written"].extend(replay["written"])
            out["notes"].append("completed a change interrupted in an earlier run: "
                                + _summary(replay))
        result = _run(root, change, {})
    result["recovered"] = out["recovered"]
    result["notes"] = out["notes"] + result["notes"]
    result["written"] = out["written"] + result["written"]
    if result["written"]:
        _invalidate_caches(root)
    return result


def create(accounts: list[NewAccount], root: str = "/etc",
           timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """Accounts locked (`!`), each with a private group of its name and gid."""
    return apply({"create": accounts}, root, timeout)


def delete(names: list[str], root: str = "/etc", timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """Accounts, their private groups (unless another account uses them) and memberships."""
    return apply({"delete": names}, root, timeout)


def set_members(group: str, gid: int, members: list[str], root: str = "/etc",
                timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    return apply({"groups": [{"name": group, "gid": gid, "members": members}]}, root, timeout)


def set_password_field(names: list[str], value: str, root: str = "/etc",
                       timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """shadow's password field as given (`!` locks; a crypt hash sets a password)."""
    return apply({"password_fields": {n: value for n in names}}, root, timeout)


def seat_account(user: str, uid: int) -> pwd.struct_passwd:
    """A seat's account as the system resolves it, refused when it is not the pool's uid the
    controller named, or root's: every seat operation acts as, or on, this uid."""
    entry = pwd.getpwnam(user)
    if entry.pw_uid != uid or entry.pw_uid == 0 or entry.pw_gid == 0:
        raise RuntimeError(f"{user} has uid {entry.pw_uid}, expected {uid}: not a seat of "
                           "this pool")
    return entry


def read_databases(root: str = "/etc") -> Databases:
    """Users, password states and groups as name lookups see them (first entry of a name wins).

    Read without the lock: files are only ever replaced whole, so each one read is complete.
    A system without /etc/shadow keeps passwords in passwd (`x` there then means no password:
    there is no shadow entry to hold it); reading it is no error, only editing it is."""
    tables = _read_tables(root, optional=("shadow", "gshadow"))
    passwd, shadow, group = tables["passwd"], tables["shadow"], tables["group"]
    assert passwd is not None and group is not None  # only shadow and gshadow may be missing
    users: dict[str, User] = {}
    for name, f in passwd.records.items():
        users[name] = {"name": name, "uid": int(f[2]), "gid": int(f[3]), "gecos": f[4],
                       "home": f[5], "shell": f[6]}
    if shadow is not None:
        passwords = {name: _password_state(f[1]) for name, f in shadow.records.items()}
    else:
        passwords = {name: "locked" if f[1] == "x" else _password_state(f[1])
                     for name, f in passwd.records.items()}
    groups: dict[str, Group] = {}
    for name, f in group.records.items():
        groups[name] = {"name": name, "gid": int(f[2]), "members": _members(f[3])}
    return {"users": users, "passwords": passwords, "groups": groups}


# ---------------------------------------------------------------- reading


class _Table:
    """One database file as read: its lines verbatim, and its well-formed entries by name."""

    def __init__(self, kind: str, path: str, data: bytes, st: os.stat_result) -> None:
        self.kind, self.path, self.stat = kind, path, st
        self.lines = _split_lines(data.decode("utf-8", "surrogateescape"))
        self.records: dict[str, list[str]] = {}
        self.bad: set[str] = set()  # names with a malformed or a repeated line
        for line in self.lines:
            if line[0] in "#+-" or not line.strip():
                continue
            fields = line.rstrip("\n").split(":")
            name = fields[0]
            if name in self.records or name in self.bad or not self._valid(fields):
                self.bad.add(name)
            else:
                self.records[name] = fields

    def _valid(self, fields: list[str]) -> bool:
        if len(fields) != FIELDS[self.kind]:
            return False
        return all(fields[i].isdigit() for i in NUMERIC.get(self.kind, ()))

    def has(self, name: str) -> bool:
        return name in self.records or name in self.bad


def _split_lines(text: str) -> list[str]:
    """Lines with their own terminators; only the last one may lack its newline."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [p + "\n" for p in parts]
    if last:
        lines.append(last)
    return lines


def _members(field: str) -> list[str]:
    return [m for m in field.split(",") if m]


def _password_state(field: str) -> str:
    if field == "":
        return "empty"
    return "locked" if field[0] in "!*" else "set"


def _read_tables(root: str, optional: tuple[str, ...] = ("gshadow",),
                 ) -> dict[str, _Table | None]:
    """The four files; a missing one is an error unless `optional` (then None): some systems
    have no gshadow, which an edit does not create."""
    tables: dict[str, _Table | None] = {}
    for kind in FILES:
        path = os.path.join(root, kind)
        try:
            with open(path, "rb") as f:
                tables[kind] = _Table(kind, path, f.read(), os.fstat(f.fileno()))
        except FileNotFoundError:
            if kind not in optional:
                raise AccountsDbError(f"{path} is missing") from None
            tables[kind] = None
        except OSError as e:
            raise AccountsDbError(f"cannot read {path}: {e.strerror}") from None
    return tables


# ---------------------------------------------------------------- planning


class _Edits:
    """What one file gets: names dropped, lines put (replacing namesakes), fields set per stage."""

    def __init__(self) -> None:
        self.drop: set[str] = set()
        self.put: dict[str, str] = {}
        self.fields: dict[str, dict[int, str]] = {}
        self.shrink: dict[str, dict[int, str]] = {}
        self.grow: dict[str, dict[int, str]] = {}


class _Planner:
    """Checks a change against the files read and turns what it accepts into edits.

    A model of accounts and groups is updated as requests are accepted, so later requests of the
    same change see earlier ones (deletions first, then creations, groups, password fields)."""

    def __init__(self, tables: dict[str, _Table | None], gids: dict[str, int]) -> None:
        self.t = tables
        self.gid_hints = gids
        self.edits = {kind: _Edits() for kind in FILES}
        self.out = _outcome()
        self.accepted: dict[str, Any] = {"create": [], "delete": [], "groups": [],
                                         "password_fields": {}}
        self.deleted_gids: dict[str, int] = {}
        self.users = {n: (int(f[2]), int(f[3]), f[5]) for n, f in self.passwd.records.items()}
        self.uid_owner: dict[int, str] = {}
        self.primary: dict[int, set[str]] = {}
        for name, (uid, gid, _home) in self.users.items():
            self.uid_owner.setdefault(uid, name)
            self.primary.setdefault(gid, set()).add(name)
        self.group_gid = {n: int(f[2]) for n, f in self.group.records.items()}
        self.gid_owner: dict[int, str] = {}
        for name, gid in self.group_gid.items():
            self.gid_owner.setdefault(gid, name)
        self.deleted: set[str] = set()
        self.deleted_groups: set[str] = set()
        self.final_members: dict[str, list[str]] = {}

    @property
    def passwd(self) -> _Table:
        return self.t["passwd"]  # type: ignore[return-value]

    @property
    def shadow(self) -> _Table:
        return self.t["shadow"]  # type: ignore[return-value]

    @property
    def group(self) -> _Table:
        return self.t["group"]  # type: ignore[return-value]

    def refuse(self, subject: str, message: str) -> None:
        self.out["errors"].append({"subject": str(subject), "message": message})

    def plan(self, change: Mapping[str, Any]) -> None:
        if not isinstance(change, dict):
            raise AccountsDbError(f"a change is a mapping, not {type(change).__name__}")
        for name in _list(change, "delete"):
            if name not in self.accepted["delete"]:
                self.delete(name)
        seen: set[str] = set()
        for account in _list(change, "create"):
            self.create(account, seen)
        seen = set()
        for group in _list(change, "groups"):
            self.set_group(group, seen)
        fields = change.get("password_fields") or {}
        if not isinstance(fields, dict):
            raise AccountsDbError("password_fields is a mapping of account name to field")
        for name, value in fields.items():
            self.set_password(name, value)
        self.memberships()

    # -- deletion

    def delete(self, name: str) -> None:
        if not isinstance(name, str) or not NAME.match(name):
            self.refuse(str(name), f"cannot delete {name!r}: not a valid account name")
            return
        found = self.passwd.has(name) or self.shadow.has(name)
        entry = self.users.pop(name, None)
        gid = entry[1] if entry else self.gid_hints.get(name)
        for kind in ("passwd", "shadow"):
            if self.t[kind].has(name):  # type: ignore[union-attr]
                self.edits[kind].drop.add(name)
        if entry:
            self.primary.get(entry[1], set()).discard(name)
            if self.uid_owner.get(entry[0]) == name:
                del self.uid_owner[entry[0]]
        found = self.delete_private_group(name, gid) or found
        self.deleted.add(name)
        self.accepted["delete"].append(name)
        if gid is not None:
            self.deleted_gids[name] = gid
        self.out["deleted" if found else "absent"].append(name)

    def delete_private_group(self, name: str, gid: int | None) -> bool:
        gshadow = self.t["gshadow"]
        orphan = gshadow is not None and gshadow.has(name) and not self.group.has(name)
        if orphan:  # a gshadow line whose group line is gone already: drop it with the rest
            self.edits["gshadow"].drop.add(name)
        if self.group_gid.get(name) is None:
            return orphan
        if gid is None:
            self.out["notes"].append(f"group {name} kept: account {name} is absent, so whether "
                                     "it was its private group is unknown")
            return orphan
        if self.group_gid[name] != gid:
            self.out["notes"].append(f"group {name} kept: it is not the primary group of "
                                     f"account {name}")
            return orphan
        others = sorted(self.primary.get(gid, set()) - {name})
        if others:
            self.out["notes"].append(f"group {name} kept: it is the primary group of "
                                     f"account {others[0]}")
            return orphan
        self.edits["group"].drop.add(name)
        if gshadow is not None and gshadow.has(name):
            self.edits["gshadow"].drop.add(name)
        del self.group_gid[name]
        if self.gid_owner.get(gid) == name:
            del self.gid_owner[gid]
        self.deleted_groups.add(name)
        return True

    # -- creation

    def create(self, account: object, seen: set[str]) -> None:
        problem = _account_problem(account)
        name = account.get("name", "?") if isinstance(account, dict) else "?"
        if problem is None:
            problem = self.conflict(account, seen)  # type: ignore[arg-type]
        seen.add(str(name))
        if problem is not None:
            self.refuse(str(name), problem)
            return
        a: NewAccount = account  # type: ignore[assignment]
        created, repaired = self.complete_parts(a)
        self.users[a["name"]] = (a["uid"], a["gid"], a["home"])
        self.uid_owner[a["uid"]] = a["name"]
        self.primary.setdefault(a["gid"], set()).add(a["name"])
        self.group_gid[a["name"]] = a["gid"]
        self.gid_owner[a["gid"]] = a["name"]
        self.accepted["create"].append(dict(a))
        self.out["created" if created else "repaired" if repaired else "skipped"].append(a["name"])

    def conflict(self, a: NewAccount, seen: set[str]) -> str | None:
        name, uid, gid = a["name"], a["uid"], a["gid"]
        if name in seen:
            return f"account {name} is listed twice in one change"
        if name in self.deleted:
            return f"account {name} is both deleted and created in one change"
        for table in (self.passwd, self.group):
            if name in table.bad:
                return f"{table.path} has a malformed or repeated entry named {name}"
        entry = self.users.get(name)
        if entry and entry != (uid, gid, a["home"]):
            return (f"account {name} exists with uid {entry[0]}, gid {entry[1]}, home "
                    f"{entry[2]} (wanted uid {uid}, gid {gid}, home {a['home']})")
        owner = self.uid_owner.get(uid)
        if owner is not None and owner != name:
            return f"uid {uid} is taken by account {owner}"
        current = self.group_gid.get(name)
        if current is not None and current != gid:
            return f"group {name} exists with gid {current} (wanted {gid})"
        owner = self.gid_owner.get(gid)
        if owner is not None and owner != name:
            return f"gid {gid} is taken by group {owner}"
        users = sorted(self.primary.get(gid, set()) - {name})
        if current is None and users:
            return f"gid {gid} is the primary group of account {users[0]}"
        return None

    def complete_parts(self, a: NewAccount) -> tuple[bool, bool]:
        """Add whichever of the four entries are missing: (account created, parts repaired)."""
        name, gshadow = a["name"], self.t["gshadow"]
        created = name not in self.users
        repaired = False
        if created:
            self.edits["passwd"].put[name] = (f"{name}:x:{a['uid']}:{a['gid']}:{a['gecos']}:"
                                              f"{a['home']}:{a['shell']}\n")
        if created or not self.shadow.has(name) or name in self.shadow.bad:
            days = int(time.time() // 86400)
            self.edits["shadow"].put[name] = f"{name}:!:{days}:0:99999:7:::\n"
            repaired = True
        if not self.group.has(name):
            self.edits["group"].put[name] = f"{name}:x:{a['gid']}:\n"
            repaired = True
        if gshadow is not None and (not gshadow.has(name) or not self.group.has(name)):
            self.edits["gshadow"].put[name] = f"{name}:!::\n"
            repaired = True
        return created, repaired

    # -- shared groups

    def set_group(self, group: object, seen: set[str]) -> None:
        problem = _group_problem(group)
        name = str(group.get("name", "?")) if isinstance(group, dict) else "?"
        if problem is None:
            problem = self.group_conflict(group, seen)  # type: ignore[arg-type]
        seen.add(name)
        if problem is not None:
            self.refuse(name, problem)
            return
        g: GroupMembers = group  # type: ignore[assignment]
        members = []
        for member in _unique(g["members"]):
            if member in self.users:
                members.append(member)
            else:
                self.refuse(name, f"group {name}: member {member} is not an account")
        gshadow = self.t["gshadow"]
        if name not in self.group_gid:
            self.edits["group"].put[name] = f"{name}:x:{g['gid']}:\n"
            self.group_gid[name] = g["gid"]
            self.gid_owner[g["gid"]] = name
        if gshadow is not None and (not gshadow.has(name) or not self.group.has(name)):
            self.edits["gshadow"].put[name] = f"{name}:!::\n"
        self.final_members[name] = members
        self.accepted["groups"].append({"name": name, "gid": g["gid"], "members": members})

    def group_conflict(self, g: GroupMembers, seen: set[str]) -> str | None:
        name, gid = g["name"], g["gid"]
        if name in seen:
            return f"group {name} is listed twice in one change"
        if name in self.deleted_groups:
            return f"group {name} is both deleted and set in one change"
        if name in self.group.bad:
            return f"{self.group.path} has a malformed or repeated entry named {name}"
        current = self.group_gid.get(name)
        if current is not None and current != gid:
            return f"group {name} exists with gid {current} (wanted {gid})"
        owner = self.gid_owner.get(gid)
        if current is None and owner is not None:
            return f"gid {gid} is taken by group {owner}"
        return None

    # -- password fields

    def set_password(self, name: object, value: object) -> None:
        if not isinstance(value, str) or ":" in value or "\n" in value:
            self.refuse(str(name), f"account {name}: a password field cannot be {value!r}")
            return
        if name not in self.users:
            self.refuse(str(name), f"account {name} does not exist")
            return
        name = str(name)
        put = self.edits["shadow"].put.get(name)
        if put is not None:
            current = put.split(":")[1]
        elif name in self.shadow.records:
            current = self.shadow.records[name][1]
        else:
            self.refuse(name, f"account {name} has no well-formed entry in {self.shadow.path}")
            return
        self.accepted["password_fields"][name] = value
        if current != value:
            self.edits["shadow"].fields[name] = {1: value}
            self.out["passwords"].append(name)

    # -- member lists

    def memberships(self) -> None:
        """Deleted accounts leave every list; shared groups get theirs exactly. Leaving happens
        in stages 1-2 (before the accounts go), joining in 7-8 (after they exist)."""
        changed: set[str] = set()
        for kind, index in (("group", 3), ("gshadow", 3)):
            table, edits = self.t[kind], self.edits[kind]
            if table is None:
                continue
            for name, fields in table.records.items():
                if name in edits.drop or name in edits.put:
                    continue
                if self.member_edits(kind, name, fields, index):
                    changed.add(name)
            for name in edits.put:
                final = self.final_members.get(name)
                if final:
                    edits.grow[name] = {index: ",".join(final)}
                changed.add(name)
        self.out["groups"].extend(n for n in self.final_members if n in changed)

    def member_edits(self, kind: str, name: str, fields: list[str], index: int) -> bool:
        current = _members(fields[index])
        final = self.final_members.get(name)
        if final is None:
            final = [m for m in current if m not in self.deleted]
        keep = set(final)
        shrunk = [m for m in current if m in keep]
        shrink: dict[int, str] = {}
        if shrunk != current:
            shrink[index] = ",".join(shrunk)
        if kind == "gshadow":
            admins = _members(fields[2])
            kept = [m for m in admins if m not in self.deleted]
            if kept != admins:
                shrink[2] = ",".join(kept)
        if shrink:
            self.edits[kind].shrink[name] = shrink
        if final != shrunk:
            self.edits[kind].grow[name] = {index: ",".join(final)}
        return bool(shrink) or final != shrunk


def _list(change: Mapping[str, Any], key: str) -> list[Any]:
    value = change.get(key) or []
    if not isinstance(value, list):
        raise AccountsDbError(f"{key} is a list, not {type(value).__name__}")
    return value


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _id_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def _account_problem(a: object) -> str | None:
    if not isinstance(a, dict):
        return f"an account is a mapping, not {type(a).__name__}"
    name = a.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        return f"{name!r} is not a valid account name"
    for key in ("uid", "gid"):
        if not _id_ok(a.get(key)):
            return f"account {name}: {key} {a.get(key)!r} is not a number in 0..{MAX_ID}"
    for key in ("gecos", "home", "shell"):
        value = a.get(key)
        if not isinstance(value, str) or ":" in value or "\n" in value:
            return f"account {name}: {key} {value!r} cannot be written in passwd"
        if key != "gecos" and not value.startswith("/"):
            return f"account {name}: {key} {value!r} is not an absolute path"
    return None


def _group_problem(g: object) -> str | None:
    if not isinstance(g, dict):
        return f"a group is a mapping, not {type(g).__name__}"
    name = g.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        return f"{name!r} is not a valid group name"
    if not _id_ok(g.get("gid")):
        return f"group {name}: gid {g.get('gid')!r} is not a number in 0..{MAX_ID}"
    members = g.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        return f"group {name}: members must be a list of account names"
    return None


# ---------------------------------------------------------------- staging and writing


def _transform(lines: list[str], drop: set[str], put: dict[str, str],
               fields: dict[str, dict[int, str]]) -> list[str]:
    """`lines` with `drop` removed, `put` in place of its first namesake (later ones removed) or
    before the first NIS entry, and `fields` set; every other line verbatim."""
    out: list[str] = []
    placed: set[str] = set()
    touched = drop | put.keys() | fields.keys()  # entry names: never '#', '+', '-' or blank
    for line in lines:
        name = line.partition(":")[0]
        if name not in touched:
            out.append(line)
        elif name in drop:
            continue
        elif name in put:
            if name not in placed:
                out.append(_set_fields(put[name], fields.get(name)))
                placed.add(name)
        else:
            out.append(_set_fields(line, fields.get(name)))
    new = [_set_fields(put[n], fields.get(n)) for n in put if n not in placed]
    if new:
        at = next((i for i, ln in enumerate(out) if ln[:1] in ("+", "-")), len(out))
        if at and not out[at - 1].endswith("\n"):
            out[at - 1] += "\n"
        out[at:at] = new
    return out


def _set_fields(line: str, sets: dict[int, str] | None) -> str:
    if not sets:
        return line
    body = line.rstrip("\n")
    parts = body.split(":")
    for index, value in sets.items():
        parts[index] = value
    return ":".join(parts) + line[len(body):]


def _stage_writes(tables: dict[str, _Table | None],
                  edits: dict[str, _Edits]) -> list[tuple[str, list[str]]]:
    """The file contents to write, in order: the stages that change something, with consecutive
    writes of one file merged (no other file changes in between, so no window is lost)."""
    contents = {kind: t.lines for kind, t in tables.items() if t is not None}
    writes: list[tuple[str, list[str]]] = []
    for kind, kinds in STAGES:
        if kind not in contents:
            continue
        e = edits[kind]
        fields: dict[str, dict[int, str]] = {}
        for key in ("fields", "shrink", "grow"):
            if key in kinds:
                fields.update(getattr(e, key))
        drop = e.drop if "drop" in kinds else set()
        put = e.put if "put" in kinds else {}
        if not (drop or put or fields):
            continue
        new = _transform(contents[kind], drop, put, fields)
        if new == contents[kind]:
            continue
        contents[kind] = new
        if writes and writes[-1][0] == kind:
            writes[-1] = (kind, new)
        else:
            writes.append((kind, new))
    return writes


def _step(label: str) -> None:
    if _HOOK is not None:
        _HOOK(label)


def _write_temp(root: str, data: bytes, uid: int, gid: int, mode: int,
                xattrs_from: str | None = None) -> str:
    """A complete, fsynced file in `root` with the given owner and mode; its path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=root)
    except OSError as e:
        raise AccountsDbError(f"cannot create a file in {root}: {e.strerror}") from None
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        if xattrs_from:
            _copy_xattrs(xattrs_from, fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        os.unlink(tmp)
        raise AccountsDbError(f"cannot write {tmp}: {e.strerror}") from None
    finally:
        os.close(fd)
    return tmp


def _copy_xattrs(source: str, fd: int) -> None:
    """Security labels (SELinux) and ACLs of the file being replaced, where the system has any."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(source)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(fd, name, os.getxattr(source, name))


def _fsync_dir(root: str) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(root: str, table: _Table) -> None:
    """`<file>-` becomes the version being replaced, as shadow-utils keeps it: a hard link to
    it (same inode, owner and mode), or a copy where links are impossible."""
    tmp = os.path.join(root, f"{TEMP_PREFIX}{os.getpid()}.backup")
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(table.path, tmp)
    except OSError:
        st = table.stat
        data = "".join(table.lines).encode("utf-8", "surrogateescape")
        tmp = _write_temp(root, data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                          table.path)
    os.replace(tmp, table.path + "-")


def _replace(root: str, table: _Table, lines: list[str], backup: bool) -> None:
    st = table.stat
    data = "".join(lines).encode("utf-8", "surrogateescape")
    tmp = _write_temp(root, data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), table.path)
    _step("temp:" + table.kind)
    try:
        if backup:
            _backup(root, table)
            _step("backup:" + table.kind)
        os.replace(tmp, table.path)
        _fsync_dir(root)
    except OSError as e:
        raise AccountsDbError(f"cannot replace {table.path}: {e.strerror}") from None
    _step("replace:" + table.kind)


def _run(root: str, change: Mapping[str, Any], gids: dict[str, int]) -> Outcome:
    """Read, plan and write one change (the caller holds the lock)."""
    tables = _read_tables(root)
    planner = _Planner(tables, gids)
    planner.plan(change)
    writes = _stage_writes(tables, planner.edits)
    out = planner.out
    if not writes:
        return out
    _write_journal(root, {"version": 1, "change": planner.accepted,
                          "gids": planner.deleted_gids})
    backed_up: set[str] = set()
    for kind, lines in writes:
        table = tables[kind]
        _replace(root, table, lines, kind not in backed_up)  # type: ignore[arg-type]
        backed_up.add(kind)
        out["written"].append(kind)
    _remove_journal(root)
    return out


# ---------------------------------------------------------------- journal and leftovers


def _write_journal(root: str, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, sort_keys=True).encode("utf-8")
    tmp = _write_temp(root, data, os.geteuid(), os.getegid(), 0o600)
    os.replace(tmp, os.path.join(root, JOURNAL))
    _fsync_dir(root)
    _step("journal")


def _read_journal(root: str) -> dict[str, Any] | None:
    path = os.path.join(root, JOURNAL)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AccountsDbError(f"cannot read the journal {path} of an interrupted change: {e}; "
                              "check the four files with pwck -r and grpck -r, then remove it"
                              ) from None
    if not isinstance(saved, dict) or saved.get("version") != 1:
        raise AccountsDbError(f"{path} is not a journal this version understands; check the "
                              "four files with pwck -r and grpck -r, then remove it")
    return saved


def _remove_journal(root: str) -> None:
    try:
        os.unlink(os.path.join(root, JOURNAL))
    except FileNotFoundError:
        return
    _fsync_dir(root)
    _step("journal-removed")


def _remove_leftovers(root: str) -> None:
    """Temporary files of a run that was killed (we hold the lock: none is in use)."""
    for name in os.listdir(root):
        if name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, name))


# ---------------------------------------------------------------- lock and caches


class _Lock:
    """The lock `lckpwdf()` takes (and shadow-utils, systemd-sysusers): a POSIX write lock on
    `<root>/.pwd.lock`, polled so that the wait is bounded without signals."""

    def __init__(self, root: str, timeout: float) -> None:
        self.path = os.path.join(root, LOCK_FILE)
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> _Lock:
        if not _IN_PROCESS.acquire(timeout=max(self.timeout, 0)):
            raise LockTimeout("account databases are locked by another thread of this process "
                              f"(waited {self.timeout:g} s)")
        try:
            self._open()
            self._wait()
        except BaseException:
            self._release()
            raise
        return self

    def _open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise AccountsDbError(f"cannot open the lock file {self.path}: {e.strerror}"
                                  ) from None

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise AccountsDbError(f"cannot lock {self.path}: {e.strerror}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(f"account databases are locked by another process "
                                  f"({_lock_holder(self.fd)} holds {self.path}; waited "
                                  f"{self.timeout:g} s)")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def _release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the POSIX lock
            self.fd = -1
        _IN_PROCESS.release()

    def __exit__(self, *exc: object) -> None:
        self._release()


def _lock_holder(fd: int) -> str:
    """Who holds the lock, from /proc/locks (the same inode and device), for the message."""
    st = os.fstat(fd)
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders: dict[tuple[int, int, int], str] = {}
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for parts in (line.split() for line in f):
                if len(parts) >= 6 and parts[1] != "->" and parts[5].count(":") == 2:
                    major, minor, ino = parts[5].split(":")
                    holders[(int(major, 16), int(minor, 16), int(ino))] = parts[4]
    except (OSError, ValueError):
        return "an unknown process"
    # overlay filesystems may report another device than stat(): fall back to the inode
    pid = holders.get(wanted) or next(
        (p for key, p in holders.items() if key[2] == st.st_ino), None)
    return f"pid {pid} ({_command(pid)})" if pid else "an unknown process"


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "gone"


def _invalidate_caches(root: str) -> None:
    """nscd and sssd may cache the old entries; tell them, when they are installed."""
    if os.path.realpath(root) != "/etc":
        return
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    for argv in CACHE_TOOLS:
        tool = shutil.which(argv[0], path=search)
        if tool is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([tool, *argv[1:]], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)


def _outcome() -> Outcome:
    return {"created": [], "skipped": [], "repaired": [], "deleted": [], "absent": [],
            "groups": [], "passwords": [], "errors": [], "notes": [], "written": [],
            "recovered": False}


def _summary(out: Outcome) -> str:
    counts = {"created": out["created"], "repaired": out["repaired"], "deleted": out["deleted"],
              "groups set": out["groups"], "password fields": out["passwords"]}
    return ", ".join(f"{k} {len(v)}" for k, v in counts.items() if v) or "nothing left to do"
