"""The hub part of the plan as a pure function: desired state and observed facts in, changes out.

No host, no hub: the facts are what the agent would report, built from the desired state.
"""

from __future__ import annotations

import copy

import pytest

from wodsync.catalog import validate
from wodsync.engine.change import Action
from wodsync.engine.desired import DesiredHost, LiveSeat, desired_state
from wodsync.engine.plan import plan_host
from wodsync.secrets import Placeholders

from facts import converged

HOST = "hub-emea"


def desired(repo, live: list[LiveSeat] | None = None) -> DesiredHost:
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    return desired_state(catalog, HOST, Placeholders(), live)


def changes(plan) -> set[tuple[str, str]]:
    return {(c.action.value, str(c.address)) for c in plan.changes}


def test_converged_host_has_an_empty_plan_and_says_why(repo):
    d = desired(repo)
    plan = plan_host(d, converged(d))
    assert plan.changes == [] and plan.errors == []
    reasons = {str(n.address): n.reason for n in plan.noops}
    assert reasons["sysctl:vm.max_map_count"] == "is 600000"
    assert reasons["service:jupyterhub"].startswith("is running (pid 4242)")


def test_upgrading_jupyterhub_is_one_line_and_restarts_the_hub(repo):
    facts = converged(desired(repo))
    repo.replace(f"hosts/{HOST}.yaml", 'version: "6.1.1"', 'version: "6.2.0"')
    plan = plan_host(desired(repo), facts)
    assert changes(plan) == {("update", "package:pip/jupyterhub"),
                             ("update", "service:jupyterhub")}
    detail = next(c.detail for c in plan.changes if str(c.address) == "package:pip/jupyterhub")
    assert detail == "6.1.1 → jupyterhub==6.2.0"


def test_a_fresh_host_plans_the_environment_the_service_and_defers_hub_users(repo):
    d = desired(repo)
    facts = converged(d)
    facts["package"].update(pip=None, npm={"configurable-http-proxy": None})
    facts["kernel"]["kernels"] = []
    facts["service"] = {"running": False, "pid": None, "fingerprint": None}
    down = {"ok": False, "down": True, "error": "connection refused"}
    facts["hub_user"] = {"api": down, "users": None, "managed": []}
    facts["hub_group"] = {"api": down, "groups": None, "managed": []}
    plan = plan_host(d, facts)
    found = changes(plan)
    assert {("create", "env:/opt/wodsync/hub"), ("create", "package:pip/jupyterhub"),
            ("create", "package:npm/configurable-http-proxy"), ("create", "service:jupyterhub"),
            ("update", "hub_user:*"), ("update", "hub_group:*")} <= found
    assert plan.errors == []
    deferred = next(c for c in plan.changes if str(c.address) == "hub_user:*")
    assert deferred.detail == "hub not running: users are checked after it starts"
    assert any("python3 should come with the packages" in n for n in plan.notes)


def test_a_hub_that_went_down_is_started_and_its_users_deferred_not_recreated(repo):
    """A stopped hub: users and groups are unknown, not absent — never planned as creates."""
    d = desired(repo)
    facts = converged(d)
    facts["service"] = {"running": False, "pid": None, "fingerprint": None}
    down = {"ok": False, "down": True, "error": "connection refused"}
    facts["hub_user"] = {"api": down, "users": None, "managed": list(d.want["hub_user"].users)}
    facts["hub_group"] = {"api": down, "groups": None, "managed": ["students"]}
    plan = plan_host(d, facts)
    assert changes(plan) == {("create", "service:jupyterhub"), ("update", "hub_user:*"),
                             ("update", "hub_group:*")}


