"""The hub part of the plan (pure): environment, packages, kernels, the hub service, hub users
and hub groups.

Packages are only ever added or upgraded, never removed: a package dropped from the catalog may
still be used by a student's notebook. Hub users and groups are deleted only when wodsync's
inventory on the host says wodsync created them.
"""

from __future__ import annotations

from typing import Any

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from wodsync.engine.action import Action, HostPlan
from wodsync.engine.hub import HubDesired, canonical


def _satisfied(req: str, version: str | None) -> bool:
    if version is None:
        return False
    spec = Requirement(req).specifier
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return not spec


def _pip_actions(hub: HubDesired, facts: dict[str, Any], plan: HostPlan) -> None:
    if facts.get("closed"):
        plan.errors.append(f"students cannot run the hub environment {hub.prefix}: "
                           f"{facts['closed']} is not open to others (a venv must not point "
                           "into a private folder such as root's home)")
    installed = facts.get("pip")
    if installed is None and hub.manage:
        plan.actions.append(Action("create", f"env:{hub.prefix}",
                                   f"hub environment (venv of {hub.python})", {"venv": True}))
    for name, req in sorted(hub.pip.items()):
        have = (installed or {}).get(canonical(name))
        if _satisfied(req, have):
            continue
        op = "create" if have is None else "change"
        detail = req if have is None else f"{have} → {req}"
        plan.actions.append(Action(op, f"package:pip/{name}", detail, {"pip": req}))


def _system_package_actions(hub: HubDesired, facts: dict[str, Any], plan: HostPlan) -> None:
    apt = facts.get("apt") or {}
    for spec in hub.apt:
        name, _, version = spec.partition("=")
        have = apt.get(name)
        if have is None or (version and have != version):
            plan.actions.append(Action("create" if have is None else "change",
                                       f"package:apt/{name}", spec, {"apt": spec}))
    npm = facts.get("npm") or {}
    for name, version in sorted(hub.npm.items()):
        have = npm.get(name)
        if have != version:
            plan.actions.append(Action("create" if have is None else "change",
                                       f"package:npm/{name}", f"{have or 'missing'} → {version}",
                                       {"npm": (name, version)}))


def _kernel_actions(hub: HubDesired, facts: dict[str, Any], plan: HostPlan) -> None:
    present = set(facts.get("kernels") or [])
    pending = {a.resource for a in plan.actions}
    for name, kernel in sorted(hub.kernels.items()):
        if name in present:
            continue
        via_pip = [r for r in kernel.pip
                   if f"package:pip/{canonical(Requirement(r).name)}" in pending]
        if kernel.install or via_pip:
            how = " ".join(kernel.install) if kernel.install else "from " + ", ".join(via_pip)
            plan.actions.append(Action("create", f"kernel:{name}", how,
                                       {"install": list(kernel.install)}))
        elif any(r.startswith(("package:pip/", "env:")) for r in pending):
            plan.notes.append(f"kernel {name} should come with the packages being installed")
        else:
            plan.errors.append(f"kernel {name} is not installed and the catalog does not say "
                               "how: give it `pip:` packages or an `install:` command")


def _service_actions(hub: HubDesired, facts: dict[str, Any], plan: HostPlan) -> None:
    if not hub.manage:
        return
    state = facts.get("service") or {}
    if not state.get("running"):
        plan.actions.append(Action("create", "service:jupyterhub", "not running",
                                   {"service": "start"}))
    elif state.get("fingerprint") != hub.fingerprint:
        plan.actions.append(Action("change", "service:jupyterhub",
                                   "configuration or version changed: restart (student "
                                   "servers keep running)", {"service": "restart"}))


def _observed_api(hub: HubDesired, facts: dict[str, Any], plan: HostPlan) -> dict[str, Any] | None:
    """Users and groups as the hub reports them; a hub wodsync is about to start has none."""
    api = facts.get("api") or {}
    if api.get("ok"):
        return api
    starting = any(a.resource == "service:jupyterhub" and a.op == "create"
                   for a in plan.actions)
    if api.get("down") and starting:
        return {"users": [], "groups": {}}
    plan.errors.append(f"hub API {hub.api} did not answer: {api.get('error')}")
    return None


def _user_actions(hub: HubDesired, api: dict[str, Any], inventory: dict[str, Any],
                  plan: HostPlan) -> None:
    have = set(api["users"])
    for name in hub.users:
        if name not in have:
            plan.actions.append(Action("create", f"hub_user:{name}", "", {"user": name}))
    mine = set(inventory.get("hub_users", []))
    extra = sorted(have - set(hub.users))
    for name in extra:
        if name in mine:
            plan.actions.append(Action("delete", f"hub_user:{name}",
                                       "server stopped first", {"user": name}))
    foreign = [n for n in extra if n not in mine]
    if foreign:
        plan.notes.append(f"{len(foreign)} hub users not created by wodsync are left alone "
                          f"({', '.join(foreign[:5])}{'…' if len(foreign) > 5 else ''})")


def _group_actions(hub: HubDesired, api: dict[str, Any], inventory: dict[str, Any],
                   plan: HostPlan) -> None:
    have: dict[str, list[str]] = api["groups"]
    # Deleting a hub user takes it out of its groups; removing it again would be refused.
    leaving = {a.resource.split(":", 1)[1] for a in plan.actions
               if a.op == "delete" and a.resource.startswith("hub_user:")}
    for name, members in sorted(hub.groups.items()):
        if name not in have:
            plan.actions.append(Action("create", f"hub_group:{name}", f"{len(members)} members",
                                       {"members": list(members)}))
            continue
        add = sorted(set(members) - set(have[name]))
        remove = sorted(set(have[name]) - set(members) - leaving)
        if add or remove:
            plan.actions.append(Action("change", f"hub_group:{name}",
                                       f"{len(add)} members to add, {len(remove)} to remove",
                                       {"add": add, "remove": remove}))
    for name in sorted(set(have) - set(hub.groups)):
        if name in inventory.get("hub_groups", []):
            plan.actions.append(Action("delete", f"hub_group:{name}", "no longer declared", {}))


def hub_actions(hub: HubDesired | None, observed: dict[str, Any], plan: HostPlan) -> None:
    if hub is None:
        return
    facts = observed.get("hub") or {}
    _pip_actions(hub, facts, plan)
    _system_package_actions(hub, facts, plan)
    _kernel_actions(hub, facts, plan)
    _service_actions(hub, facts, plan)
    if hub.token is None:
        return
    api = _observed_api(hub, facts, plan)
    if api is not None:
        _user_actions(hub, api, observed["inventory"], plan)
        _group_actions(hub, api, observed["inventory"], plan)
