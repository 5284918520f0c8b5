"""Limits without root resources: located catalog errors, the cgroup v2 writes against a fake
tree in a temporary folder (this machine has cgroup v1; the v2 code is the same, its root path
is the test seam), and the systemd slices of the `limits` kind, planned from the host half's
real observation and applied with tests/fakes/systemctl (no systemd as PID 1 here).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from wodsync.agent import limits
from wodsync.agent.host import HostSide
from wodsync.agent.kinds import limits as host_half
from wodsync.catalog import validate
from wodsync.catalog.models import Limits, effective_limits
from wodsync.engine.context import LiveSeat
from wodsync.engine.desired import DesiredHost, desired_state
from wodsync.engine.kinds import limits as kind
from wodsync.engine.kinds.base import PlanContext
from wodsync.engine.plan import HostPlan, plan_host
from wodsync.secrets import Placeholders
from wodsync.sessions.seat import seat_limits

from helpers import errors_of, only_error

FAKES = Path(__file__).parent / "fakes"
PY101 = "catalog/workshops/WKSHP-Python101/workshop.yaml"
MiB, GiB = 1 << 20, 1 << 30


# ---- the catalog -------------------------------------------------------------------------------

def test_the_workshop_wins_over_the_host_over_the_pool_field_by_field(repo):
    repo.replace("hosts/hub-emea.yaml", "pool: student\n", "pool: student\nlimits: {tasks: 64}\n")
    catalog, _ = validate(repo.root)
    assert seat_limits(catalog, "hub-emea", "WKSHP-Python101") == {
        "memory_high": GiB, "memory_max": 2 * GiB, "cpu": 1.5, "tasks": 64, "disk": 2 * GiB}
    assert seat_limits(catalog, "hub-emea", "WKSHP-Git101") == {
        "memory_high": GiB, "memory_max": 1536 * MiB, "cpu": 1, "tasks": 64}
    assert effective_limits(None, None, None).is_empty()


@pytest.mark.parametrize(("value", "message"), [
    ("{disk: 2 GB}", "'2 GB' is not a size: a number and a unit K, M, G or T (e.g. 512M, 1.5G)"),
    ("{memory_max: 1.5X}", "'1.5X' is not a size"),
    ("{memory_max: 512K}", "512K is less than 1M"),
    ("{memory_high: 2G, memory_max: 1G}", "memory_high (2G) is above memory_max (1G)"),
    ("{cpu: 0}", "greater than 0"),
    ("{tasks: 0}", "greater than or equal to 1"),
    ("{cores: 2}", "cores"),
])
def test_bad_limits_are_located_errors(repo, value, message):
    repo.replace(PY101, "limits: {memory_max: 2G, cpu: 1.5, disk: 2G}\n", f"limits: {value}\n")
    found = errors_of(repo.root)
    assert len(found) == 1 and message in found[0].message, [d.text() for d in found]
    assert (found[0].path, found[0].line) == (PY101, repo.line_of(PY101, "limits:"))


def test_a_workshop_high_above_the_pool_s_max_is_an_error_at_the_workshop(repo):
    repo.replace(PY101, "limits: {memory_max: 2G, cpu: 1.5, disk: 2G}\n",
                 "limits: {memory_high: 1800M}\n")
    d = only_error(repo.root, "limits-memory")
    assert d.message == ("memory_high (1800M) is above memory_max (1536M) on hosts 'hub-emea', "
                         "'hub-amer' (workshop over host over pool limits)")
    assert (d.path, d.line) == (PY101, repo.line_of(PY101, "limits:"))


# ---- cgroup v2, against a fake tree ---------------------------------------------------------

@pytest.fixture
def v2(tmp_path) -> Path:
    """A unified cgroup tree as the kernel shows its root: the controllers it offers."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    return root


def _seat(tmp_path: Path, root: Path, workshop: str, seat: limits.SeatLimits | None) -> dict:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return {"state_dir": str(state), "user": "student7", "workshop": workshop,
            "cgroup_root": str(root), "limits": seat}