def test_a_running_hub_refusing_the_token_is_an_error_not_a_mass_create(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub_user"]["api"] = {"ok": False, "down": False, "error": "GET /users: HTTP 403"}
    facts["hub_user"]["users"] = None
    plan = plan_host(d, facts)
    assert not any(c.address.kind == "hub_user" for c in plan.changes)
    assert plan.errors and "HTTP 403" in plan.errors[0]


def test_hub_users_are_deleted_only_when_wodsync_made_them(repo):
    d = desired(repo)
    facts = converged(d)
    facts["hub_user"]["users"] += ["student2001", "admin"]
    facts["hub_user"]["managed"].append("student2001")
    plan = plan_host(d, facts)
    assert changes(plan) == {("delete", "hub_user:student2001")}
    assert any("1 hub users not created by wodsync" in n and "admin" in n for n in plan.notes)


def test_group_membership_drift_adds_and_removes(repo):
    d = desired(repo, [LiveSeat("student41", "s-41", "WKSHP-Git101")])
    facts = converged(d)
    members = facts["hub_group"]["groups"]["WKSHP-Git101"]
    members.remove("student41")
    members.append("student1")
    plan = plan_host(d, facts)
    (change,) = plan.changes
    assert str(change.address) == "hub_group:WKSHP-Git101"
    assert (change.data.add, change.data.remove) == (["student41"], ["student1"])


def test_a_kernel_nobody_installs_is_an_error(repo):
    d = desired(repo)
    facts = converged(d)
    facts["kernel"]["kernels"] = []
    plan = plan_host(d, facts)
    assert any("kernel python3 is not installed" in e for e in plan.errors)


def test_an_environment_students_cannot_enter_is_an_error(repo):
    d = desired(repo)
    facts = converged(d)
    facts["package"]["closed"] = "/root"
    plan = plan_host(d, facts)
    assert any("/root is not open to others" in e for e in plan.errors)


@pytest.mark.parametrize("in_use", [True, False])
def test_a_seat_in_use_keeps_its_password(repo, in_use):
    live = [LiveSeat("student5", "s-1", "WKSHP-Python101")] if in_use else []
    d = desired(repo, live)
    facts = copy.deepcopy(converged(d))
    facts["account"]["accounts"]["student5"]["locked"] = False
    plan = plan_host(d, facts)
    assert changes(plan) == (set() if in_use else {("update", "account:student5")})


def test_workshop_groups_hold_the_seats_of_live_sessions(repo):
    live = [LiveSeat("student42", "s-42", "WKSHP-Git101"),
            LiveSeat("student71", "s-71", "WKSHP-API101")]
    d = desired(repo, live)
    groups = d.want["hub_group"].groups
    assert groups["WKSHP-Git101"] == ("student42",) and groups["WKSHP-API101"] == ("student71",)
    assert len(groups["students"]) == 2000
    facts = converged(desired(repo))
    plan = plan_host(d, facts)
    assert changes(plan) == {("update", "hub_group:WKSHP-Git101"),
                             ("update", "hub_group:WKSHP-API101"),
                             # hub-emea is a systemd host: each seat's user slice gets its
                             # workshop's limits (the `limits` kind)
                             ("create", "slice:user-2042.slice.d/50-wodsync-limits.conf"),
                             ("create", "slice:user-2071.slice.d/50-wodsync-limits.conf")}


def test_a_pool_shrink_over_a_seat_in_use_is_refused_naming_the_session(repo):
    d = desired(repo, [LiveSeat("student2000", "s-2000", "WKSHP-Python101")])
    facts = converged(d)
    repo.replace("catalog/students.yaml", "last: 2000", "last: 1999")
    shrunk = desired(repo, [LiveSeat("student2000", "s-2000", "WKSHP-Python101")])
    plan = plan_host(shrunk, facts, allow_deletions=10)
    assert plan.refused and "student2000, held by session s-2000" in plan.refused


def test_a_seat_the_host_says_is_in_use_is_never_locked(repo):
    """Even when the store does not know the session (a lost or wrong database)."""
    d = desired(repo)
    facts = converged(d)
    facts["account"]["accounts"]["student9"]["locked"] = False
    facts["seat"]["occupied"]["student9"] = {"session": "s-9", "state": "active"}
    plan = plan_host(d, facts)
    assert changes(plan) == set()
    assert any("seat student9 holds session s-9 on the host, unknown to the store" in n
               for n in plan.notes)


def test_a_seat_the_host_holds_for_a_session_the_store_does_not_know_keeps_group_and_limits(
        repo):
    """A CREATE made after the plan read the store (the daemon's race), or another store's
    session: the seat's hub group and user slice stay; once the host's record is gone they go."""
    facts = converged(desired(repo, [LiveSeat("student42", "s-42", "WKSHP-Git101")]))
    stale = desired(repo)
    kept = plan_host(stale, facts)
    assert changes(kept) == set(), kept.changes
    assert "seat student42 is held on the host by a session the store does not know: its " \
           "limits stay" in {n.reason for n in kept.noops}
    del facts["seat"]["occupied"]["student42"]
    released = plan_host(stale, facts)
    assert changes(released) == {("update", "hub_group:WKSHP-Git101"),
                                 ("delete", "slice:user-2042.slice.d/50-wodsync-limits.conf")}


def test_the_plan_round_trips_through_json_with_its_data(repo):
    from wodsync.engine.plan import HostPlan

    d = desired(repo)
    facts = converged(d)
    facts["sysctl"]["values"]["vm.max_map_count"] = "65530"
    facts["hub_group"]["groups"]["students"].remove("student41")
    facts["file"]["files"].pop("/etc/skel/.bashrc")
    plan = plan_host(d, facts, {"sysctl": "abc"})
    again = HostPlan.from_json(plan.to_json())
    assert again.changes == plan.changes and again.digests == {"sysctl": "abc"}
    assert {c.action for c in again.changes} == {Action.UPDATE, Action.CREATE}
    text = str(plan.to_json())
    assert "<secret" not in text, "a plan never carries a secret, not even a placeholder"


def test_a_host_left_unconverged_names_the_pending_changes() -> None:
    from wodsync.daemon.hosts import classify
    from wodsync.engine.change import Address, Change
    from wodsync.engine.plan import HostPlan
    from wodsync.engine.reconcile import HostResult

    changes = [Change(Action.UPDATE, Address("file", f"/etc/f{i}")) for i in range(7)]
    result = HostResult("h", plan=HostPlan("h", changes=changes),
                        after=HostPlan("h", changes=changes))
    message = classify(result, drift=True).message
    assert message.startswith("7 changes still pending after the apply: ~ file:/etc/f0, ")
    assert message.endswith("~ file:/etc/f4 and 2 more")


def test_an_account_with_a_seats_name_and_uid_not_made_by_wodsync_is_an_error(repo):
    d = desired(repo)
    facts = converged(d)
    seat = sorted(facts["account"]["managed"])[0]
    facts["account"]["managed"].remove(seat)  # same name, uid and gid, but someone else's
    plan = plan_host(d, facts)
    assert [e for e in plan.errors if seat in e] == [
        f"seat {seat} exists (uid {facts['account']['accounts'][seat]['uid']}) but was not "
        "made by wodsync: left alone; remove the account, or give the pool another prefix "
        "or uid_base"]
    assert not [c for c in plan.changes if str(c.address) == f"account:{seat}"]
