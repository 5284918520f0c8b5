"""The per-host schedule of the reconcile loop (`wodsync.daemon.schedule`), on a clock the test
moves: each host's next-due time and trigger, never two jobs of one host at once."""

from __future__ import annotations

from wodsync.daemon.schedule import Schedule
from wodsync.store import Trigger


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def schedule(resync: float = 600.0) -> tuple[Schedule, Clock]:
    clock = Clock()
    return Schedule(resync, clock), clock


def test_new_hosts_are_due_at_once_and_a_host_taken_is_never_taken_again_while_it_runs():
    s, _ = schedule()
    s.hosts(["fast", "slow"], Trigger.RESYNC)
    assert s.take() == [("fast", Trigger.RESYNC), ("slow", Trigger.RESYNC)]
    s.due_now(Trigger.COMMIT)
    assert s.take() == [], "both are running: neither starts twice"
    assert s.running() == ["fast", "slow"]


def test_a_commit_reaches_an_idle_host_at_once_and_a_busy_one_when_it_finishes():
    s, clock = schedule()
    s.hosts(["fast", "slow"])
    s.take()
    s.finished("fast", None)
    s.due_now(Trigger.COMMIT)  # a new commit while slow still applies the previous one
    assert s.take() == [("fast", Trigger.COMMIT)]
    s.finished("fast", None)
    clock.t += 200
    s.finished("slow", None)
    assert s.take() == [("slow", Trigger.COMMIT)], "the commit it missed, at once"


def test_a_commit_its_running_job_already_works_on_does_not_run_it_twice():
    """A daemon's first round: the loop may take the hosts of a deployment a moment before the
    event announcing it arrives. The host whose job read that revision is not run again for
    it; one that had not yet read its deployment is, and so is any event not a revision."""
    s, _ = schedule()
    s.hosts(["fast", "slow"], Trigger.RESYNC)
    s.take()
    s.started("fast", "r1")
    s.due_now(Trigger.COMMIT, revision="r1")
    s.finished("fast", None)
    s.finished("slow", None)
    assert s.take() == [("slow", Trigger.COMMIT)], "fast already had r1"
    s, _ = schedule()
    s.hosts(["fast", "slow"])
    assert len(s.take()) == 2
    s.started("fast", "r1")
    s.due_now(Trigger.COMMIT, revision="r2")
    s.due_now(Trigger.MANUAL, ["slow"])
    s.finished("fast", None)
    s.finished("slow", None)
    assert sorted(s.take()) == [("fast", Trigger.COMMIT), ("slow", Trigger.MANUAL)]


def test_each_host_resyncs_on_its_own_clock_and_a_failed_one_after_its_back_off():
    s, clock = schedule(resync=600)
    s.hosts(["a", "b"])
    s.take()
    s.finished("a", None)
    clock.t += 100
    s.finished("b", 20.0)  # failed: back-off 20 s
    assert s.next_in() == 20.0
    clock.t += 20
    assert s.take() == [("b", Trigger.RESYNC)]
    s.finished("b", None)
    clock.t += 479
    assert s.take() == []
    clock.t += 1
    assert s.take() == [("a", Trigger.RESYNC)], "600 s after a's own last run"


def test_the_pool_bound_leaves_the_others_due_and_a_probe_names_one_host():
    s, _ = schedule()
    s.hosts(["a", "b", "c"])
    assert [n for n, _ in s.take(2)] == ["a", "b"]
    assert s.take(0) == []
    assert s.take(5) == [("c", Trigger.COMMIT)]
    for name in "abc":
        s.finished(name, None)
    s.due_now(Trigger.PROBE, ["b"])
    assert s.take() == [("b", Trigger.PROBE)]


def test_a_host_leaving_the_catalog_is_forgotten_once_its_job_ends():
    s, _ = schedule()
    s.hosts(["a", "gone"])
    s.take()
    s.hosts(["a"])
    assert s.running() == ["a", "gone"], "still running: kept until it ends"
    s.finished("gone", None)
    s.hosts(["a"])
    assert s.clock("gone") is None
