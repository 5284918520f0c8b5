"""The plan: a pure function of desired and observed state, printable, saveable, applicable.

Like terraform's plan, it is a value: a list of actions per host (`+` create, `~` change,
`-` delete), each naming a resource and why. It never touches a host, so every rule about what
wodsync may do — only inventoried things are deleted, homes with files are kept, mass deletion
needs explicit consent — is enforced and tested here without SSH.
"""

from __future__ import annotations

from typing import Any

from wodsync.engine.action import SYMBOL, Action, HostPlan, Op
from wodsync.engine.desired import DesiredHost
from wodsync.engine.plan_hub import hub_actions

__all__ = ["SYMBOL", "Action", "HostPlan", "Op", "plan_host", "render_plan"]

DELETE_RATIO = 0.10
DELETE_MAX = 50


def deletion_cap(managed: int) -> int:
    """At most 10 % of managed accounts or 50, whichever is smaller (at least 1 if any)."""
    return min(DELETE_MAX, max(1, int(managed * DELETE_RATIO))) if managed else 0


def _account_actions(desired: DesiredHost, observed: dict[str, Any], plan: HostPlan) -> None:
    seen = observed["accounts"]
    inventory = set(observed["inventory"].get("accounts", []))
    in_use = set(observed["inventory"].get("seats_in_use", {}))
    for name, acc in desired.accounts.items():
        have = seen.get(name)
        if have is None:
            plan.actions.append(Action("create", f"account:{name}",
                                       f"uid {acc.uid}, home {acc.home}", {"account": acc}))
            continue
        if have["uid"] != acc.uid:
            plan.notes.append(f"account {name} has uid {have['uid']}, expected {acc.uid}: "
                              "left alone (not wodsync's to renumber)")
            continue
        _account_drift(acc, have, name in in_use, plan)
    for name, have in sorted(seen.items()):
        if name in desired.accounts:
            continue
        if name not in inventory:
            plan.notes.append(f"account {name} (uid {have['uid']}) is in the pool's range but "
                              "was not created by wodsync: never deleted")
            continue
        facts = have.get("home_facts") or {}
        kept = f"home {have['home']} kept: {facts['entries']} entries" \
            if facts.get("entries") else "empty home removed"
        plan.actions.append(Action("delete", f"account:{name}", kept,
                                   {"name": name, "home": have["home"]}))


def _account_drift(acc: Any, have: dict[str, Any], in_use: bool, plan: HostPlan) -> None:
    """Home, shell and lock state; a seat in use keeps the password its student was given."""
    facts = have.get("home_facts")
    reasons = []
    home_bad = facts is None or (facts["mode"], facts["uid"], facts["gid"]) != (
        0o700, acc.uid, acc.gid)
    if facts is None:
        reasons.append("home missing")
    elif home_bad:
        reasons.append(f"home mode {facts['mode']:04o} owner {facts['uid']}:{facts['gid']}")
    if have["shell"] != acc.shell:
        reasons.append(f"shell {have['shell']} → {acc.shell}")
    relock = not have["locked"] and not in_use
    if relock:
        reasons.append("password not locked while the seat is free")
    if reasons:
        plan.actions.append(Action("change", f"account:{acc.name}", "; ".join(reasons),
                                   {"account": acc, "home": home_bad,
                                    "shell": have["shell"] != acc.shell,
                                    "lock": relock}))


def _group_actions(desired: DesiredHost, observed: dict[str, Any], plan: HostPlan) -> None:
    group = desired.pool.group
    if not group:
        return
    want = sorted(desired.accounts)
    have = observed.get("group_members")
    if have is None:
        plan.actions.append(Action("create", f"group:{group}", f"{len(want)} members",
                                   {"members": want}))
    elif sorted(have) != want:
        plan.actions.append(Action("change", f"group:{group}",
                                   f"{len(set(want) - set(have))} members to add, "
                                   f"{len(set(have) - set(want))} to remove", {"members": want}))


