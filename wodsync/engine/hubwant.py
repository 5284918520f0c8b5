"""What the catalog wants of a host's JupyterHub (controller side, pure): requirements, the hub
groups, the fingerprint a running hub must match.

Shared by the hub kinds (`packages`, `kernel`, `service`, `hub_user`, `hub_group`), each of
which takes its part; kept out of the kind modules because it needs the catalog models and
`packaging`, which the host halves never import.
"""

from __future__ import annotations

import hashlib
import re

from packaging.requirements import Requirement

from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Hub, Kernel, Pool, resolve_kernel
from wodsync.catalog.recipes import RecipeUse


def canonical(name: str) -> str:
    """PEP 503 name: how pip and the agent compare package names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def workshops_here(catalog: Catalog, host: Host) -> list[str]:
    """Workshops this host may serve: its location is their location or an alternate."""
    return sorted(k for k, ws in catalog.workshops.items()
                  if host.location in (ws.location, *ws.alternate_locations))


def hub_groups(catalog: Catalog, host: Host, pool: Pool,
               live: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """The pool's group with every seat, and one group per workshop served here with the seats
    its live sessions hold (`live`: seat → workshop)."""
    groups = {}
    if pool.group:
        groups[pool.group] = tuple(pool.user(n) for n in range(pool.first, pool.last + 1))
    for key in workshops_here(catalog, host):
        groups[key] = tuple(sorted(u for u, ws in live.items() if ws == key))
    return groups


def kernels(catalog: Catalog, host: Host) -> dict[str, Kernel | RecipeUse]:
    """The kernels of the workshops served here by kernelspec name: a recipe or a kernel with
    a way to install it wins over the bare name; of two recipes of one kernel, the later
    workshop's (`conflicts` names them)."""
    found: dict[str, Kernel | RecipeUse] = {}
    for key in workshops_here(catalog, host):
        for k in catalog.workshops[key].kernels:
            kernel = resolve_kernel(k)
            if isinstance(kernel, RecipeUse) or kernel.pip or kernel.install \
                    or kernel.name not in found:
                found[kernel.name] = kernel
    return found


def conflicts(catalog: Catalog, host: Host) -> list[str]:
    """Kernels that workshops served here install in two different ways (two versions of a
    recipe, a recipe and a catalog kernel): one environment holds one of each."""
    ways: dict[str, dict[str, list[str]]] = {}
    for key in workshops_here(catalog, host):
        for k in catalog.workshops[key].kernels:
            kernel = resolve_kernel(k)
            how = kernel.label if isinstance(kernel, RecipeUse) else \
                "the catalog's own" if kernel.pip or kernel.install else ""
            if how:
                ways.setdefault(kernel.name, {}).setdefault(how, []).append(key)
    return [f"kernel {name}: " + "; ".join(f"{how} ({', '.join(keys)})"
                                           for how, keys in sorted(by.items()))
            for name, by in sorted(ways.items()) if len(by) > 1]


def requirements(catalog: Catalog, host: Host) -> tuple[dict[str, str], list[str]]:
    """pip requirements by canonical name (first one wins) and apt packages of the hub
    environment: the hub itself, the host's packages, every workshop's and kernel's here."""
    hub = host.hub or Hub()
    reqs = [f"jupyterhub=={hub.version}", hub.lab, *host.packages.pip] if hub.manage \
        else list(host.packages.pip)
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    apt = [*host.packages.apt, *(["python3-venv"] if hub.manage else [])]
    for key in workshops_here(catalog, host):
        ws = catalog.workshops[key]
        reqs += ws.packages.pip
        apt += ws.packages.apt
        if ws.compile:  # a CREATE compiles these scripts with shc, which needs a C compiler
            apt += ["shc", "gcc", "libc6-dev"]
    for kernel in kernels(catalog, host).values():
        reqs += kernel.pip
        apt += kernel.apt if isinstance(kernel, RecipeUse) else []
    pip: dict[str, str] = {}
    for req in reqs:
        pip.setdefault(canonical(Requirement(req).name), req)
    return pip, sorted(set(apt))


def npm(hub: Hub) -> dict[str, str]:
    """configurable-http-proxy from npm under the prefix, unless an installed one is named."""
    return {} if hub.proxy or not hub.manage else {"configurable-http-proxy": hub.proxy_version}


def fingerprint(files: list[bytes], hub_req: str, npm_versions: dict[str, str]) -> str:
    """Changes exactly when the running hub must be restarted to match the catalog: its
    configuration, its unit, the JupyterHub and proxy versions."""
    if not files:
        return ""
    extra = f"\n{hub_req}\n{sorted(npm_versions.items())}".encode()
    return hashlib.sha256(b"\0".join(files) + extra).hexdigest()
