"""The JupyterHub side of a host's desired state (pure): hub users and groups, the hub
environment's packages and kernels, the hub configuration and the service that runs it.

Hub users are the seats of the host's pool; hub groups are the pool's group and one per
workshop served at the host's location (its seats), so an operator can see and act on a
workshop's students as a group in the hub.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import Requirement

from wodsync.catalog.loader import TEMPLATES_DIR, Catalog
from wodsync.catalog.models import Host, Hub, Kernel, Pool
from wodsync.render import compile_template, render_text


def canonical(name: str) -> str:
    """PEP 503 name: how pip and the agent compare package names."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class HubDesired:
    """Everything wodsync keeps true about one host's hub."""

    manage: bool
    service: str
    api: str
    token: str | None
    prefix: str
    python: str
    data_dir: str
    config_path: str
    fingerprint: str                     # config + versions the running hub must match
    find_links: tuple[str, ...]
    no_index: bool
    users: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    pip: dict[str, str]                  # canonical name → requirement
    apt: tuple[str, ...]
    npm: dict[str, str]                  # package → exact version
    kernels: dict[str, Kernel] = field(default_factory=dict)

    def probe(self) -> dict[str, Any]:
        """What the agent must look at for the hub (the token travels on stdin only)."""
        return {"manage": self.manage, "supervisor": self.service, "api": self.api,
                "token": self.token,
                "prefix": self.prefix, "data_dir": self.data_dir, "apt": list(self.apt),
                "npm": sorted(self.npm), "kernels": bool(self.kernels)}


def _workshops_here(catalog: Catalog, host: Host) -> list[str]:
    return sorted(k for k, ws in catalog.workshops.items()
                  if host.location in (ws.location, *ws.alternate_locations))


def hub_groups(catalog: Catalog, host: Host, pool: Pool) -> dict[str, tuple[str, ...]]:
    groups = {}
    if pool.group:
        groups[pool.group] = tuple(pool.user(n) for n in range(pool.first, pool.last + 1))
    for key in _workshops_here(catalog, host):
        seats = catalog.workshops[key].seats
        first, last = max(seats.first, pool.first), min(seats.last, pool.last)
        groups[key] = tuple(pool.user(n) for n in range(first, last + 1))
    return groups


def _requirements(catalog: Catalog, host: Host) -> tuple[dict[str, str], list[str],
                                                          dict[str, Kernel]]:
    hub = host.hub or Hub()
    reqs = [f"jupyterhub=={hub.version}", hub.lab, *host.packages.pip] if hub.manage \
        else list(host.packages.pip)
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    apt = [*host.packages.apt, *(["python3-venv"] if hub.manage else [])]
    kernels: dict[str, Kernel] = {}
    for key in _workshops_here(catalog, host):
        ws = catalog.workshops[key]
        reqs += ws.packages.pip
        apt += ws.packages.apt
        for k in ws.kernels:
            kernel = k if isinstance(k, Kernel) else Kernel(name=k)
            if kernel.pip or kernel.install or kernel.name not in kernels:
                kernels[kernel.name] = kernel
            reqs += kernel.pip
    pip: dict[str, str] = {}
    for req in reqs:
        pip.setdefault(canonical(Requirement(req).name), req)
    return pip, sorted(set(apt)), kernels


def render_hub_file(catalog: Catalog, template: str, ctx: dict[str, Any]) -> bytes:
    """A file of `templates/hub/` rendered with the host's system context (holds the token)."""
    source = (catalog.root / TEMPLATES_DIR / template).read_text(encoding="utf-8")
    return render_text(compile_template(source, f"{TEMPLATES_DIR}/{template}"),
                       ctx).encode("utf-8")


def _fingerprint(files: list[bytes], hub_req: str, npm: dict[str, str]) -> str:
    """Changes exactly when the running hub must be restarted to match the catalog: its
    configuration, its unit, the JupyterHub and proxy versions."""
    if not files:
        return ""
    extra = f"\n{hub_req}\n{sorted(npm.items())}".encode()
    return hashlib.sha256(b"\0".join(files) + extra).hexdigest()


def hub_desired(catalog: Catalog, host: Host, hub: Hub, pool: Pool, token: str | None,
                files: list[bytes]) -> HubDesired:
    pip, apt, kernels = _requirements(catalog, host)
    npm = {} if hub.proxy or not hub.manage else {"configurable-http-proxy": hub.proxy_version}
    return HubDesired(
        manage=hub.manage, service=hub.service, api=hub.api,
        token=token,
        prefix=hub.prefix, python=hub.python, data_dir=hub.data_dir,
        config_path=f"{hub.config_dir}/jupyterhub_config.py",
        fingerprint=_fingerprint(files, pip.get("jupyterhub", ""), npm),
        find_links=tuple(hub.find_links), no_index=hub.no_index,
        users=tuple(pool.user(n) for n in range(pool.first, pool.last + 1)),
        groups=hub_groups(catalog, host, pool), pip=pip, apt=tuple(apt), npm=npm,
        kernels=kernels)
