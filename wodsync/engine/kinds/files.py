"""file: system files rendered from `templates/` (sysctl.d, limits.d, /etc/skel, the hub's
configuration and unit), with the command each one runs after it changed (`on_change`).

A file's content is compared by digest; the plan carries the digest, never the content (the hub
configuration holds its token). Before a changed file is replaced its `on_change` command is
recorded as pending in the inventory, and cleared only once it ran, so a run cut in between
still runs it next time. A command that fails stays pending with its error and fails only its
own phase: the rest of the batch converges, and the next plan retries the command as the
catalog defines it then — or drops it when its file is no longer managed.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wodsync.agent.run import run
from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "file"


@dataclass(frozen=True)
class ManagedFile:
    """A desired file (controller side; `data` holds its rendered bytes)."""

    path: str
    data: bytes = field(repr=False)
    owner: str
    group: str
    mode: int
    on_change: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class FileChange:
    path: str
    sha256: str = ""
    mode: int = 0
    owner: str = ""
    group: str = ""
    on_change: list[str] = field(default_factory=list)
    run_pending: bool = False      # the content is right; only its command is left to run
    drop_pending: bool = False     # a pending command whose file is no longer managed


DATA = FileChange


def desired(ctx: DesiredContext) -> dict[str, ManagedFile]:
    """Always a mapping, empty too: files the inventory lists may have to go."""
    from wodsync.engine.render_system import system_files

    return system_files(ctx)


def probe(want: dict[str, ManagedFile]) -> dict[str, Any]:
    return {"paths": sorted(want)}


def _digest(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _facts(path):
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
            "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    inv = host.inventory
    managed = inv.names(KIND) | inv.intents(KIND)
    paths = sorted(set(probe["paths"]) | managed)
    facts = {path: _facts(path) for path in paths}
    present = {p for p, f in facts.items() if f is not None}
    return {"files": facts, "managed": sorted(inv.names(KIND) | (inv.intents(KIND) & present)),
            "pending": inv.data.get("pending", {})}


def _reasons(f: ManagedFile, have: dict[str, Any]) -> list[str]:
    reasons = []
    if not have.get("regular", True):
        reasons.append("not a regular file")
    elif have["sha256"] != f.sha256:
        reasons.append("content differs")
    if have["mode"] != f.mode:
        reasons.append(f"mode {have['mode']:04o} → {f.mode:04o}")
    if (have["owner"], have["group"]) != (f.owner, f.group):
        reasons.append(f"owner {have['owner']}:{have['group']} → {f.owner}:{f.group}")
    return reasons


def _change(f: ManagedFile, **extra: Any) -> FileChange:
    return FileChange(f.path, f.sha256, f.mode, f.owner, f.group, list(f.on_change), **extra)


def _pending_path(key: str, pending: dict[str, Any], want: dict[str, ManagedFile]) -> str | None:
    """The managed file a pending command belongs to (legacy entries: by their argv)."""
    if not key.startswith("argv:"):
        return key if key in want else None
    argv = pending[key].get("argv")
    return next((p for p, f in sorted(want.items()) if list(f.on_change) == argv), None)


def _pending(plan: PlanContext, want: dict[str, ManagedFile], pending: dict[str, Any]) -> None:
    changing = plan.names(KIND)
    for key, entry in sorted(pending.items()):
        path = _pending_path(key, pending, want)
        failed = f", failed: {entry['error']}" if entry.get("error") else ""
        if path is None or not want[path].on_change:
            plan.add(Action.UPDATE, KIND, key, "pending on_change dropped: no longer "
                     "declared", FileChange(key, drop_pending=True))
        elif path not in changing:
            changing.add(path)
            plan.add(Action.UPDATE, KIND, path, f"on_change {' '.join(want[path].on_change)} "
                     f"left pending{failed}", _change(want[path], run_pending=True))


def diff(plan: PlanContext) -> None:
    want: dict[str, ManagedFile] = plan.want[KIND]
    facts = plan.facts[KIND]
    for path, f in sorted(want.items()):
        have = facts["files"].get(path)
        if have is None:
            plan.add(Action.CREATE, KIND, path, f"mode {f.mode:04o}", _change(f))
        elif reasons := _reasons(f, have):
            plan.add(Action.UPDATE, KIND, path, "; ".join(reasons), _change(f))
        else:
            plan.noop(KIND, path, f"is up to date (sha256 {f.sha256[:12]})")
    for path in facts["managed"]:
        if path not in want and facts["files"].get(path) is not None:
            plan.add(Action.DELETE, KIND, path, "no longer declared", FileChange(path))
    _pending(plan, want, facts["pending"])


def batch(want: dict[str, ManagedFile], changes: list[Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"write": [], "delete": [], "run": [], "drop": []}
    for c in changes:
        d: FileChange = c.data
        if d.drop_pending:
            part["drop"].append(d.path)
        elif c.action == Action.DELETE:
            part["delete"].append(d.path)
        elif d.run_pending:
            part["run"].append({"path": d.path, "argv": d.on_change})
        else:
            f = want[d.path]
            part["write"].append({"path": f.path, "data": base64.b64encode(f.data).decode(),
                                  "owner": f.owner, "group": f.group, "mode": f.mode,
                                  "on_change": list(f.on_change)})
    return part


def _write(f):
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


def write_files(part, host):
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


def run_pending(part, host):
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
