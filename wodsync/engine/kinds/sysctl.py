"""sysctl, controller half: kernel values kept live on the host (`sysctl: {key: value}` in the
host file); the host half is `agent.kinds.sysctl`.

WoD raises `kernel.pid_max`, `vm.max_map_count` and friends for thousands of students. Values
are read from and written to `/proc/sys` directly. A key the kernel does not have is a plan
error (the host fails: the catalog asks for something this kernel cannot give); a value the
kernel refuses fails that key alone, named, and the rest of the batch still applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wodsync.agent.kinds.sysctl import KIND, Facts, Part, Probe
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

@dataclass(frozen=True)
class SysctlChange:
    key: str
    value: str


DATA = SysctlChange


def desired(ctx: DesiredContext) -> dict[str, str] | None:
    return {k: str(v) for k, v in ctx.host.sysctl.items()} or None


def probe(want: dict[str, str]) -> Probe:
    return {"keys": sorted(want)}


def diff(plan: PlanContext) -> None:
    facts: Facts = plan.facts[KIND]
    have = facts["values"]
    for key, value in sorted(plan.want[KIND].items()):
        current = have.get(key)
        if current is None:
            plan.errors.append(f"sysctl {key} does not exist on this host's kernel")
        elif current != " ".join(value.split()):
            plan.add(Action.UPDATE, KIND, key, f"{current} → {value}", SysctlChange(key, value))
        else:
            plan.noop(KIND, key, f"is {value}")


def batch(want: dict[str, str], changes: list[Change]) -> Part:
    return {"values": {c.data.key: c.data.value for c in changes}}
