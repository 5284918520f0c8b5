"""The hub part of the plan as a pure function: desired state and observed facts in, actions out.

No host, no hub: the facts are what the agent would report, built from the desired state.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from wodsync.catalog import validate
from wodsync.engine.desired import DesiredHost, desired_state
from wodsync.engine.plan import plan_host
from wodsync.secrets import Placeholders

HOST = "hub-emea"


def desired(repo) -> DesiredHost:
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    return desired_state(catalog, HOST, Placeholders())


def converged(d: DesiredHost) -> dict[str, Any]:
    """The facts of a host where everything is as desired."""
    hub = d.hub
    assert hub is not None
    return {
        "accounts": {a.name: {"uid": a.uid, "gid": a.gid, "home": a.home, "shell": a.shell,
                              "locked": True, "home_facts": {"mode": 0o700, "uid": a.uid,
                                                             "gid": a.gid, "entries": None}}
                     for a in d.accounts.values()},
        "group_members": sorted(d.accounts),
        "files": {p: {"sha256": f.sha256, "mode": f.mode, "owner": f.owner, "group": f.group}
                  for p, f in d.files.items()},
        "sysctl": dict(d.sysctl),
        "hub": {"pip": {"jupyterhub": "6.1.1", "jupyterlab": "4.6.6", "requests": "2.32.3",
                        "pandas": "2.2.3"},
                "apt": {"git": "1:2.39.5-0+deb12u2", "python3-venv": "3.11.2-1+b1"},
                "npm": {"configurable-http-proxy": "4.6.3"}, "kernels": ["python3"],
                "closed": None,
                "service": {"running": True, "pid": 4242, "fingerprint": hub.fingerprint},
                "api": {"ok": True, "users": list(hub.users),
                        "groups": {g: list(m) for g, m in hub.groups.items()}}},
        "inventory": {"accounts": sorted(d.accounts), "files": sorted(d.files),
                      "hub_users": list(hub.users), "hub_groups": sorted(hub.groups)},
    }


def actions(plan) -> set[tuple[str, str]]:
    return {(a.op, a.resource) for a in plan.actions}


def test_converged_host_has_an_empty_plan(repo):
    d = desired(repo)
    plan = plan_host(d, converged(d))
    assert plan.actions == [] and plan.errors == []


def test_upgrading_jupyterhub_is_one_line_and_restarts_the_hub(repo):
    before = desired(repo)
    facts = converged(before)
    repo.replace(f"hosts/{HOST}.yaml", 'version: "6.1.1"', 'version: "6.2.0"')
    plan = plan_host(desired(repo), facts)
    assert actions(plan) == {("change", "package:pip/jupyterhub"),
                             ("change", "service:jupyterhub")}
    detail = next(a.detail for a in plan.actions if a.resource == "package:pip/jupyterhub")
    assert detail == "6.1.1 → jupyterhub==6.2.0"


def test_a_fresh_host_plans_the_environment_the_service_and_every_hub_user(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub"].update(pip=None, npm={"configurable-http-proxy": None}, kernels=[],
                        service={"running": False, "pid": None, "fingerprint": None},
                        api={"ok": False, "down": True, "error": "connection refused"})
    plan = plan_host(d, facts)
    found = actions(plan)
    assert {("create", "env:/opt/wodsync/hub"), ("create", "package:pip/jupyterhub"),
            ("create", "package:npm/configurable-http-proxy"),
            ("create", "service:jupyterhub"), ("create", "hub_group:students")} <= found
    assert sum(r.startswith("hub_user:") for _, r in found) == 2000
    assert plan.errors == []
    assert any("python3 should come with the packages" in n for n in plan.notes)


def test_a_running_hub_refusing_the_token_is_an_error_not_a_mass_create(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub"]["api"] = {"ok": False, "down": False, "error": "GET /users: HTTP 403"}
    plan = plan_host(d, facts)
    assert not any(a.resource.startswith("hub_") for a in plan.actions)
    assert plan.errors and "HTTP 403" in plan.errors[0]


def test_hub_users_are_deleted_only_when_wodsync_made_them(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub"]["api"]["users"] += ["student2001", "admin"]
    facts["inventory"]["hub_users"].append("student2001")
    plan = plan_host(d, facts)
    assert actions(plan) == {("delete", "hub_user:student2001")}
    assert any("1 hub users not created by wodsync" in n and "admin" in n for n in plan.notes)


def test_group_membership_drift_adds_and_removes(repo):
    d = desired(repo)
    facts = converged(d)
    members = facts["hub"]["api"]["groups"]["WKSHP-Git101"]
    members.remove("student41")
    members.append("student1")
    plan = plan_host(d, facts)
    (action,) = plan.actions
    assert action.resource == "hub_group:WKSHP-Git101"
    assert action.data == {"add": ["student41"], "remove": ["student1"]}


def test_a_kernel_nobody_installs_is_an_error(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub"]["kernels"] = []
    plan = plan_host(d, facts)
    assert any("kernel python3 is not installed" in e for e in plan.errors)


def test_an_environment_students_cannot_enter_is_an_error(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub"]["closed"] = "/root"
    plan = plan_host(d, facts)
    assert any("/root is not open to others" in e for e in plan.errors)


@pytest.mark.parametrize("in_use", [True, False])
def test_a_seat_in_use_keeps_its_password(repo, in_use):
    d = desired(repo)
    facts = copy.deepcopy(converged(d))
    facts["accounts"]["student5"]["locked"] = False
    if in_use:
        facts["inventory"]["seats_in_use"] = {"student5": {"workshop": "WKSHP-Python101"}}
    plan = plan_host(d, facts)
    assert actions(plan) == (set() if in_use else {("change", "account:student5")})
