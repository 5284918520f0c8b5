"""kernel, controller half: the Jupyter kernels the workshops served here need, present in the
hub environment; the host half is `agent.kinds.kernel`.

A kernel is present when its kernelspec folder is (what `jupyter kernelspec list` reads). One
whose `pip` packages are being installed comes with them; one with an `install` command has it
run after the packages (`python`/`jupyter` meaning the environment's); one the catalog gives no
way to install is a plan error rather than a silent gap in front of students.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

from wodsync.agent.kinds.kernel import KIND, Facts, Part, Probe
from wodsync.engine import hubwant
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

@dataclass(frozen=True)
class KernelWant:
    name: str
    pip: tuple[str, ...]        # canonical names of its pip packages
    install: tuple[str, ...]


@dataclass(frozen=True)
class Kernels:
    prefix: str
    kernels: dict[str, KernelWant]


@dataclass(frozen=True)
class KernelChange:
    name: str
    install: list[str] = field(default_factory=list)


DATA = KernelChange


def desired(ctx: DesiredContext) -> Kernels | None:
    if ctx.host.hub is None:
        return None
    found = {name: KernelWant(name, tuple(hubwant.canonical(Requirement(r).name)
                                          for r in k.pip), tuple(k.install))
             for name, k in hubwant.kernels(ctx.catalog, ctx.host).items()}
    return Kernels(ctx.host.hub.prefix, found) if found else None


def probe(want: Kernels) -> Probe:
    return {"prefix": want.prefix}


def diff(plan: PlanContext) -> None:
    want: Kernels = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    present = set(facts["kernels"])
    installing = plan.names("package") | plan.names("env")
    for name, kernel in sorted(want.kernels.items()):
        if name in present:
            plan.noop(KIND, name, "is installed")
            continue
        via_pip = [p for p in kernel.pip if f"pip/{p}" in installing]
        if kernel.install or via_pip:
            how = " ".join(kernel.install) if kernel.install else "from " + ", ".join(via_pip)
            plan.add(Action.CREATE, KIND, name, how, KernelChange(name, list(kernel.install)))
        elif installing:
            plan.notes.append(f"kernel {name} should come with the packages being installed")
        else:
            plan.errors.append(f"kernel {name} is not installed and the catalog does not say "
                               "how: give it `pip:` packages or an `install:` command")


def batch(want: Kernels, changes: list[Change]) -> Part:
    return {"prefix": want.prefix, "install": [c.data.install for c in changes
                                               if c.data.install]}