def _file_actions(desired: DesiredHost, observed: dict[str, Any], plan: HostPlan) -> None:
    facts = observed["files"]
    for path, f in sorted(desired.files.items()):
        have = facts.get(path)
        if have is None:
            plan.actions.append(Action("create", f"file:{path}", f"mode {f.mode:04o}",
                                       {"file": f}))
            continue
        reasons = []
        if have["sha256"] != f.sha256:
            reasons.append("content differs")
        if have["mode"] != f.mode:
            reasons.append(f"mode {have['mode']:04o} → {f.mode:04o}")
        if (have["owner"], have["group"]) != (f.owner, f.group):
            reasons.append(f"owner {have['owner']}:{have['group']} → {f.owner}:{f.group}")
        if reasons:
            plan.actions.append(Action("change", f"file:{path}", "; ".join(reasons),
                                       {"file": f}))
    for path in sorted(observed["inventory"].get("files", [])):
        if path not in desired.files and facts.get(path) is not None:
            plan.actions.append(Action("delete", f"file:{path}", "no longer declared",
                                       {"path": path}))


def _sysctl_actions(desired: DesiredHost, observed: dict[str, Any], plan: HostPlan) -> None:
    for key, value in sorted(desired.sysctl.items()):
        have = observed["sysctl"].get(key)
        if have is None:
            plan.notes.append(f"sysctl {key} does not exist on this host")
        elif have != value:
            plan.actions.append(Action("change", f"sysctl:{key}", f"{have} → {value}",
                                       {"key": key, "value": value}))


def _pending_actions(observed: dict[str, Any], plan: HostPlan) -> None:
    """on_change commands an interrupted apply left unrun: their files already look converged."""
    for argv in observed["inventory"].get("pending", []):
        plan.actions.append(Action("change", "on_change:" + " ".join(argv),
                                   "left pending by an interrupted apply", {"argv": argv}))


def plan_host(desired: DesiredHost, observed: dict[str, Any],
              allow_deletions: int | None = None) -> HostPlan:
    """Diff one host. Deleting more than the cap is refused unless `allow_deletions` covers it."""
    plan = HostPlan(desired.name)
    _account_actions(desired, observed, plan)
    _group_actions(desired, observed, plan)
    _file_actions(desired, observed, plan)
    _sysctl_actions(desired, observed, plan)
    _pending_actions(observed, plan)
    hub_actions(desired.hub, observed, plan)
    deletions = sum(a.op == "delete" and a.resource.startswith("account:")
                    for a in plan.actions)
    cap = deletion_cap(len(observed["inventory"].get("accounts", [])))
    limit = cap if allow_deletions is None else allow_deletions
    if deletions > limit:
        plan.refused = (f"plan deletes {deletions} accounts; the cap is {limit} (10 % of "
                        f"{len(observed['inventory'].get('accounts', []))} managed accounts or "
                        f"{DELETE_MAX}); rerun with --allow-deletions {deletions} if intended")
    return plan


def render_plan(plans: list[HostPlan], limit: int = 20) -> str:
    """Terraform-like text; long runs of one kind are summarised (use --json for all)."""
    out = []
    for p in plans:
        out.append(f"host {p.host}:" + ("" if p.actions else " no changes"))
        groups: dict[tuple[str, str], list[Action]] = {}
        for a in p.actions:
            groups.setdefault((a.op, a.resource.split(":", 1)[0]), []).append(a)
        for (_, kind), actions in groups.items():
            out.extend(a.line() for a in actions[:limit])
            if len(actions) > limit:
                out.append(f"    … and {len(actions) - limit} more {kind} actions")
        out.extend(f"  ! {n}" for n in p.notes)
        out.extend(f"  ERROR: {e}" for e in p.errors)
        if p.refused:
            out.append(f"  REFUSED: {p.refused}")
    totals = {op: sum(p.count(op) for p in plans) for op in SYMBOL}
    out.append(f"Plan: {totals['create']} to create, {totals['change']} to change, "
               f"{totals['delete']} to delete.")
    return "\n".join(out)
