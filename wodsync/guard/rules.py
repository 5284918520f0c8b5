"""What a host is asked in a guard round: the catalog's rules, its pool, its hub (controller
side; the answer is `wodsync.agent.guard`'s).

The rules travel as the catalog validated them, one request per round; the hub's token travels
in the request on stdin like every seat operation's, never on a command line.
"""

from __future__ import annotations

from typing import cast

from wodsync.agent.protocol import GuardIdle, GuardRoundRequest, GuardRule, Hub
from wodsync.catalog.guard import GuardFile
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host
from wodsync.engine.remote import host_payload
from wodsync.secrets import Secrets


class GuardOff(Exception):
    """The catalog has no `catalog/guard.yaml`: no round runs."""


def guard_of(catalog: Catalog) -> GuardFile:
    if catalog.guard is None:
        raise GuardOff("the catalog has no catalog/guard.yaml: the seat guard is off")
    return catalog.guard


def _proxy(host: Host) -> str:
    """Where the hub's proxy answers on the host itself (students' servers are behind it)."""
    assert host.hub is not None
    ip = host.hub.ip
    if ip in ("", "0.0.0.0"):
        ip = "127.0.0.1"
    elif ip == "::":
        ip = "::1"
    scheme = "https" if host.hub.tls else "http"
    return f"{scheme}://{f'[{ip}]' if ':' in ip else ip}:{host.hub.port}"


def _hub(catalog: Catalog, name: str, secrets: Secrets) -> Hub | None:
    host = catalog.hosts[name]
    if not (host.hub and host.hub.token):
        return None
    return {"api": host.hub.api, "token": secrets.hub_token(name, host.hub.token)}


def round_request(catalog: Catalog, name: str, secrets: Secrets,
                  dry_run: bool = False) -> GuardRoundRequest:
    """`guard_round` for host `name`: every rule, the pool's seats, and — with a hub whose
    token wodsync holds and an idle timeout — what idle servers need."""
    guard = guard_of(catalog)
    host = catalog.hosts[name]
    pool = catalog.pools[host.pool]
    hub = _hub(catalog, name, secrets)
    idle: GuardIdle | None = None
    if hub and guard.idle.timeout > 0:
        idle = {"timeout": guard.idle.timeout, "cpu_percent": guard.idle.cpu_percent,
                "proxy": _proxy(host)}
    rules = [cast(GuardRule, rule.model_dump()) for rule in guard.rules]
    return {**host_payload(name, host),
            "pool": {"prefix": pool.prefix, "uid_base": pool.uid_base, "first": pool.first,
                     "last": pool.last},
            "rules": rules, "dry_run": dry_run, "hub": hub, "idle": idle}
