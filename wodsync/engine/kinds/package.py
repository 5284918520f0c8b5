"""package, controller half: the hub environment (`env:<prefix>`, a venv every student can
run) and what is installed into it or onto the host — pip requirements of the hub, the host and
every workshop served here, apt packages, configurable-http-proxy from npm.

Packages are only ever added or upgraded, never removed: a package dropped from the catalog may
still be used by a student's notebook. Everything is observed from files — `*.dist-info`
folders (what `pip list` reads), `dpkg-query`, `node_modules/*/package.json` — in milliseconds,
instead of starting an interpreter per question (the host half, `agent.kinds.package`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from wodsync.agent.kinds.package import KIND, Facts, Part, Probe
from wodsync.engine import hubwant
from wodsync.engine.change import Action, Change

if TYPE_CHECKING:
    from wodsync.engine.context import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

ADDRESS_KINDS = ("env", "package")


@dataclass(frozen=True)
class Packages:
    manage: bool
    prefix: str
    python: str
    pip: dict[str, str]                  # canonical name → requirement
    apt: tuple[str, ...]
    npm: dict[str, str]                  # package → exact version
    find_links: tuple[str, ...]
    no_index: bool


@dataclass(frozen=True)
class PackageChange:
    manager: str                          # venv, pip, apt, npm
    spec: str = ""                        # requirement, apt spec, or npm version
    name: str = ""


DATA = PackageChange


def desired(ctx: DesiredContext) -> Packages | None:
    hub = ctx.host.hub
    if hub is None:
        return None
    pip, apt = hubwant.requirements(ctx.catalog, ctx.host)
    return Packages(hub.manage, hub.prefix, hub.python, pip, tuple(apt), hubwant.npm(hub),
                    tuple(hub.find_links), hub.no_index)


def probe(want: Packages) -> Probe:
    return {"prefix": want.prefix, "apt": list(want.apt), "npm": sorted(want.npm)}


def satisfied(req: str, version: str | None) -> bool:
    """Whether an installed version meets a requirement."""
    if version is None:
        return False
    spec = Requirement(req).specifier
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return not spec


def _pip(plan: PlanContext, want: Packages, facts: Facts) -> None:
    installed = facts["pip"]
    if installed is None and want.manage:
        plan.add(Action.CREATE, "env", want.prefix, f"hub environment (venv of {want.python})",
                 PackageChange("venv", name=want.prefix))
    elif installed is not None:
        plan.noop("env", want.prefix, "exists")
    for name, req in sorted(want.pip.items()):
        have = (installed or {}).get(name)
        if satisfied(req, have):
            plan.noop(KIND, f"pip/{name}", f"is {have} ({req})")
        elif have is None:
            plan.add(Action.CREATE, KIND, f"pip/{name}", req, PackageChange("pip", req, name))
        else:
            plan.add(Action.UPDATE, KIND, f"pip/{name}", f"{have} → {req}",
                     PackageChange("pip", req, name))


def _system(plan: PlanContext, want: Packages, facts: Facts) -> None:
    for spec in want.apt:
        name, _, version = spec.partition("=")
        have = facts["apt"].get(name)
        if have is None or (version and have != version):
            plan.add(Action.CREATE if have is None else Action.UPDATE, KIND, f"apt/{name}",
                     spec, PackageChange("apt", spec, name))
        else:
            plan.noop(KIND, f"apt/{name}", f"is {have}")
    for name, version in sorted(want.npm.items()):
        have = facts["npm"].get(name)
        if have == version:
            plan.noop(KIND, f"npm/{name}", f"is {version}")
        else:
            plan.add(Action.CREATE if have is None else Action.UPDATE, KIND, f"npm/{name}",
                     f"{have or 'missing'} → {version}", PackageChange("npm", version, name))


def diff(plan: PlanContext) -> None:
    want: Packages = plan.want[KIND]
    facts: Facts = plan.facts[KIND]
    if facts.get("closed"):
        plan.errors.append(f"students cannot run the hub environment {want.prefix}: "
                           f"{facts['closed']} is not open to others (a venv must not point "
                           "into a private folder such as root's home)")
    _pip(plan, want, facts)
    _system(plan, want, facts)


def batch(want: Packages, changes: list[Change]) -> Part:
    by = {m: [c.data for c in changes if c.data.manager == m]
          for m in ("venv", "pip", "apt", "npm")}
    return {"prefix": want.prefix, "python": want.python, "venv": bool(by["venv"]),
            "pip": [d.spec for d in by["pip"]], "apt": [d.spec for d in by["apt"]],
            "npm": {d.name: d.spec for d in by["npm"]}, "find_links": list(want.find_links),
            "no_index": want.no_index}
