"""kernel, controller half: the Jupyter kernels the workshops served here need, present in the
hub environment; the host half is `agent.kinds.kernel`.

A kernel is present when its kernelspec folder is (what `jupyter kernelspec list` reads). One
whose `pip` packages are being installed comes with them; one with an `install` command has it
run after the packages (`python`/`jupyter` meaning the environment's); one the catalog gives no
way to install is a plan error rather than a silent gap in front of students.

A recipe (`catalog.recipes`) is present when its kernelspec records that recipe at that
version; otherwise its build command (if any) runs after the packages and the agent writes its
kernelspec. Its pip and apt packages are the package kind's, like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import Requirement

from wodsync.agent.kinds.kernel import KIND, Facts, Part, Probe, RecipePart
from wodsync.catalog.models import Kernel
from wodsync.catalog.recipes import RecipeUse
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
    recipe: RecipePart | None = None   # a recipe's build and kernelspec, for this host
    label: str = ""                    # the recipe and version (`rust 0.17.0`)


@dataclass(frozen=True)
class Kernels:
    prefix: str
    kernels: dict[str, KernelWant]
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelChange:
    name: str
    install: list[str] = field(default_factory=list)
    recipe: RecipePart | None = None


DATA = KernelChange


def _want(kernel: Kernel | RecipeUse, prefix: str, cache: str) -> KernelWant:
    if isinstance(kernel, RecipeUse):
        part: RecipePart = {"name": kernel.name, "label": kernel.label,
                            "build": kernel.build(prefix, cache),
                            "env": kernel.env(prefix, cache),
                            "spec": kernel.kernelspec(prefix)}
        return KernelWant(kernel.name, tuple(hubwant.canonical(Requirement(r).name)
                                             for r in kernel.pip), (), part, kernel.label)
    return KernelWant(kernel.name, tuple(hubwant.canonical(Requirement(r).name)
                                         for r in kernel.pip), tuple(kernel.install))


def desired(ctx: DesiredContext) -> Kernels | None:
    if ctx.host.hub is None:
        return None
    prefix, cache = ctx.host.hub.prefix, f"{ctx.host.state_dir.rstrip('/')}/cache"
    found = {name: _want(k, prefix, cache)
             for name, k in hubwant.kernels(ctx.catalog, ctx.host).items()}
    return Kernels(prefix, found, tuple(hubwant.conflicts(ctx.catalog, ctx.host))) \
        if found else None


def probe(want: Kernels) -> Probe:
    return {"prefix": want.prefix}


def _recipe(plan: PlanContext, kernel: KernelWant, facts: Facts) -> None:
    assert kernel.recipe is not None
    have = facts.get("recipes", {}).get(kernel.name)
    if have == kernel.label and kernel.name in facts["kernels"]:
        plan.noop(KIND, kernel.name, f"is {kernel.label} (recipe)")
        return
    change = KernelChange(kernel.name, recipe=kernel.recipe)
    if kernel.name not in facts["kernels"]:
        plan.add(Action.CREATE, KIND, kernel.name, f"recipe {kernel.label}", change)
    else:
        plan.add(Action.UPDATE, KIND, kernel.name,
                 f"{have or 'not installed by a recipe'} → {kernel.label}", change)


def diff(plan: PlanContext) -> None:
    want: Kernels = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    present = set(facts["kernels"])
    installing = plan.names("package") | plan.names("env")
    plan.errors += [f"{c}: one hub environment holds one of each" for c in want.conflicts]
    for name, kernel in sorted(want.kernels.items()):
        if kernel.recipe is not None:
            _recipe(plan, kernel, facts)
            continue
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
                               "how: give it `pip:` packages or an `install:` command, or use "
                               "a recipe (bash, ssh, go, rust, python)")


def batch(want: Kernels, changes: list[Change]) -> Part:
    return {"prefix": want.prefix,
            "install": [c.data.install for c in changes if c.data.install],
            "recipes": [c.data.recipe for c in changes if c.data.recipe is not None]}
