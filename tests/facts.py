"""Facts of a host where everything is as desired, built from a desired state (pure tests).

What the agent would report, kind by kind, for a converged host; tests then break one fact and
check the plan repairs exactly that.
"""

from __future__ import annotations

from typing import Any

from wodsync.engine.desired import DesiredHost


def _accounts(d: DesiredHost) -> dict[str, Any]:
    want = d.want["account"]
    accounts = {s.name: {"uid": s.uid, "gid": s.gid, "home": s.home, "shell": s.shell,
                         "locked": True,
                         "home_facts": {"mode": 0o700, "uid": s.uid, "gid": s.gid, "acl": [],
                                        "entries": None}}
                for s in want.seats.values()}
    groups = {s.name: {"gid": s.gid, "members": []} for s in want.seats.values()}
    return {"accounts": accounts, "groups": groups, "managed": sorted(want.seats),
            "acl_uid": None}


def converged(d: DesiredHost) -> dict[str, Any]:
    w = d.want
    facts: dict[str, Any] = {
        "file": {"files": {p: {"sha256": f.sha256, "mode": f.mode, "owner": f.owner,
                               "group": f.group, "regular": True} for p, f in w["file"].items()},
                 "managed": sorted(w["file"]), "pending": {}},
        "account": _accounts(d),
        "seat": {"occupied": {s: {"session": sid, "state": "active"}
                              for s, sid in w["seat"].sessions.items()}},
    }
    if "sysctl" in w:
        facts["sysctl"] = {"values": dict(w["sysctl"])}
    if "group" in w:
        facts["group"] = {"gid": w["group"].gid, "members": sorted(w["group"].members)}
    if "package" in w:
        p = w["package"]
        facts["package"] = {"pip": {name: "99.0" for name in p.pip} | {"jupyterhub": "6.1.1"},
                            "apt": {spec.split("=")[0]: "1.0" for spec in p.apt},
                            "npm": dict(p.npm), "closed": None}
    if "kernel" in w:
        facts["kernel"] = {"kernels": sorted(w["kernel"].kernels)}
    if "service" in w:
        facts["service"] = {"running": True, "pid": 4242,
                            "fingerprint": w["service"].fingerprint}
    if "hub_user" in w:
        facts["hub_user"] = {"api": {"ok": True}, "users": list(w["hub_user"].users),
                             "managed": list(w["hub_user"].users)}
    if "hub_group" in w:
        groups = w["hub_group"].groups
        facts["hub_group"] = {"api": {"ok": True}, "groups": {g: list(m)
                                                              for g, m in groups.items()},
                              "managed": sorted(groups)}
    return facts
