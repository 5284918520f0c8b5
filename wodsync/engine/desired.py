"""Desired state of one host, computed from the validated catalog (pure, no I/O on hosts).

Resources are plain values with a stable `id` (`account:student7`, `file:/etc/…`,
`sysctl:kernel.pid_max`), so the plan can diff them and later resource types (hub users,
packages, kernels, seat content) slot in beside them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from wodsync.catalog.loader import TEMPLATES_DIR, Catalog
from wodsync.catalog.models import Host, Pool
from wodsync.engine.hub import HubDesired, hub_desired, render_hub_file
from wodsync.render import compile_template, render_text, system_context
from wodsync.secrets import Secrets, merge_variables


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    home_root: str

    @property
    def id(self) -> str:
        return f"account:{self.name}"


@dataclass(frozen=True)
class ManagedFile:
    path: str
    data: bytes = field(repr=False)
    owner: str
    group: str
    mode: int
    on_change: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"file:{self.path}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class DesiredHost:
    name: str
    host: Host
    pool: Pool
    accounts: dict[str, Account]
    files: dict[str, ManagedFile]
    sysctl: dict[str, str]
    hub: HubDesired | None

    def probe(self) -> dict[str, Any]:
        """What `observe` must look at on the host."""
        return {"pool": self.pool.model_dump(), "files": sorted(self.files),
                "sysctl": sorted(self.sysctl), "state_dir": self.host.state_dir,
                "hub": self.hub.probe() if self.hub else None}


def accounts_of(pool: Pool) -> dict[str, Account]:
    return {pool.user(n): Account(pool.user(n), pool.uid_base + n, pool.gid_base + n,
                                  f"{pool.home_root.rstrip('/')}/{pool.user(n)}", pool.shell,
                                  pool.home_root)
            for n in range(pool.first, pool.last + 1)}


def files_of(catalog: Catalog, name: str, host: Host, secrets: Secrets,
             token: str) -> dict[str, ManagedFile]:
    merged = merge_variables(secrets, catalog.variables, host.variables)
    ctx = system_context(merged, name, host, catalog.pools.get(host.pool), token)
    files = {}
    for f in catalog.system_files:
        source = (catalog.root / TEMPLATES_DIR / f.template).read_text(encoding="utf-8")
        text = render_text(compile_template(source, f"{TEMPLATES_DIR}/{f.template}"), ctx)
        files[f.path] = ManagedFile(f.path, text.encode("utf-8"), f.owner, f.group,
                                    int(f.mode, 8), tuple(f.on_change))
    if host.hub and host.hub.manage:
        for spec in host.hub.service_files():
            files[spec.path] = ManagedFile(spec.path, render_hub_file(catalog, spec.template, ctx),
                                           "root", "root", spec.mode, spec.on_change)
    return files


def desired_state(catalog: Catalog, name: str, secrets: Secrets) -> DesiredHost:
    host = catalog.hosts[name]
    pool = catalog.pools[host.pool]
    token = secrets.resolve(host.hub.token) if host.hub and host.hub.token else None
    files = files_of(catalog, name, host, secrets, token or "")
    hub = None
    if host.hub:
        own = host.hub.service_files() if host.hub.manage else []
        hub = hub_desired(catalog, host, host.hub, pool, token,
                          [files[spec.path].data for spec in own])
    return DesiredHost(name, host, pool, accounts_of(pool), files,
                       {k: str(v) for k, v in host.sysctl.items()}, hub)
