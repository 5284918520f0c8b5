"""sysctl: kernel values kept live on the host (`sysctl: {key: value}` in the host file).

WoD raises `kernel.pid_max`, `vm.max_map_count` and friends for thousands of students. Values
are read from and written to `/proc/sys` directly. A key the kernel does not have is a plan
error (the host fails: the catalog asks for something this kernel cannot give); a value the
kernel refuses fails that key alone, named, and the rest of the batch still applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "sysctl"


@dataclass(frozen=True)
class SysctlChange:
    key: str
    value: str


DATA = SysctlChange


def desired(ctx: DesiredContext) -> dict[str, str] | None:
    return {k: str(v) for k, v in ctx.host.sysctl.items()} or None


def probe(want: dict[str, str]) -> dict[str, Any]:
    return {"keys": sorted(want)}


def _path(key):
    return "/proc/sys/" + key.replace(".", "/")


def _read(key):
    try:
        with open(_path(key), encoding="utf-8") as f:
            return " ".join(f.read().split())
    except OSError:
        return None


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    return {"values": {key: _read(key) for key in probe["keys"]}}


def diff(plan: PlanContext) -> None:
    have = plan.facts[KIND]["values"]
    for key, value in sorted(plan.want[KIND].items()):
        current = have.get(key)
        if current is None:
            plan.errors.append(f"sysctl {key} does not exist on this host's kernel")
        elif current != " ".join(value.split()):
            plan.add(Action.UPDATE, KIND, key, f"{current} → {value}", SysctlChange(key, value))
        else:
            plan.noop(KIND, key, f"is {value}")


def batch(want: dict[str, str], changes: list[Any]) -> dict[str, Any]:
    return {"values": {c.data.key: c.data.value for c in changes}}


def write_values(part, host):
    written = 0
    for key, value in sorted(part["values"].items()):
        try:
            with open(_path(key), "w", encoding="utf-8") as f:
                f.write(value)
            written += 1
        except OSError as exc:
            host.fail("sysctl.write", f"sysctl {key} = {value!r} refused by the kernel: "
                                      f"{exc.strerror or exc}")
    if written:
        host.say(f"set {written} sysctl values")


PHASES = ((20, "write", write_values),)
