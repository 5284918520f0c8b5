"""The host side of wodsync: sent as source to the host's python3, standard library only.

One invocation is one round trip. The controller sends a JSON line `{"op": ..., "payload": ...}`
on stdin; `observe` returns the facts the plan needs, `apply` executes a batch of actions with
bulk tools (`newusers`, `chpasswd -e`, `gpasswd -M`) and reports what it did. Every argument
travels as data (argv lists and stdin), never through a shell line. Nothing here deletes a home
that holds files, and only names listed in wodsync's inventory are ever removed.
"""

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # on the host, agent_hub.py is loaded into the same namespace first
    from wodsync.engine.agent_hub import (
        apply_hub,
        install_packages,
        observe_hub,
        retire_hub_users,
    )

INVENTORY = "inventory.json"
HOME_WORKERS = 4


def _read_shadow():
    locked = {}
    try:
        with open("/etc/shadow", encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) > 1:
                    locked[parts[0]] = parts[1].startswith(("!", "*")) or parts[1] == ""
    except OSError:
        pass
    return locked


def _in_pool(name, uid, pool):
    if re.fullmatch(re.escape(pool["prefix"]) + r"[0-9]+", name):
        return True
    return pool["uid_base"] + pool["first"] <= uid <= pool["uid_base"] + pool["last"]


def _seat_of(name, pool):
    """The seat a name stands for when it is one of the pool's desired accounts, else None."""
    m = re.fullmatch(re.escape(pool["prefix"]) + r"([1-9][0-9]*)", name)
    return int(m.group(1)) if m and pool["first"] <= int(m.group(1)) <= pool["last"] else None


def _own_entries(path):
    """Entries of a home that are not untouched copies of /etc/skel: what the student made."""
    own = []
    for name in os.listdir(path):
        mine, skel = os.path.join(path, name), os.path.join("/etc/skel", name)
        if not (os.path.isfile(skel) and os.path.isfile(mine) and not os.path.islink(mine)
                and _digest(skel) == _digest(mine)):
            own.append(name)
    return own


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _home_facts(path, count):
    """Owner and mode; the student's own entries only when asked (homes about to go): reading
    every home's files on each observe would cost more than everything else together."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    try:
        entries = len(_own_entries(path)) if count else None
    except OSError:
        entries = 0
    return {"mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid,
            "entries": entries}


def _file_facts(path):
    try:
        st = os.lstat(path)
        digest = _digest(path)
    except OSError:
        return None
    return {"sha256": digest, "mode": st.st_mode & 0o7777,
            "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _sysctl_path(key):
    return "/proc/sys/" + key.replace(".", "/")


def _read_sysctl(key):
    try:
        with open(_sysctl_path(key), encoding="utf-8") as f:
            return " ".join(f.read().split())
    except OSError:
        return None


def _inventory(state_dir):
    try:
        with open(os.path.join(state_dir, INVENTORY), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"accounts": [], "files": [], "pending": [], "hub_users": [], "hub_groups": []}


def observe(p):
    """Accounts of the pool's range plus every account the inventory says wodsync made."""
    pool = p["pool"]
    locked = _read_shadow()
    inventory = _inventory(p["state_dir"])
    managed = set(inventory.get("accounts", []))
    accounts = {}
    for entry in pwd.getpwall():
        if entry.pw_name in managed or _in_pool(entry.pw_name, entry.pw_uid, pool):
            accounts[entry.pw_name] = {
                "uid": entry.pw_uid, "gid": entry.pw_gid, "home": entry.pw_dir,
                "shell": entry.pw_shell, "locked": locked.get(entry.pw_name, True),
                "home_facts": _home_facts(entry.pw_dir,
                                          _seat_of(entry.pw_name, pool) is None)}
    members = []
    if pool.get("group"):
        try:
            members = sorted(grp.getgrnam(pool["group"]).gr_mem)
        except KeyError:
            members = None
    paths = sorted(set(p["files"]) | set(inventory.get("files", [])))
    return {"accounts": accounts, "group_members": members,
            "files": {path: _file_facts(path) for path in paths},
            "sysctl": {k: _read_sysctl(k) for k in p["sysctl"]},
            "hub": observe_hub(p["hub"]) if p.get("hub") else None,
            "inventory": inventory}


