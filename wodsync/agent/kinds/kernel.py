"""kernel, host half: the kernelspecs present (what `jupyter kernelspec list` reads) and the
recipe each records, and running what the controller half (`engine.kinds.kernel`) planned: the
catalog's install commands (`python`/`jupyter` meaning the hub environment's), and for a recipe
its build command then its kernelspec, written here as data.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, TypedDict

from wodsync.agent.factspec import NAME, NAMES, MapOf, Record
from wodsync.agent.host import HostSide
from wodsync.agent.run import BASE_PATH, CommandFailed, run

KIND = "kernel"
KERNEL_DIRS = ("share/jupyter/kernels",)
SYSTEM_KERNEL_DIRS = ("/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels")
BUILD_TIMEOUT = 3600  # cargo compiles evcxr for many minutes on a small host


class Probe(TypedDict):
    prefix: str


class _Kernels(TypedDict):
    kernels: list[str]


class Facts(_Kernels, total=False):
    """`kernels`: every kernelspec name found; `recipes`: name → the recipe and version its
    `kernel.json` records (`rust 0.17.0`), for those a recipe wrote (optional: facts published
    before recipes existed have none)."""

    recipes: dict[str, str]


FACTS = Record({"kernels": NAMES}, {"recipes": MapOf(NAME)})


class RecipePart(TypedDict):
    name: str                   # the kernelspec name
    label: str                  # recipe and version, recorded in the kernelspec
    build: list[str]            # argv; empty when the pip packages are the kernel
    env: dict[str, str]         # the build's own variables (GOPATH, CARGO_HOME, …)
    spec: dict[str, Any]        # kernel.json


class Part(TypedDict):
    prefix: str
    install: list[list[str]]
    recipes: list[RecipePart]


def _recorded(path: str) -> str | None:
    """The recipe a kernel.json records, None when it records none (or cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            label = json.load(f).get("metadata", {}).get("wodsync", {}).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return label if isinstance(label, str) else None


def observe(probe: Probe, host: HostSide) -> Facts:
    dirs = [os.path.join(probe["prefix"], d) for d in KERNEL_DIRS] + list(SYSTEM_KERNEL_DIRS)
    names: set[str] = set()
    recipes: dict[str, str] = {}
    for d in dirs:
        for path in glob.glob(os.path.join(d, "*", "kernel.json")):
            name = os.path.basename(os.path.dirname(path))
            names.add(name)
            label = _recorded(path) if d.startswith(probe["prefix"]) else None
            if label:
                recipes[name] = label
    return {"kernels": sorted(names), "recipes": recipes}


def _environment(prefix: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"PATH": f"{prefix}/bin:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root",
            **(extra or {})}


def write_kernelspec(prefix: str, name: str, spec: dict[str, Any]) -> str:
    """`<prefix>/share/jupyter/kernels/<name>/kernel.json`, replaced atomically (a folder of
    root's hub environment: no student can place anything on the way)."""
    folder = os.path.join(prefix, KERNEL_DIRS[0], name)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kernel.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(folder, "kernel.json"))
    except BaseException:
        os.unlink(tmp)
        raise
    return folder


def _install_recipe(prefix: str, recipe: RecipePart, host: HostSide) -> None:
    if recipe["build"]:
        for value in recipe["env"].values():  # caches: GOPATH, CARGO_HOME, … (root's)
            if value.startswith("/") and not value.startswith(prefix):
                os.makedirs(value, mode=0o700, exist_ok=True)
        run(recipe["build"], env=_environment(prefix, recipe["env"]), timeout=BUILD_TIMEOUT)
    write_kernelspec(prefix, recipe["name"], recipe["spec"])
    host.say(f"kernel {recipe['name']}: recipe {recipe['label']} installed")


def install(part: Part, host: HostSide) -> None:
    prefix = part["prefix"]
    for argv in part["install"]:
        tool = argv[0]
        if tool in ("python", "jupyter"):
            tool = os.path.join(prefix, "bin", tool)
        run([tool, *argv[1:]], env=_environment(prefix))
        host.say(f"ran kernel installer {' '.join(argv)}")
    for recipe in part.get("recipes", []):
        try:
            _install_recipe(prefix, recipe, host)
        except (CommandFailed, OSError) as exc:
            host.fail("kernel.install", f"kernel {recipe['name']} (recipe {recipe['label']}): "
                                        f"{exc}")


PHASES = ((65, "install", install),)
