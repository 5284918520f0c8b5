"""Per-seat limits enforced by the kernel: the seat's cgroup and its disk quota.

Every process of a seat — its server, the kernels and terminals the server starts — runs in
the seat's cgroup `wodsync/<workshop>/<user>` (a folder per workshop, the seats of that
workshop below it), with the workshop's limits (`backends.SeatLimits`). The agent sets the
cgroup up at a CREATE, before the server starts, and records for the hub's spawner which
`cgroup.procs` files the server joins (`record`); a seat that changes workshops leaves its old
folder at that CREATE; a release empties and removes it. The back end is what the host has
(`backends.detect`): cgroup v2 (one unified tree) or v1 (a hierarchy per controller). Hosts run
by systemd also get slices (the `limits` kind). `disk` is a user quota where the home's
filesystem has them (`quota`).

`seats` calls `set_up` in a CREATE and `release` in every release: one call each.
"""

from __future__ import annotations

import os
import pwd
from typing import Any, Mapping, Optional

from wodsync.agent.limits import backends, cgroupfs, quota, record
from wodsync.agent.limits.backends import TOP, SeatLimits

CGROUP_ROOT = "/sys/fs/cgroup"

__all__ = ["CGROUP_ROOT", "SeatLimits", "release", "set_up"]


def _root(payload: Mapping[str, Any]) -> str:
    return str(payload.get("cgroup_root") or CGROUP_ROOT)


def set_up(payload: Mapping[str, Any]) -> list[str]:
    """The seat's cgroup for its workshop, with the workshop's limits (`payload["limits"]`;
    None or absent: no cgroup, and none left from before), and its disk quota. Returns notes
    (what could not be enforced here)."""
    user, workshop = payload["user"], payload["workshop"]
    limits: Optional[SeatLimits] = payload.get("limits")
    previous = record.read(payload["state_dir"], user) or {}
    notes = [f"not removed: {what}" for what in
             release(payload, keep=workshop if limits else None)]
    if not limits:
        return notes
    if previous.get("quota") and not limits.get("disk"):
        quota.set_limit(user, None, str(previous["quota"]))
    root = _root(payload)
    version = backends.detect(root)
    procs: list[str] = []
    if version is None:
        notes.append(f"limits of {workshop}: no writable cgroup tree at {root}: not enforced")
    else:
        procs = _cgroup(version, root, workshop, user, limits)
    mount = _disk(user, limits.get("disk"), notes, workshop)
    record.write(payload["state_dir"], user,
                 {"workshop": workshop, "procs": procs, "quota": mount})
    return notes


def _cgroup(version: str, root: str, workshop: str, user: str, limits: SeatLimits) -> list[str]:
    parts = [TOP, cgroupfs.check_name(workshop), cgroupfs.check_name(user)]
    procs = []
    for tree in backends.hierarchies(version, root):
        backends.pass_down(version, tree.base, [[], parts[:1], parts[:2]])
        with cgroupfs.opened(tree.base, parts, create=True) as fd:
            present = set(os.listdir(fd))
            for controller in tree.controllers:
                for name, value in backends.settings(version, controller, limits, present):
                    cgroupfs.write(fd, name, value)
        procs.append(os.path.join(tree.base, *parts, "cgroup.procs"))
    return procs


def _disk(user: str, size: Optional[int], notes: list[str], workshop: str) -> Optional[str]:
    """The seat's quota on its home's filesystem; None (and a note) where it has none."""
    if not size:
        return None
    home = pwd.getpwnam(user).pw_dir
    where = quota.state(home)
    if not where["on"]:
        notes.append(f"disk: {quota.human(size)} for {workshop}: {where['why']}")
        return None
    quota.set_limit(user, size, where["mount"])
    return where["mount"]


def release(payload: Mapping[str, Any], keep: Optional[str] = None) -> list[str]:
    """The seat's cgroups emptied and removed (every workshop's but `keep`'s), its quota
    lifted and its spawner record dropped. Returns what could not be removed."""
    user = cgroupfs.check_name(payload["user"])
    state_dir = payload["state_dir"]
    left: list[str] = []
    if keep is None:
        previous = record.read(state_dir, user) or {}
        record.drop(state_dir, user)
        if previous.get("quota"):
            quota.set_limit(user, None, str(previous["quota"]))
    root = _root(payload)
    version = backends.detect(root)
    if version is None:
        return left
    for tree in backends.hierarchies(version, root):
        for workshop in cgroupfs.children(tree.base, [TOP]):
            if workshop != keep and user in cgroupfs.children(tree.base, [TOP, workshop]):
                left += cgroupfs.remove(tree.base, [TOP, workshop, user])
                cgroupfs.prune(tree.base, [TOP, workshop])
    return left