def _run(argv, stdin=None, env=None):
    """Run an argv (never a shell line); a failure raises with the tool's own last words."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-800:]}")
    return done


def _create_accounts(items, log):
    if not items:
        return
    if not os.path.isdir(items[0]["home_root"]):
        os.makedirs(items[0]["home_root"], mode=0o755, exist_ok=True)
    # An empty password makes newusers leave the account locked ('!') without hashing; its
    # PAM build then exits 1 with a warning per account, so success is checked on the result.
    lines = "".join(f"{a['name']}::{a['uid']}:{a['gid']}:wodsync seat:{a['home']}:"
                    f"{a['shell']}\n" for a in items)
    done = subprocess.run(["newusers"], input=lines, capture_output=True, text=True)
    missing = [a["name"] for a in items if not _exists(a["name"], a["uid"])]
    if missing:
        raise RuntimeError(f"newusers exited {done.returncode}; {len(missing)} accounts "
                           f"missing (first {missing[0]}): {done.stderr.strip()[-300:]}")
    _lock([a["name"] for a in items], [])
    log.append(f"created {len(items)} accounts")


def _exists(name, uid):
    try:
        return pwd.getpwnam(name).pw_uid == uid
    except KeyError:
        return False


def _skel():
    """/etc/skel read once per batch: (relative path, mode, data or None for a folder)."""
    found = []
    for root, dirs, files in os.walk("/etc/skel"):
        rel = os.path.relpath(root, "/etc/skel")
        for name in sorted(dirs):
            found.append((os.path.normpath(os.path.join(rel, name)),
                          os.stat(os.path.join(root, name)).st_mode & 0o7777, None))
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    found.append((os.path.normpath(os.path.join(rel, name)),
                                  os.stat(path).st_mode & 0o7777, f.read()))
    return found


def _fill_from_skel(home, uid, gid, skel):
    """A new seat starts with the host's /etc/skel, as `useradd -m` would give it."""
    if os.listdir(home):
        return
    for rel, mode, data in skel:
        target = os.path.join(home, rel)
        if data is None:
            os.mkdir(target, mode)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        os.lchown(target, uid, gid)


def _fix_homes(items, acl_user, fresh=()):
    """Homes owned by their seat, mode 0700, new ones filled from /etc/skel. A few threads:
    creating thousands of small files is bound by the filesystem, not by Python."""
    skel = _skel() if fresh else []

    def fix(a):
        home = a["home"]
        os.makedirs(home, exist_ok=True)
        if a["name"] in fresh:
            _fill_from_skel(home, a["uid"], a["gid"], skel)
        os.chown(home, a["uid"], a["gid"])
        os.chmod(home, 0o700)
        if acl_user:
            _run(["setfacl", "-m", f"u:{acl_user}:rwx", home])

    with ThreadPoolExecutor(max_workers=HOME_WORKERS) as pool:
        list(pool.map(fix, items))


def _lock(names, log):
    if names:
        _run(["chpasswd", "-e"], "".join(f"{n}:!\n" for n in names))
        log.append(f"locked {len(names)} passwords")


def _change_accounts(items):
    for a in items:
        if "shell" in a:
            _run(["usermod", "-s", a["shell"], a["name"]])


