"""Every script in bench/ runs end to end at a tiny size, so that none breaks unnoticed.

The README's figures are printed by these scripts; a script that no longer runs would leave
figures nobody can reproduce. Each runs as a user runs it (a process of its own, this tree's
package first on the path) on the real components it needs at its real size, with a few
accounts instead of 2000, and each test checks the lines the README quotes from it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubs import PROXY

PROJECT = Path(__file__).resolve().parent.parent
ROOT = os.geteuid() == 0
SSHD = Path("/usr/sbin/sshd").exists()
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (./bootstrap test)")
needs_sshd = pytest.mark.skipif(not (ROOT and SSHD), reason="needs root and sshd")
needs_hub = pytest.mark.skipif(
    not (ROOT and SSHD) or PROXY is None or shutil.which("shc") is None,
    reason="needs root, sshd, configurable-http-proxy and shc (./bootstrap test)")

# script → the arguments of its smoke size (the sizes its docstring names)
SMOKE: dict[str, list[str]] = {
    "validate.py": ["--workshops", "2", "--runs", "1", "--corpus", "/nonexistent"],
    "cli.py": ["--runs", "1", "--workshops", "2"],
    "accounts.py": ["--seats", "5", "--sample", "2", "--runs", "1"],
    "engine.py": ["--seats", "20", "--repeat", "1", "--ansible-sizes", "1,2"],
    "daemon.py": ["--rounds", "1", "--local-seats", "4", "--hosts", "1", "--seats", "4",
                  "--window", "1", "--resync", "5"],
    "egress.py": ["--sizes", "0,5", "--runs", "1"],
    "sessions.py": ["--seats", "20", "--creates", "1", "--concurrent", "2", "--probes", "1",
                    "--no-corpus", "--force"],
    "mail.py": ["--runs", "2", "--concurrent", "2", "--seats", "4"],
    "guard.py": ["--seats", "20", "--busy", "3", "--rounds", "2"],
    "portal.py": ["--seats", "4", "--rounds", "2"],
    "journey.py": ["--count", "3", "--single", "1"],
    "badges.py": ["--sessions", "5"],
    "agent.py": ["--calls", "3"],
    "tokens.py": ["--calls", "20", "--stored", "3"],
    "contentci.py": ["--runs", "1"],
    "sweep.py": ["--files", "300", "--seat-files", "5"],
    "liveupdate.py": ["--seats", "3", "--force"],
    "hotseats.py": ["--creates", "2", "--notebooks", "2"],
}

# Scripts with no smoke size, and why: each would take longer than a smoke test may (60 s).
NO_SMOKE: dict[str, str] = {
    "loginstorm.py": "a hub started and two storms of servers (3 participants: about 2.7 min)",
}


def bench(script: str, timeout: float = 300) -> str:
    """Run bench/`script` at its smoke size; its output, or the test fails with it."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    done = subprocess.run([sys.executable, str(PROJECT / "bench" / script), *SMOKE[script]],
                          cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"bench/{script} exited {done.returncode}:\n{out[-3000:]}"
    return out


def test_every_bench_script_has_a_smoke_size() -> None:
    assert sorted(p.name for p in (PROJECT / "bench").glob("*.py")) == sorted([*SMOKE,
                                                                                *NO_SMOKE])


def test_validate_prints_its_time_against_the_parse_floor() -> None:
    out = bench("validate.py")
    assert "validate: 2 workshops" in out
    assert re.search(r"validate = [0-9.]+× the floor", out), out


def test_cli_prints_help_and_review_against_their_floors() -> None:
    out = bench("cli.py")
    assert re.search(r"wodsync --help +[0-9.]+ s +floor `python3 -c pass`", out), out
    assert re.search(r"wodsync review of 8 changed files +[0-9.]+ s +floor", out), out


@pytest.mark.skipif(not ROOT or shutil.which("nft") is None, reason="needs root and nft")
def test_egress_times_a_seats_rules_against_an_idle_nft() -> None:
    out = bench("egress.py")
    assert re.search(r"^ +5 +[0-9.]+ ms +[0-9.]+ ms +[0-9.]+ ms +[0-9.]+ ms$", out, re.M), out


@needs_root
def test_accounts_sets_newusers_against_the_same_work() -> None:
    out = bench("accounts.py")
    assert "(5 accounts, 5 homes)" in out, out  # newusers made every account and home
    assert re.search(r"accounts \+ bare homes: newusers / \(accountsdb \+ homes\) +[0-9.]+ x",
                     out), out
    assert re.search(r"useradd x5, fitted from x2 and x4", out), out


@needs_hub
def test_engine_converges_and_compares_with_ansible_fitted_from_two_sizes() -> None:
    out = bench("engine.py", timeout=600)
    assert "created 20 accounts" in out, out
    assert "created 20 hub users" in out, out
    # Ansible's side ran, or says why it could not be installed
    assert (re.search(r"fresh converge of 20 seats .* is [0-9]+× faster", out)
            or "no positive cost per account between 1 and 2 accounts" in out  # noise, loaded
            or "ansible: skipped, ansible-core could not be installed" in out), out


@needs_sshd
def test_daemon_times_a_merge_to_live_and_the_idle_fleet() -> None:
    out = bench("daemon.py")
    assert re.search(r"Ready with the commit applied: median [0-9.]+ s", out), out
    assert ("one forced round" in out) or ("idle daemon: skipped" in out), out


