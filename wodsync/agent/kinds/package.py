"""package, host half: what is installed in the hub environment and on the host, read from
files — `*.dist-info` folders (what `pip list` reads), `dpkg-query`, `node_modules/*/package.json`
— in milliseconds instead of starting an interpreter per question; and installing what the
controller half (`engine.kinds.package`) planned. Nothing is ever removed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from typing import TypedDict

from wodsync.agent.factspec import NAME, MapOf, Nullable, Record
from wodsync.agent.host import HostSide
from wodsync.agent.run import run

KIND = "package"


class Probe(TypedDict):
    prefix: str
    apt: list[str]
    npm: list[str]


class Facts(TypedDict):
    """pip: canonical name → version in the hub environment (None: no environment); apt and
    npm: name → version (None: not installed); `closed`: the first folder on the way to the
    environment's python that students cannot enter (None: none)."""

    pip: dict[str, str] | None
    apt: dict[str, str | None]
    npm: dict[str, str | None]
    closed: str | None


FACTS = Record({"pip": Nullable(MapOf(NAME)), "apt": MapOf(Nullable(NAME)),
                "npm": MapOf(Nullable(NAME)), "closed": Nullable(NAME)})


class Part(TypedDict):
    prefix: str
    python: str
    venv: bool
    pip: list[str]
    apt: list[str]
    npm: dict[str, str]
    find_links: list[str]
    no_index: bool


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_facts(prefix: str) -> dict[str, str] | None:
    if not os.path.exists(os.path.join(prefix, "bin", "python")):
        return None
    found = {}
    for site in glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")):
        for entry in os.listdir(site):
            if entry.endswith(".dist-info"):
                name, _, version = entry[:-len(".dist-info")].rpartition("-")
                found[canonical(name)] = version
    return found


def _apt_facts(names: list[str]) -> dict[str, str | None]:
    bare = [n.split("=", 1)[0] for n in names]
    found: dict[str, str | None] = dict.fromkeys(bare)
    if not bare or not shutil.which("dpkg-query"):
        return found
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Status}\n",
                           *bare], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        package, version, status = [*line.split("\t"), "", ""][:3]
        if status.endswith(" installed"):
            found[package] = version
    return found


def _npm_facts(prefix: str, names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            with open(os.path.join(prefix, "node", "node_modules", name, "package.json"),
                      encoding="utf-8") as f:
                found[name] = json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            found[name] = None
    return found


def _closed_on_path(path: str) -> str | None:
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


def observe(probe: Probe, host: HostSide) -> Facts:
    python = os.path.join(probe["prefix"], "bin", "python")
    return {"pip": _pip_facts(probe["prefix"]), "apt": _apt_facts(probe["apt"]),
            "npm": _npm_facts(probe["prefix"], probe["npm"]),
            "closed": _closed_on_path(python) if os.path.exists(python) else None}


def install(part: Part, host: HostSide) -> None:
    """apt, then the venv, then pip (one call), then npm: as planned."""
    if part["apt"]:
        host.progress(f"apt: installing {len(part['apt'])} packages")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        run(["apt-get", "install", "-y", "-qq", *part["apt"]], env=env)
        host.say(f"apt installed {len(part['apt'])} packages")
    if part["venv"]:
        host.progress(f"venv: creating the hub environment {part['prefix']}")
        os.makedirs(os.path.dirname(part["prefix"]), mode=0o755, exist_ok=True)
        run([part["python"], "-m", "venv", part["prefix"]])
        host.say(f"created the hub environment {part['prefix']}")
    if part["pip"]:
        links = [arg for path in part["find_links"] for arg in ("--find-links", path)]
        links += ["--no-index"] if part["no_index"] else []
        host.progress(f"pip: installing {len(part['pip'])} packages (JupyterHub's first "
                      "install takes minutes)" if part["venv"] else
                      f"pip: installing {len(part['pip'])} packages")
        run([os.path.join(part["prefix"], "bin", "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *links, *part["pip"]])
        host.say(f"pip installed {len(part['pip'])} packages")
    if part["npm"]:
        specs = [f"{name}@{version}" for name, version in sorted(part["npm"].items())]
        host.progress(f"npm: installing {', '.join(specs)} (the proxy)")
        run(["npm", "install", "--prefix", os.path.join(part["prefix"], "node"),
             "--no-audit", "--no-fund", *specs])
        host.say(f"npm installed {len(specs)} packages")


PHASES = ((60, "install", install),)