def test_cgroup_v2_writes_the_seat_s_limits_and_passes_the_controllers_down(tmp_path, v2):
    seat: limits.SeatLimits = {"memory_high": GiB, "memory_max": 1536 * MiB, "cpu": 1.5,
                               "tasks": 256}
    assert limits.set_up(_seat(tmp_path, v2, "WKSHP-Python101", seat)) == []
    for parent in (v2, v2 / "wodsync", v2 / "wodsync/WKSHP-Python101"):
        assert (parent / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    folder = v2 / "wodsync/WKSHP-Python101/student7"
    assert {f: (folder / f).read_text() for f in ("memory.high", "memory.max", "cpu.max",
                                                  "pids.max")} == {
        "memory.high": str(GiB), "memory.max": str(1536 * MiB), "cpu.max": "150000 100000",
        "pids.max": "256"}
    record = host_record(tmp_path)
    assert record == {"workshop": "WKSHP-Python101", "procs": [str(folder / "cgroup.procs")],
                      "quota": None}


def test_cgroup_v2_limits_left_out_are_max(tmp_path, v2):
    limits.set_up(_seat(tmp_path, v2, "WKSHP-Git101", {"memory_max": 512 * MiB}))
    folder = v2 / "wodsync/WKSHP-Git101/student7"
    assert [(folder / f).read_text() for f in ("memory.high", "cpu.max", "pids.max")] == \
        ["max", "max 100000", "max"]


def test_cgroup_v2_a_seat_changing_workshops_leaves_its_old_folder(tmp_path, v2):
    limits.set_up(_seat(tmp_path, v2, "WKSHP-Git101", {"tasks": 10}))
    old = v2 / "wodsync/WKSHP-Git101/student7"
    # A real cgroupfs drops a cgroup's interface files with it at rmdir; a fake tree cannot.
    for entry in old.iterdir():
        entry.unlink()
    assert limits.set_up(_seat(tmp_path, v2, "WKSHP-API101", {"tasks": 20})) == []
    assert not old.exists()
    assert (v2 / "wodsync/WKSHP-API101/student7/pids.max").read_text() == "20"
    assert host_record(tmp_path)["workshop"] == "WKSHP-API101"


def test_a_cgroup_the_kernel_would_not_remove_is_named(tmp_path, v2):
    limits.set_up(_seat(tmp_path, v2, "WKSHP-Git101", {"tasks": 10}))
    left = limits.release(_seat(tmp_path, v2, "WKSHP-Git101", None))
    assert left == [f"{v2}/wodsync/WKSHP-Git101/student7: Directory not empty"]
    assert not (tmp_path / "state/limits/student7.json").exists()


def test_no_cgroup_tree_is_a_note_and_the_seat_still_gets_its_record(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    notes = limits.set_up(_seat(tmp_path, empty, "WKSHP-Git101", {"tasks": 10}))
    assert notes == [f"limits of WKSHP-Git101: no writable cgroup tree at {empty}: "
                     "not enforced"]
    assert host_record(tmp_path)["procs"] == []


def host_record(tmp_path: Path) -> dict:
    found = limits.record.read(str(tmp_path / "state"), "student7")
    assert found is not None
    assert (tmp_path / "state/limits").stat().st_mode & 0o777 == 0o700
    return dict(found)


# ---- the limits kind: notes and systemd slices ------------------------------------------------

@pytest.fixture
def systemd(repo, tmp_path, monkeypatch):
    """hub-emea's units go to a temporary folder; `systemctl` is tests/fakes/systemctl."""
    state = tmp_path / "systemd"
    (state / "units").mkdir(parents=True)
    repo.replace("hosts/hub-emea.yaml", "  token: {secret: HUB_EMEA_TOKEN}\n",
                 f"  token: {{secret: HUB_EMEA_TOKEN}}\n  unit_dir: {state}/units\n")
    monkeypatch.setenv("FAKE_SYSTEMD_DIR", str(state))
    monkeypatch.setenv("PATH", f"{FAKES}:{os.environ['PATH']}")
    return state


def _plan(repo, seats: list[LiveSeat]) -> tuple[DesiredHost, HostPlan]:
    """hub-emea's `limits` part, planned against what the host half observes here."""
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error]
    full = desired_state(catalog, "hub-emea", Placeholders(), seats)
    desired = replace(full, want={"limits": full.want["limits"]})
    facts = {"limits": host_half.observe(desired.probes()["limits"], HostSide("/nonexistent"))}
    return desired, plan_host(desired, facts)


def _apply(desired: DesiredHost, plan: HostPlan) -> None:
    changes = plan.by_kind("limits")
    host = HostSide("/nonexistent")
    host_half.write_units(kind.batch(desired.want["limits"], changes), host)


def test_slices_are_planned_written_and_reloaded_on_a_systemd_host(repo, systemd):
    seats = [LiveSeat("student3", "s-3", "WKSHP-Python101"), LiveSeat("student45", "s-45",
                                                                      "WKSHP-Git101")]
    desired, plan = _plan(repo, seats)
    assert sorted((c.action.value, str(c.address)) for c in plan.changes) == [
        ("create", "slice:user-2003.slice.d/50-wodsync-limits.conf"),
        ("create", "slice:user-2045.slice.d/50-wodsync-limits.conf"),
        ("create", "slice:wodsync-WKSHP\\x2dAPI101.slice"),
        ("create", "slice:wodsync-WKSHP\\x2dGit101.slice"),
        ("create", "slice:wodsync-WKSHP\\x2dPython101.slice")]
    _apply(desired, plan)
    units = systemd / "units"
    assert (units / "user-2003.slice.d/50-wodsync-limits.conf").read_text().splitlines()[1:] \
        == ["[Slice]", f"MemoryHigh={GiB}", f"MemoryMax={2 * GiB}", "CPUQuota=150%",
            "TasksMax=256"]
    assert (systemd / "calls.log").read_text().splitlines() == ["daemon-reload"]
    assert (systemd / "loaded/wodsync-WKSHP\\x2dGit101.slice").exists()  # read at the reload
    _, again = _plan(repo, seats)
    assert again.changes == []
    _, fewer = _plan(repo, seats[:1])
    assert [(c.action.value, str(c.address)) for c in fewer.changes] == [
        ("delete", "slice:user-2045.slice.d/50-wodsync-limits.conf")]
    _apply(desired, fewer)
    assert not (units / "user-2045.slice.d").exists()
    assert (systemd / "calls.log").read_text().splitlines() == ["daemon-reload"] * 2


def test_the_plan_says_what_enforces_each_workshop_and_what_cannot(repo, systemd):
    _, plan = _plan(repo, [])
    cgroup = host_half.observe({"cgroup_root": limits.CGROUP_ROOT, "home_root": "/student",
                                "unit_dir": None}, HostSide("/nonexistent"))
    reasons = {str(n.address): n.reason for n in plan.noops}
    if cgroup["cgroup"] is not None:
        assert reasons["limits:WKSHP-Python101"] == (
            f"memory_high 1G, memory_max 2G, cpu 1.5, tasks 256: each seat's cgroup (cgroup "
            f"{cgroup['cgroup']}), set at its CREATE")
    if not cgroup["quota"]["on"]:
        assert f"disk: 2G for WKSHP-Python101: {cgroup['quota']['why']}" in plan.notes
        assert "has no quotas" in cgroup["quota"]["why"] or "off" in cgroup["quota"]["why"]


def test_a_host_without_a_cgroup_tree_gets_a_note_per_workshop():
    want = kind.Want({"WKSHP-X": Limits(tasks=5)}, "/home", None, {})
    plan = PlanContext("h", {"limits": want}, {"limits": {
        "cgroup": None, "quota": {"mount": "/", "fstype": "ext4", "on": False, "why": "-"},
        "units": {}}})
    kind.diff(plan)
    assert plan.notes == [f"limits of WKSHP-X (tasks 5): this host has no writable cgroup "
                          f"tree at {limits.CGROUP_ROOT}: not enforced"]
