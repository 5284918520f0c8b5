"""Facts of a host where everything is as desired, built from a desired state (pure tests).

One `converged` per kind: what its host half would report (typed as it declares its facts,
`wodsync.agent.kinds.<kind>.Facts`) once the host is as the kind's desired part says. Tests then
break one fact and check the plan repairs exactly that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from wodsync.agent.kinds import (
    account,
    egress,
    file,
    group,
    hub_group,
    hub_user,
    kernel,
    limits,
    package,
    seat,
    service,
    sysctl,
)
from wodsync.engine.desired import DesiredHost
from wodsync.engine.kinds.account import Accounts
from wodsync.engine.kinds.group import SharedGroup
from wodsync.engine.kinds.hub_group import HubGroups
from wodsync.engine.kinds.hub_user import HubUsers
from wodsync.engine.kinds.kernel import Kernels
from wodsync.engine.kinds.limits import Want as LimitsWant
from wodsync.engine.kinds.package import Packages
from wodsync.engine.kinds.seat import Seats
from wodsync.engine.kinds.service import HubService
from wodsync.engine.render_system import ManagedFile


def file_facts(want: dict[str, ManagedFile]) -> file.Facts:
    return {"files": {p: {"sha256": f.sha256, "mode": f.mode, "owner": f.owner,
                          "group": f.group, "regular": True} for p, f in want.items()},
            "managed": sorted(want), "pending": {}}


def sysctl_facts(want: dict[str, str]) -> sysctl.Facts:
    return {"values": dict(want)}


def account_facts(want: Accounts) -> account.Facts:
    return {"accounts": {s.name: {"uid": s.uid, "gid": s.gid, "home": s.home,
                                  "shell": s.shell, "locked": True,
                                  "home_facts": {"mode": 0o700, "uid": s.uid, "gid": s.gid,
                                                 "acl": [], "entries": None}}
                         for s in want.seats.values()},
            "groups": {s.name: {"gid": s.gid, "members": []} for s in want.seats.values()},
            "managed": sorted(want.seats), "acl_uid": None}


def group_facts(want: SharedGroup) -> group.Facts:
    return {"gid": want.gid, "members": sorted(want.members)}


def package_facts(want: Packages) -> package.Facts:
    return {"pip": {name: "99.0" for name in want.pip} | {"jupyterhub": "6.1.1"},
            "apt": {spec.split("=")[0]: "1.0" for spec in want.apt},
            "npm": dict(want.npm), "closed": None}


def kernel_facts(want: Kernels) -> kernel.Facts:
    return {"kernels": sorted(want.kernels),
            "recipes": {n: k.label for n, k in want.kernels.items() if k.label}}


def service_facts(want: HubService) -> service.Facts:
    return {"running": True, "pid": 4242, "fingerprint": want.fingerprint}


def hub_user_facts(want: HubUsers) -> hub_user.Facts:
    return {"api": {"ok": True}, "users": list(want.users), "managed": list(want.users)}


def hub_group_facts(want: HubGroups) -> hub_group.Facts:
    return {"api": {"ok": True}, "groups": {g: list(m) for g, m in want.groups.items()},
            "managed": sorted(want.groups)}


def seat_facts(want: Seats) -> seat.Facts:
    return {"occupied": {s: {"session": sid, "state": "active", "workshop": None}
                         for s, sid in want.sessions.items()}}


def egress_facts(want: dict[int, egress.SeatWish]) -> egress.Facts:
    networks = {"pypi.org:443": ["203.0.113.80/32"]}
    return {"backend": "nft", "foreign": 0,
            "workshops": {w["workshop"]: {
                "allow": {e: networks.get(e, [e.rsplit(":", 1)[0]]) for e in w["allow"]},
                "hub": {e: [e] for e in w["hub"]}, "dns": ["192.0.2.53/32"]}
                for w in want.values()},
            "seats": {str(uid): {"user": w["user"], "workshop": w["workshop"], "rejected": 0}
                      for uid, w in want.items()}}


def limits_facts(want: LimitsWant) -> limits.Facts:
    return {"cgroup": "v1", "quota": {"mount": "/", "fstype": "ext4", "on": True, "why": ""},
            "units": {rel: hashlib.sha256(text.encode()).hexdigest()
                      for rel, text in want.units.items()}}


CONVERGED: dict[str, Callable[[Any], Any]] = {
    file.KIND: file_facts, sysctl.KIND: sysctl_facts, account.KIND: account_facts,
    group.KIND: group_facts, package.KIND: package_facts, kernel.KIND: kernel_facts,
    service.KIND: service_facts, hub_user.KIND: hub_user_facts,
    hub_group.KIND: hub_group_facts, seat.KIND: seat_facts, egress.KIND: egress_facts,
    limits.KIND: limits_facts}


def converged(d: DesiredHost) -> dict[str, Any]:
    """Every kind the host has a part of, as its host half would report it converged."""
    return {kind: CONVERGED[kind](part) for kind, part in d.want.items()}
