"""file, host half: what a managed file is on the host, and writing it with its `on_change`.

Before a changed file is replaced its `on_change` command is recorded as pending in the
inventory, and cleared only once it ran, so a run cut in between still runs it next time. A
command that fails stays pending with its error and fails only its own phase. The controller
half (`engine.kinds.file`) decides what to write.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import pwd
import tempfile
import time
from typing import TypedDict

from wodsync.agent.factspec import BOOL, DIGEST, INT, NAME, NAMES, TEXT, MapOf, Nullable, Record
from wodsync.agent.host import HostSide
from wodsync.agent.run import run

KIND = "file"


class Probe(TypedDict):
    paths: list[str]


class FileFacts(TypedDict):
    """One path as it is: `sha256` None when it is not a regular file (then `regular` is
    False and owner and group are empty)."""

    sha256: str | None
    mode: int
    owner: str
    group: str
    regular: bool


class Pending(TypedDict, total=False):
    argv: list[str]
    error: str
    at: str


class Facts(TypedDict):
    files: dict[str, FileFacts | None]
    managed: list[str]
    pending: dict[str, Pending]


FACTS = Record({
    "files": MapOf(Nullable(Record({"sha256": Nullable(DIGEST), "mode": INT, "owner": NAME,
                                    "group": NAME, "regular": BOOL}))),
    "managed": NAMES,
    "pending": MapOf(Record({}, {"argv": NAMES, "error": TEXT, "at": NAME}))})


class Write(TypedDict):
    path: str
    data: str                   # base64
    owner: str
    group: str
    mode: int
    on_change: list[str]


class Run(TypedDict):
    path: str
    argv: list[str]


class Part(TypedDict):
    """The files of a batch: to write, to delete, pending commands to run or to drop."""

    write: list[Write]
    delete: list[str]
    run: list[Run]
    drop: list[str]


def _digest(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _facts(path: str) -> FileFacts | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        return {"sha256": None, "mode": st.st_mode & 0o7777, "owner": "", "group": "",
                "regular": False}
    try:
        sha = _digest(path)
    except OSError:
        return None
    return {"sha256": sha, "mode": st.st_mode & 0o7777, "regular": True,
            "owner": _user_name(st.st_uid), "group": _group_name(st.st_gid)}


def observe(probe: Probe, host: HostSide) -> Facts:
    inv = host.inventory
    managed = inv.names(KIND) | inv.intents(KIND)
    paths = sorted(set(probe["paths"]) | managed)
    facts = {path: _facts(path) for path in paths}
    present = {p for p, f in facts.items() if f is not None}
    return {"files": facts, "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present)),
            "pending": inv.data.get("pending", {})}


def _write(f: Write) -> None:
    directory = os.path.dirname(f["path"])
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".wodsync-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64decode(f["data"]))
            os.fchmod(out.fileno(), f["mode"])
            os.fchown(out.fileno(), pwd.getpwnam(f["owner"]).pw_uid,
                      grp.getgrnam(f["group"]).gr_gid)
        os.replace(tmp, f["path"])
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_files(part: Part, host: HostSide) -> None:
    """Record the commands as pending, then replace the files, then forget deleted ones."""
    inv = host.inventory
    pending = inv.data.setdefault("pending", {})
    for key in part["drop"]:
        pending.pop(key, None)
    for f in part["write"]:
        if f["on_change"]:
            pending[f["path"]] = {"argv": f["on_change"]}
    for r in part["run"]:
        pending.setdefault(r["path"], {"argv": r["argv"]})["argv"] = r["argv"]
    inv.intend(KIND, [f["path"] for f in part["write"]])
    written = []
    for f in part["write"]:
        try:
            _write(f)
            written.append(f["path"])
        except (OSError, KeyError) as exc:
            pending.pop(f["path"], None)
            host.fail("file.write", f"{f['path']}: {exc}")
    for path in part["delete"]:
        if os.path.isfile(path) and not os.path.islink(path):
            os.unlink(path)
    inv.made(KIND, written)
    inv.forget(KIND, part["delete"])
    if written or part["delete"]:
        host.say(f"wrote {len(written)} files, removed {len(part['delete'])}")


def run_pending(part: Part, host: HostSide) -> None:
    """Each pending command once; a failure stays pending with its error, the rest go on."""
    inv = host.inventory
    pending = inv.data.setdefault("pending", {})
    ran = 0
    for argv_text in sorted({json.dumps(e["argv"]) for e in pending.values()}):
        argv = json.loads(argv_text)
        keys = [k for k, e in pending.items() if e["argv"] == argv]
        try:
            run(argv, timeout=600)
        except Exception as exc:
            for key in keys:
                pending[key]["error"] = str(exc)[-300:]
                pending[key]["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            host.fail("file.on_change", f"on_change {' '.join(argv)} failed: {exc}")
            continue
        for key in keys:
            pending.pop(key, None)
        ran += 1
    inv.save()
    if ran:
        host.say(f"ran {ran} on_change commands")


PHASES = ((10, "write", write_files), (12, "on_change", run_pending))
