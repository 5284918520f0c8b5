"""The seat guard without seats: `catalog/guard.yaml` (located errors, defaults), the round's
arithmetic on real /proc readings of this test's own processes, a kill that refuses a pid whose
process is not the one judged, the store's events and quarantine (allocation skips a
quarantined seat), and how status, metrics and the daemon loop show and run it."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wodsync.agent import guard as host_guard
from wodsync.catalog import validate
from wodsync.catalog.guard import MINERS
from wodsync.daemon.metrics import Metrics
from wodsync.daemon.views import status_view
from wodsync.guard.rules import GuardOff, _proxy, round_request
from wodsync.secrets import Placeholders, Secrets
from wodsync.store import Candidate, Participant, open_store

from helpers import errors_of, only_error

GUARD = "catalog/guard.yaml"


def test_a_pattern_that_is_not_a_regular_expression_is_located_at_its_item(repo):
    repo.write(GUARD, "interval: 30\nrules:\n  - name: miners\n    type: banned\n"
                      "    action: kill\n    patterns: [xmrig, 'miner(d']\n")
    d = only_error(repo.root, "bad-pattern")
    assert (d.path, d.line, d.col) == (GUARD, 6, 23)
    assert "'miner(d' is not a regular expression: missing ), unterminated subpattern" \
        in d.message


def test_a_free_seat_rule_cannot_purge_and_rule_names_are_unique(repo):
    repo.write(GUARD, "rules:\n  - {name: a, type: free_seat, action: purge}\n")
    d = only_error(repo.root, "free-seat-action")
    assert (d.line, "needs a session") == (2, "needs a session") and "report, kill or " \
        "quarantine" in d.message
    repo.write(GUARD, "rules:\n  - {name: a, type: kernel_age}\n  - {name: a, type: cpu}\n")
    d = only_error(repo.root, "duplicate-rule")
    assert d.line == 3 and "'a' is used twice" in d.message


def test_an_unknown_rule_type_or_action_is_refused(repo):
    repo.write(GUARD, "rules:\n  - {name: a, type: banned, action: explode}\n")
    assert [e.line for e in errors_of(repo.root)] == [2]
    repo.write(GUARD, "rules:\n  - {name: a, type: mining}\n")
    assert [e.line for e in errors_of(repo.root)] == [2]


def test_defaults_are_wods_and_every_action_starts_as_report(repo):
    repo.write(GUARD, "rules:\n  - {name: miners, type: banned}\n  - {name: hog, type: cpu}\n"
                      "  - {name: old, type: kernel_age}\n")
    catalog, found = validate(repo.root)
    assert [d for d in found if d.is_error] == []
    assert catalog.guard is not None
    miners, hog, old = catalog.guard.rules
    assert tuple(miners.patterns) == MINERS and "xmrig" in MINERS  # type: ignore[union-attr]
    assert (hog.percent, hog.minutes, hog.allow) == (98.0, 5.0, ["jupyterhub-singleuser"])  # type: ignore[union-attr]
    assert old.hours == 4.0  # type: ignore[union-attr]
    assert {r.action for r in catalog.guard.rules} == {"report"}
    assert (catalog.guard.interval, catalog.guard.idle.timeout) == (60.0, 0.0)


def test_without_guard_yaml_no_round_is_asked_for(repo):
    catalog, _ = validate(repo.root)
    assert catalog.guard is None
    with pytest.raises(GuardOff, match=r"no catalog/guard\.yaml"):
        round_request(catalog, sorted(catalog.hosts)[0], Secrets())


def test_the_request_carries_the_pool_the_rules_and_the_dry_run(repo):
    repo.write(GUARD, "interval: 15\nidle: {timeout: 600}\nrules:\n"
                      "  - {name: miners, type: banned, action: kill}\n")
    catalog, _ = validate(repo.root)
    name = sorted(catalog.hosts)[0]
    req = round_request(catalog, name, Placeholders(), dry_run=True)
    pool = catalog.pools[catalog.hosts[name].pool]
    host = catalog.hosts[name]
    if host.hub and host.hub.token:  # the token travels in the request, on stdin
        assert req["hub"] == {"api": host.hub.api, "token": f"<secret {host.hub.token.secret}>"}
        assert req["idle"] == {"timeout": 600.0, "cpu_percent": 5.0, "proxy": _proxy(host)}
    assert req["pool"] == {"prefix": pool.prefix, "uid_base": pool.uid_base,
                           "first": pool.first, "last": pool.last}
    assert req["dry_run"] is True
    assert [(r["name"], r["action"]) for r in req["rules"]] == [("miners", "kill")]
    assert req["state_dir"] == catalog.hosts[name].state_dir


@pytest.mark.parametrize(("ip", "proxy"), [("", "http://127.0.0.1:8000"),
                                           ("0.0.0.0", "http://127.0.0.1:8000"),
                                           ("::", "http://[::1]:8000"),
                                           ("10.0.0.5", "http://10.0.0.5:8000")])
def test_idle_checks_ask_the_servers_through_the_proxy_on_the_host(ip, proxy):
    from wodsync.catalog.models import Host

    host = Host.model_validate({"address": "h", "transport": "local", "location": "l",
                                "pool": "p", "hub": {"ip": ip, "port": 8000}})
    assert _proxy(host) == proxy


# ---- the round's arithmetic, on this test's own processes -----------------------------------

def _mine(pid: int) -> host_guard.Proc:
    import os

    uid = os.getuid()
    pool: host_guard.GuardPool = {"prefix": "me", "uid_base": uid - 1, "first": 1, "last": 1}
    return next(p for p in host_guard.scan(pool) if p.pid == pid)


def test_cpu_is_counted_since_the_last_round_and_never_across_a_recycled_pid():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        first = _mine(spin.pid)
        state = {"uptime": host_guard._uptime(), "ticks": {str(first.pid): [first.start,
                                                                             first.ticks]}}
        time.sleep(1.0)
        now = _mine(spin.pid)
        s = host_guard.sample([now], state, host_guard._uptime())
        assert s.elapsed is not None and 0.9 < s.elapsed < 60  # the time between the rounds
        expected = (now.ticks - first.ticks) / host_guard.HZ / s.elapsed * 100
        share = host_guard._percent(s, [now.pid])
        assert share is not None and share > 0 and abs(share - expected) < 1, \
            "the ticks it used since the last round, whatever the machine's load"
        recycled = {**state, "ticks": {str(now.pid): [now.start - 1, 0]}}
        s = host_guard.sample([now], recycled, host_guard._uptime())
        assert s.used[now.pid] is None, "another process had this pid: its ticks mean nothing"
        assert host_guard._percent(host_guard.sample([now], {}, 1.0), [now.pid]) is None, \
            "a first round knows no share"
    finally:
        spin.kill()
        spin.wait()


def test_a_kill_checks_the_pid_still_names_the_process_judged():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        judged = _mine(sleeper.pid)
        other = judged._replace(start=judged.start + 1)  # the same pid, another process
        assert host_guard.kill(other) == "gone"
        assert sleeper.poll() is None, "a pid that names another process is never signalled"
        assert host_guard.kill(judged) == "killed"
        assert sleeper.wait(timeout=10) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


# ---- the store, status and metrics ----------------------------------------------------------

def test_allocation_skips_a_quarantined_seat_until_it_is_lifted(tmp_path: Path):
    store = open_store(state_dir=tmp_path / "state")
    seats = [Candidate("lab", "h1", n, f"student{n}") for n in (1, 2)]

    def allocate(n: int) -> int:
        return store.sessions.allocate("WKSHP-A", Participant("P", f"p{n}@example.org"), seats,
                                       10, 1.0, "rev", "pw").seat

    store.guard.quarantine("h1", 1, "student1", "hog", by="guard rule hog")
    assert allocate(1) == 2, "seat 1 is quarantined"
    assert store.guard.lift("h1", 1) is True
    assert allocate(2) == 1
    assert store.guard.lift("h1", 1) is False, "nothing left to lift"
    store.close()


def test_events_and_quarantined_seats_are_in_the_status_and_actions_in_metrics(tmp_path: Path):
    store = open_store(state_dir=tmp_path / "state")
    store.guard.record("h1", 3, "student3", "abc123abc123", "miners", "kill", "killed",
                       {"pid": 42, "cmdline": "xmrig -o pool", "age": 12.0},
                       now=datetime(2026, 1, 1, tzinfo=UTC))
    store.guard.quarantine("h1", 3, "student3", "miners", by="guard rule miners")
    view = status_view(store)["guard"]
    assert view["events"] == [{"at": "2026-01-01T00:00:00Z", "host": "h1", "seat": "student3",
                               "session": "abc123abc123", "rule": "miners", "action": "kill",
                               "outcome": "killed",
                               "evidence": {"pid": 42, "cmdline": "xmrig -o pool",
                                            "age": 12.0}}]
    assert [(q["host"], q["seat"], q["rule"]) for q in view["quarantined"]] == \
        [("h1", "student3", "miners")]
    metrics = Metrics()
    metrics.guard_actions.labels("miners", "kill").inc()
    assert b'wodsync_guard_actions_total{action="kill",rule="miners"} 1.0' \
        in metrics.exposition()
    store.close()


def test_the_daemon_loop_runs_each_host_every_interval_and_skips_a_host_that_is_down(
        repo, tmp_path: Path, caplog):
    from wodsync.controller import open_controller
    from wodsync.guard.actions import Sentinel
    from wodsync.guard.loop import GuardLoop

    repo.write(GUARD, "interval: 30\nrules:\n  - {name: miners, type: banned, action: kill}\n")
    ctl = open_controller(repo.root, tmp_path / "state", None, Secrets())
    try:
        hosts = sorted(ctl.deployment.catalog.hosts)
        for name in hosts:
            ctl.connections.mark_down(name, "connection refused")
        loop = GuardLoop(Sentinel(ctl.sessions))
        with caplog.at_level("INFO", logger="wodsync.guard"):
            assert loop.tick(now=1000.0) == []
            assert loop.tick(now=1029.0) == []
        skipped = [r.getMessage() for r in caplog.records]
        assert skipped == [f"guard: {h} skipped: down (connection refused)" for h in hosts], \
            "once per interval, never called while down"
        caplog.clear()
        with caplog.at_level("INFO", logger="wodsync.guard"):
            loop.tick(now=1030.0)
        assert len(caplog.records) == len(hosts), "due again after the interval"
    finally:
        ctl.close()


def test_refused_packets_that_grew_since_the_last_round_are_an_egress_finding():
    """The egress rule reads the egress kind's counters (uid → packets refused, restarting at
    0 when a CREATE sets the seat's rules): each growth is one finding with the packets."""
    import os

    rule = {"name": "egress", "type": "egress", "action": "kill"}
    me = os.getuid()
    proc = host_guard.Proc(os.getpid(), me, "me", 1, 0, "python3 fetch.py")

    def judged(counts: dict[int, int], state: dict) -> host_guard.Round:
        s = host_guard.sample([proc], state, host_guard._uptime())
        r = host_guard.Round({"rules": [rule]}, s, {}, state, counts)
        r.egress(rule)
        return r

    first = judged({me: 3, 4242: 0}, {})
    assert [(f["uid"], f["rejected"], f["pid"]) for f in first.findings] == [(me, 3, proc.pid)]
    assert first.targets == [[proc]], "kill targets the seat's running processes"
    assert judged({me: 3}, first.state()).findings == [], "nothing new refused"
    grown = judged({me: 5, 4242: 2}, first.state())
    assert [(f["uid"], f["rejected"]) for f in grown.findings] == [(me, 2), (4242, 2)]
    assert grown.targets[1] == [], "a seat with nothing running has nothing to kill"
    again = judged({me: 1}, grown.state())  # rules set again at a CREATE: counted from 0
    assert [f["rejected"] for f in again.findings] == [1]