@needs_hub
def test_sessions_times_a_seat_to_a_working_lab() -> None:
    out = bench("sessions.py", timeout=600)
    assert "1 sequential CREATEs" in out and ", 0 failures" in out, out
    assert re.search(r"seat usable \(wall: .*\) p50 +[0-9]+ ms", out), out
    assert "2 created, 0 failed" in out, out
    assert re.search(r"2 CLEANUPs at once \(bursting\): [0-9.]+ s, 0 not ended", out), out
    assert re.search(r"2 CLEANUPs at once \(each alone\): [0-9.]+ s, 0 not ended", out), out


@needs_root
def test_mail_prints_create_to_credentials_mail_beside_its_baselines() -> None:
    out = bench("mail.py")
    assert re.search(r"CREATE → credentials mail in the sink: p50 +[0-9.]+ ms", out), out
    assert re.search(r"baseline, bare CREATE \(its answer\): +p50 +[0-9.]+ ms", out), out
    assert "2 of 2 credentials mails delivered, 0 twice" in out, out


def test_guard_times_a_round_beside_a_bare_round_trip() -> None:
    out = bench("guard.py")
    assert "(6 processes in 3 seats), 4 rules, 2 rounds, 0 findings" in out, out
    assert re.search(r"baseline: bare agent round trip \(version\) +[0-9.]+ ms", out), out
    assert re.search(r"guard round \(agent round trip\) +[0-9.]+ ms", out), out
    assert re.search(r"CPU at a 30 s interval: [0-9.]+ % of one core", out), out


@needs_root
def test_portal_times_a_click_to_the_credentials_beside_the_bare_create() -> None:
    out = bench("portal.py")
    assert "portal: 2 rounds, interleaved" in out, out
    assert re.search(r"bare API CREATE \(baseline\) +p50 +[0-9]+ ms", out), out
    assert re.search(r"click → page with credentials +p50 +[0-9]+ ms", out), out


@needs_root
def test_journey_registers_at_once_and_counts_every_mail_once() -> None:
    out = bench("journey.py")
    assert re.search(r"1 clicks one at a time → session page: p50 \d+ ms", out), out
    assert "3 confirmation clicks at once: 3 session pages with credentials" in out, out
    assert "confirmation mails: 3/3 delivered, 0 twice" in out, out
    assert "credentials mails: 4/4 delivered, 0 twice" in out, out


def test_badges_prints_the_award_and_the_signature_beside_their_baselines() -> None:
    out = bench("badges.py")
    assert "badges: 5 sessions ended on sqlite, 5 workshop badges, 2 special" in out, out
    for label in ("move to ended, with the award", "move to ended, no hook (baseline)",
                  "signed assertion (RS256, 3072)", "assertion JSON alone (baseline)"):
        assert re.search(re.escape(label) + r" +p50 +[0-9.]+ ms", out), out


@needs_sshd
def test_agent_times_one_shot_calls_beside_the_persistent_agent() -> None:
    out = bench("agent.py")
    for where in ("local", "loopback sshd"):
        for how in ("one at a time", "8 callers at once"):
            assert re.search(rf"{where}, {how} +one-shot p50 +[0-9.]+ ms .* persistent p50 "
                             r"+[0-9.]+ ms", out), out


def test_tokens_prints_the_role_check_beside_the_check_before_roles() -> None:
    out = bench("tokens.py")
    assert "tokens: 3 stored on sqlite, 20 calls each" in out, out
    for label in ("the check before roles (baseline)", "a stored token through Allow, cached",
                  "a stored token through Allow, store read per request"):
        assert re.search(re.escape(label) + r".* p50 +[0-9.]+ µs", out), out


@needs_root
def test_contentci_times_wodsync_test_beside_the_create_and_release_alone() -> None:
    out = bench("contentci.py")
    assert re.search(r"content CI: WKSHP-\S+ \(the example catalog's largest: \d+ notebooks",
                     out), out
    for label in ("wodsync test (CREATE, notebooks, release)",
                  "CREATE and release alone (baseline)", "of which the notebooks, as the seat"):
        assert re.search(re.escape(label) + r" +p50 +[0-9.]+ s", out), out


@needs_root
def test_sweep_times_the_walk_of_roots_tree_beside_the_former_walk() -> None:
    out = bench("sweep.py")
    before = re.search(r"every entry examined \(before\) +[0-9.]+ s +(\d+) entries examined", out)
    after = re.search(r"root's closed folders skimmed +[0-9.]+ s +(\d+) entries examined .* "
                      r"(\d+) names read +seat files left 0", out)
    assert before and after, out
    assert int(after[1]) < int(before[1]) and int(after[2]) >= 300, out


@needs_root
def test_liveupdate_times_a_fix_to_live_seats_beside_a_round_trip_per_seat() -> None:
    out = bench("liveupdate.py")
    assert re.search(r"one-notebook fix to 3 live seats, one round trip for the host: "
                     r"[0-9.]+ s", out), out
    assert re.search(r"baseline, one round trip per seat \(same run\): +[0-9.]+ s", out), out


@needs_root
def test_hotseats_times_a_create_on_a_hot_seat_beside_one_without() -> None:
    out = bench("hotseats.py")
    assert re.search(r"CREATE taking a hot seat\s+p50\s+[\d.]+ ms", out), out
    assert re.search(r"CREATE without a hot seat \(base\)\s+p50\s+[\d.]+ ms", out), out
    assert "speed-up at p50:" in out, out