def _kill_processes(uid):
    """A seat being removed may still run things (a terminal, a kernel): userdel refuses then."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                real = next(ln for ln in f if ln.startswith("Uid:")).split()[1]
            if int(real) == uid:
                os.kill(int(entry), 9)
        except (OSError, StopIteration, ValueError):
            pass


def _delete_accounts(items, log):
    for a in items:
        try:
            _kill_processes(pwd.getpwnam(a["name"]).pw_uid)
        except KeyError:
            continue
        _run(["userdel", a["name"]])
        home = a["home"]
        if os.path.isdir(home) and not os.path.islink(home) and not _own_entries(home):
            for name in os.listdir(home):
                os.unlink(os.path.join(home, name))
            os.rmdir(home)
    if items:
        log.append(f"deleted {len(items)} accounts (homes with files kept)")


def _group(pool, members, log):
    name = pool.get("group")
    if not name or members is None:
        return
    try:
        grp.getgrnam(name)
    except KeyError:
        _run(["groupadd", name])
    _run(["gpasswd", "-M", ",".join(members), name])
    log.append(f"group {name}: {len(members)} members")


def _write_file(f):
    directory = os.path.dirname(f["path"])
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".wodsync-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bytes.fromhex(f["data"]))
        os.chmod(tmp, int(f["mode"], 8))
        shutil.chown(tmp, f["owner"], f["group"])
        os.replace(tmp, f["path"])
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _files(p, inventory, log):
    """Write files, then run their on_change commands once each.

    The commands are recorded as pending in the inventory before the first file is replaced
    and cleared only after they ran, so a run cut short between the two still runs them next
    time, although the files themselves will then look converged.
    """
    commands = list(p["commands"])
    for f in p["files"]:
        if f["on_change"] and f["on_change"] not in commands:
            commands.append(f["on_change"])
    inventory["pending"] = commands
    _save_inventory(p["state_dir"], inventory)
    for f in p["files"]:
        _write_file(f)
    for path in p["delete_files"]:
        if os.path.isfile(path) and not os.path.islink(path):
            os.unlink(path)
    while inventory["pending"]:
        _run(inventory["pending"][0])
        inventory["pending"] = inventory["pending"][1:]
        _save_inventory(p["state_dir"], inventory)
    if p["files"] or p["delete_files"] or commands:
        log.append(f"wrote {len(p['files'])} files, removed {len(p['delete_files'])}, "
                   f"ran {len(commands)} commands")


def _sysctl(values, log):
    for key, value in values.items():
        with open(_sysctl_path(key), "w", encoding="utf-8") as f:
            f.write(str(value))
    if values:
        log.append(f"set {len(values)} sysctl values")


def _save_inventory(state_dir, inventory):
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, INVENTORY)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(inventory, f, sort_keys=True)
    os.replace(path + ".tmp", path)


def apply(p):
    """Run one batch; the inventory is saved first so an interrupted run still knows its own."""
    log = []
    inventory = _inventory(p["state_dir"])
    inventory["accounts"] = sorted(set(inventory.get("accounts", []))
                                   | {a["name"] for a in p["create"]})
    inventory["files"] = sorted(set(inventory.get("files", [])) | {f["path"] for f in p["files"]})
    _save_inventory(p["state_dir"], inventory)
    timings = {}

    def phase(name, fn, *args):
        start = time.monotonic()
        fn(*args)
        timings[name] = round(time.monotonic() - start, 3)

    # System files first: new homes are filled from /etc/skel, which may be one of them.
    phase("files", _files, p, inventory, log)
    phase("sysctl", _sysctl, p["sysctl"], log)
    phase("accounts", _create_accounts, p["create"], log)
    phase("homes", _fix_homes, p["create"] + p["homes"], p.get("home_acl"),
          {a["name"] for a in p["create"]})
    phase("account changes", _change_accounts, p["change"])
    phase("locks", _lock, p["lock"], log)
    if p.get("hub"):
        phase("hub users retired", retire_hub_users, p["hub"], inventory, log)
    phase("deletions", _delete_accounts, p["delete"], log)
    phase("group", _group, p["pool"], p["group_members"], log)
    if p.get("hub"):
        phase("packages", install_packages, p["hub"], log)
        phase("hub", apply_hub, p["hub"], inventory, log)
    gone = {a["name"] for a in p["delete"]}
    inventory["accounts"] = sorted(set(inventory["accounts"]) - gone)
    inventory["files"] = sorted(set(inventory["files"]) - set(p["delete_files"]))
    _save_inventory(p["state_dir"], inventory)
    return {"log": log, "timings": {k: v for k, v in timings.items() if v >= 0.01}}


def _safe_target(base, rel):
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"refusing content path {rel!r}")
    return os.path.join(base, *parts)


def claim_seat(p):
    """Give a seat to a student: its password, the workshop's content in its home, and a mark
    in the inventory so later plans leave the password alone. Files already in the home are
    kept (never overwritten: the student may have changed them)."""
    user = pwd.getpwnam(p["user"])
    inventory = _inventory(p["state_dir"])
    inventory.setdefault("seats_in_use", {})[p["user"]] = {"workshop": p["workshop"]}
    _save_inventory(p["state_dir"], inventory)
    _run(["chpasswd"], f"{p['user']}:{p['password']}\n")
    base = os.path.join(user.pw_dir, p["workshop"])
    written = 0
    for f in p["files"]:
        target = _safe_target(base, f["path"])
        if os.path.lexists(target):
            continue
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            os.makedirs(directory)
            for d in _parents_between(user.pw_dir, directory):
                os.lchown(d, user.pw_uid, user.pw_gid)
        with open(target, "wb") as out:
            out.write(bytes.fromhex(f["data"]))
        os.chmod(target, int(f["mode"], 8))
        os.lchown(target, user.pw_uid, user.pw_gid)
        written += 1
    return {"home": user.pw_dir, "written": written, "kept": len(p["files"]) - written}


def _parents_between(home, directory):
    found = []
    while directory != home and directory.startswith(home + "/"):
        found.append(directory)
        directory = os.path.dirname(directory)
    return found


def main():
    os.umask(0o022)  # what wodsync installs for students must be readable by them
    request = json.loads(sys.stdin.readline())
    try:
        result = {"ok": True, "result": globals()[request["op"]](request["payload"])}
    except Exception as exc:  # reported to the controller as data, with the host's message
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
