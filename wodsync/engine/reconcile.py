"""Observe → plan → apply for a set of hosts, in parallel with a bound.

Each host is handled by one worker with its own transport (a fabric `Connection` is not
thread-safe). A host costs two round trips for a plan (connect + observe) and two more for an
apply (the batch, then a fresh observe to report the converged state). One failing host never
stops the others: its error is part of the result.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from wodsync.engine.desired import DesiredHost
from wodsync.engine.plan import HostPlan, plan_host
from wodsync.engine.transport import Transport, TransportError, connect

LOADER = ("import json,sys;r=json.loads(sys.stdin.readline());"
          "g={'__name__':'wodsync_agent'};exec(compile(r['source'],'wodsync-agent','exec'),g);"
          "sys.stdin=__import__('io').StringIO(json.dumps(r['request'])+'\\n');g['main']()")


class HostError(Exception):
    """The host answered, but the agent reported a failure."""


@cache
def agent_source() -> str:
    """The hub part first: agent.py's functions look its names up in the shared namespace."""
    here = Path(__file__).parent
    return "\n".join((here / name).read_text(encoding="utf-8")
                     for name in ("agent_hub.py", "agent.py"))


def call_agent(transport: Transport, op: str, payload: dict[str, Any]) -> Any:
    """One round trip: ship the agent and the request on stdin, get JSON back."""
    request = {"source": agent_source(), "request": {"op": op, "payload": payload}}
    result = transport.run(["python3", "-c", LOADER], json.dumps(request).encode() + b"\n")
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise HostError(f"agent failed (exit {result.status}): "
                        f"{result.stderr.decode(errors='replace').strip()[-500:]}") from None
    if not answer["ok"]:
        raise HostError(answer["error"])
    return answer["result"]


def apply_payload(desired: DesiredHost, plan: HostPlan) -> dict[str, Any]:
    """The batch for the agent: bulk lists per kind of action."""
    p: dict[str, Any] = {"state_dir": desired.host.state_dir, "pool": desired.pool.model_dump(),
                         "home_acl": desired.host.home_acl, "create": [], "homes": [],
                         "change": [], "lock": [], "delete": [], "group_members": None,
                         "files": [], "delete_files": [], "commands": [], "sysctl": {}}
    for a in plan.actions:
        kind = a.resource.split(":", 1)[0]
        if kind == "account":
            _account_payload(p, a)
        elif kind == "group":
            p["group_members"] = a.data["members"]
        elif kind == "file" and a.op == "delete":
            p["delete_files"].append(a.data["path"])
        elif kind == "file":
            f = a.data["file"]
            p["files"].append({"path": f.path, "data": f.data.hex(), "owner": f.owner,
                               "group": f.group, "mode": f"{f.mode:o}",
                               "on_change": list(f.on_change)})
        elif kind == "on_change":
            p["commands"].append(a.data["argv"])
        elif kind == "sysctl":
            p["sysctl"][a.data["key"]] = a.data["value"]
    p["hub"] = hub_payload(desired, plan)
    return p


def hub_payload(desired: DesiredHost, plan: HostPlan) -> dict[str, Any] | None:
    """The hub part of the batch: what to install, whether to (re)start, users and groups."""
    hub = desired.hub
    if hub is None:
        return None
    p: dict[str, Any] = {**hub.probe(), "python": hub.python, "config_path": hub.config_path,
                         "fingerprint": hub.fingerprint, "find_links": list(hub.find_links),
                         "no_index": hub.no_index,
                         "state_dir": desired.host.state_dir, "venv": False, "pip": [],
                         "apt": [], "npm": {}, "kernel_install": [], "service": None,
                         "create_users": [], "delete_users": [],
                         "groups": {"create": {}, "change": {}, "delete": []}}
    for a in plan.actions:
        kind, _, name = a.resource.partition(":")
        if kind == "env":
            p["venv"] = True
        elif kind == "package":
            _package_payload(p, a.data)
        elif kind == "kernel" and a.data["install"]:
            p["kernel_install"].append(a.data["install"])
        elif kind == "service":
            p["service"] = a.data["service"]
        elif kind == "hub_user":
            p["create_users" if a.op == "create" else "delete_users"].append(name)
        elif kind == "hub_group" and a.op == "delete":
            p["groups"]["delete"].append(name)
        elif kind == "hub_group":
            p["groups"][a.op][name] = a.data["members"] if a.op == "create" else a.data
    return p


def _package_payload(p: dict[str, Any], data: dict[str, Any]) -> None:
    if "pip" in data:
        p["pip"].append(data["pip"])
    elif "apt" in data:
        p["apt"].append(data["apt"])
    else:
        name, version = data["npm"]
        p["npm"][name] = version


def _account_payload(p: dict[str, Any], a: Any) -> None:
    if a.op == "delete":
        p["delete"].append(a.data)
        return
    acc = a.data["account"]
    entry = {"name": acc.name, "uid": acc.uid, "gid": acc.gid, "home": acc.home,
             "shell": acc.shell, "home_root": acc.home_root}
    if a.op == "create":
        p["create"].append(entry)
        return
    if a.data.get("home"):
        p["homes"].append(entry)
    if a.data.get("shell"):
        p["change"].append({"name": acc.name, "shell": acc.shell})
    if a.data.get("lock"):
        p["lock"].append(acc.name)


@dataclass
class HostResult:
    host: str
    plan: HostPlan | None = None
    applied: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # apply phases on the host, s
    after: HostPlan | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.plan is None or (
            self.plan.refused is None and not self.plan.errors))


def _one(desired: DesiredHost, apply: bool, allow_deletions: int | None) -> HostResult:
    result = HostResult(desired.name)
    transport = connect(desired.name, desired.host)
    try:
        observed = call_agent(transport, "observe", desired.probe())
        result.plan = plan_host(desired, observed, allow_deletions)
        if apply and result.plan.changes and result.plan.refused is None:
            done = call_agent(transport, "apply", apply_payload(desired, result.plan))
            result.applied = done["log"]
            result.timings = done.get("timings", {})
            result.after = plan_host(desired, call_agent(transport, "observe", desired.probe()),
                                     allow_deletions)
    except (TransportError, HostError) as exc:
        result.error = str(exc)
    finally:
        transport.close()
    return result


def reconcile(hosts: list[DesiredHost], *, apply: bool, parallel: int = 8,
              allow_deletions: int | None = None) -> list[HostResult]:
    """Plan (and optionally apply) every host; results in the order of `hosts`."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(lambda d: _one(d, apply, allow_deletions), hosts))
