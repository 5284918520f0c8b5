"""The cgroup back ends: what a seat's limits become in cgroup v1 and in cgroup v2, and which
of them a host has.

cgroup v1 has one hierarchy per controller (`<root>/memory`, `<root>/cpu`, `<root>/cpuacct`,
`<root>/pids`), each with the seat's folder `wodsync/<workshop>/<user>`; cgroup v2 has one
unified tree, whose parents must pass the controllers down (`cgroup.subtree_control`). Both are
plain data here — which folder, which file, which value — written by `agent.limits` through
`cgroupfs`.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional, TypedDict

from wodsync.agent.limits.cgroupfs import opened, read, write

TOP = "wodsync"
CPU_PERIOD = 100_000  # µs: the quota of `cpu` cores is cpu × this period
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")


class SeatLimits(TypedDict, total=False):
    """A seat's limits as the host applies them: bytes, cores, tasks (absent: no limit)."""

    memory_high: int
    memory_max: int
    cpu: float
    tasks: int
    disk: int


class Hierarchy(NamedTuple):
    """One tree a seat has a folder in: its mount and the controllers it carries."""

    base: str
    controllers: tuple[str, ...]


Setting = tuple[str, str]


def detect(root: str) -> Optional[str]:
    """`v2` when `root` is a unified cgroup tree, `v1` when it holds a writable memory
    hierarchy, else None (no cgroup this agent can manage)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.access(os.path.join(root, "memory", "memory.limit_in_bytes"), os.W_OK):
        return "v1"
    return None


def hierarchies(version: str, root: str) -> list[Hierarchy]:
    if version == "v2":
        return [Hierarchy(root, V2_CONTROLLERS)]
    return [Hierarchy(os.path.join(root, name), (name,)) for name in V1_CONTROLLERS
            if os.path.isdir(os.path.join(root, name))]


def settings(version: str, controller: str, limits: SeatLimits,
             present: set[str]) -> list[Setting]:
    """The interface files of a seat's folder for `controller`, in the order they must be
    written; `present` names the folder's files (v1's memsw exists only with swap accounting)."""
    if version == "v2":
        return _v2(controller, limits)
    return [s for s in _v1(controller, limits) if s[0] in present]


def _v1(controller: str, limits: SeatLimits) -> list[Setting]:
    if controller == "memory":
        high, top = limits.get("memory_high"), limits.get("memory_max")
        # memsw (memory + swap) must never be below the memory limit: lift it first.
        return [("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", str(top) if top else "-1"),
                ("memory.memsw.limit_in_bytes", str(top) if top else "-1"),
                ("memory.soft_limit_in_bytes", str(high) if high else "-1")]
    if controller == "cpu":
        return [("cpu.cfs_period_us", str(CPU_PERIOD)), ("cpu.cfs_quota_us", _quota(limits))]
    if controller == "pids":
        return [("pids.max", str(limits.get("tasks") or "max"))]
    return []  # cpuacct: the folder only, for the seat's CPU accounting


def _v2(controller: str, limits: SeatLimits) -> list[Setting]:
    if controller == "memory":
        return [("memory.high", str(limits.get("memory_high") or "max")),
                ("memory.max", str(limits.get("memory_max") or "max"))]
    if controller == "cpu":
        quota = _quota(limits)
        return [("cpu.max", f"{'max' if quota == '-1' else quota} {CPU_PERIOD}")]
    if controller == "pids":
        return [("pids.max", str(limits.get("tasks") or "max"))]
    return []


def _quota(limits: SeatLimits) -> str:
    cpu = limits.get("cpu")
    return str(max(1000, int(cpu * CPU_PERIOD))) if cpu else "-1"


def pass_down(version: str, base: str, parents: list[list[str]]) -> None:
    """cgroup v2: the root, `wodsync` and the workshop's folder enable the controllers their
    children use — those the root has (a child has what its parent passed down)."""
    if version != "v2":
        return
    with opened(base, []) as fd:
        have = set(read(fd, "cgroup.controllers").split())
    wanted = " ".join("+" + c for c in V2_CONTROLLERS if c in have)
    if not wanted:
        return
    for parts in parents:
        with opened(base, parts, create=True) as fd:
            write(fd, "cgroup.subtree_control", wanted)
