"""file, controller half: system files rendered from `templates/` (sysctl.d, limits.d,
/etc/skel, the hub's configuration and unit), with the command each one runs after it changed
(`on_change`). The host half is `agent.kinds.file`.

A file's content is compared by digest; the plan carries the digest, never the content (the hub
configuration holds its token). Before a changed file is replaced its `on_change` command is
recorded as pending in the inventory, and cleared only once it ran, so a run cut in between
still runs it next time. A command that fails stays pending with its error and fails only its
own phase: the rest of the batch converges, and the next plan retries the command as the
catalog defines it then — or drops it when its file is no longer managed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wodsync.agent.kinds.file import KIND, Facts, FileFacts, Part, Pending, Probe
from wodsync.engine.change import Action, Change
from wodsync.engine.render_system import ManagedFile, system_files

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext


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
    return system_files(ctx)


def probe(want: dict[str, ManagedFile]) -> Probe:
    return {"paths": sorted(want)}


def _reasons(f: ManagedFile, have: FileFacts) -> list[str]:
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


def _pending_path(key: str, pending: dict[str, Pending],
                  want: dict[str, ManagedFile]) -> str | None:
    """The managed file a pending command belongs to (legacy entries: by their argv)."""
    if not key.startswith("argv:"):
        return key if key in want else None
    argv = pending[key].get("argv")
    return next((p for p, f in sorted(want.items()) if list(f.on_change) == argv), None)


def _pending(plan: PlanContext, want: dict[str, ManagedFile],
             pending: dict[str, Pending]) -> None:
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
    facts: Facts = plan.facts[KIND]
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


def batch(want: dict[str, ManagedFile], changes: list[Change]) -> Part:
    part: Part = {"write": [], "delete": [], "run": [], "drop": []}
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
