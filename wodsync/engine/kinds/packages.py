"""package: the hub environment (`env:<prefix>`, a venv every student can run) and what is
installed into it or onto the host — pip requirements of the hub, the host and every workshop
served here, apt packages, configurable-http-proxy from npm.

Packages are only ever added or upgraded, never removed: a package dropped from the catalog may
still be used by a student's notebook. Everything is observed from files — `*.dist-info`
folders (what `pip list` reads), `dpkg-query`, `node_modules/*/package.json` — in milliseconds,
instead of starting an interpreter per question.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wodsync.agent.run import run
from wodsync.engine.change import Action

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "package"
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
    from wodsync.engine import hubwant

    hub = ctx.host.hub
    if hub is None:
        return None
    pip, apt = hubwant.requirements(ctx.catalog, ctx.host)
    return Packages(hub.manage, hub.prefix, hub.python, pip, tuple(apt), hubwant.npm(hub),
                    tuple(hub.find_links), hub.no_index)


def probe(want: Packages) -> dict[str, Any]:
    return {"prefix": want.prefix, "apt": list(want.apt), "npm": sorted(want.npm)}


# ---- host side: observe ---------------------------------------------------------------------

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_facts(prefix):
    if not os.path.exists(os.path.join(prefix, "bin", "python")):
        return None
    found = {}
    for site in glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")):
        for entry in os.listdir(site):
            if entry.endswith(".dist-info"):
                name, _, version = entry[:-len(".dist-info")].rpartition("-")
                found[canonical(name)] = version
    return found


def _apt_facts(names):
    bare = [n.split("=", 1)[0] for n in names]
    found = dict.fromkeys(bare)
    if not bare or not shutil.which("dpkg-query"):
        return found
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Status}\n",
                           *bare], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        package, version, status = [*line.split("\t"), "", ""][:3]
        if status.endswith(" installed"):
            found[package] = version
    return found


def _npm_facts(prefix, names):
    found = {}
    for name in names:
        try:
            with open(os.path.join(prefix, "node", "node_modules", name, "package.json"),
                      encoding="utf-8") as f:
                found[name] = json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            found[name] = None
    return found


def _closed_on_path(path):
    """The first folder on the way to `path` (symlinks resolved) that students cannot enter."""
    target = os.path.realpath(path)
    current = "/"
    for part in target.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    python = os.path.join(probe["prefix"], "bin", "python")
    return {"pip": _pip_facts(probe["prefix"]), "apt": _apt_facts(probe["apt"]),
            "npm": _npm_facts(probe["prefix"], probe["npm"]),
            "closed": _closed_on_path(python) if os.path.exists(python) else None}


# ---- pure diff ------------------------------------------------------------------------------

def satisfied(req: str, version: str | None) -> bool:
    """Whether an installed version meets a requirement (controller side: uses packaging)."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    if version is None:
        return False
    spec = Requirement(req).specifier
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return not spec


def _pip(plan: PlanContext, want: Packages, facts: dict[str, Any]) -> None:
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


def _system(plan: PlanContext, want: Packages, facts: dict[str, Any]) -> None:
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
    facts = plan.facts[KIND]
    if facts.get("closed"):
        plan.errors.append(f"students cannot run the hub environment {want.prefix}: "
                           f"{facts['closed']} is not open to others (a venv must not point "
                           "into a private folder such as root's home)")
    _pip(plan, want, facts)
    _system(plan, want, facts)


def batch(want: Packages, changes: list[Any]) -> dict[str, Any]:
    by = {m: [c.data for c in changes if c.data.manager == m]
          for m in ("venv", "pip", "apt", "npm")}
    return {"prefix": want.prefix, "python": want.python, "venv": bool(by["venv"]),
            "pip": [d.spec for d in by["pip"]], "apt": [d.spec for d in by["apt"]],
            "npm": {d.name: d.spec for d in by["npm"]}, "find_links": list(want.find_links),
            "no_index": want.no_index}


# ---- host side: apply ------------------------------------------------------------------------

def install(part, host):
    """apt, then the venv, then pip (one call), then npm: as planned."""
    if part["apt"]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        run(["apt-get", "install", "-y", "-qq", *part["apt"]], env=env)
        host.say(f"apt installed {len(part['apt'])} packages")
    if part["venv"]:
        os.makedirs(os.path.dirname(part["prefix"]), mode=0o755, exist_ok=True)
        run([part["python"], "-m", "venv", part["prefix"]])
        host.say(f"created the hub environment {part['prefix']}")
    if part["pip"]:
        links = [arg for path in part["find_links"] for arg in ("--find-links", path)]
        links += ["--no-index"] if part["no_index"] else []
        run([os.path.join(part["prefix"], "bin", "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *links, *part["pip"]])
        host.say(f"pip installed {len(part['pip'])} packages")
    if part["npm"]:
        specs = [f"{name}@{version}" for name, version in sorted(part["npm"].items())]
        run(["npm", "install", "--prefix", os.path.join(part["prefix"], "node"),
             "--no-audit", "--no-fund", *specs])
        host.say(f"npm installed {len(specs)} packages")


PHASES = ((60, "install", install),)
