"""The source as an object with its own condition, seen by monitoring (issue 24, item 5): a real
daemon following a real bare repository that is moved away and back, whose revisions folder
turns read-only, whose head turns invalid — status, `/readyz`, the metrics and the log say so,
failed fetches back off, and a host's message and gauge follow the host's own condition."""

from __future__ import annotations

import itertools
import os
import pwd
import subprocess
from datetime import datetime

import pytest

from helpers import remove_test_accounts, until, wodsync
from sourcelab import lab_repo, read_only, running

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

PREFIX, UID_BASE = "wodtbq", 56800  # seats 56801-56802


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture
def repo(tmp_path):
    taken = [p for p in pwd.getpwall() if 56801 <= p.pw_uid <= 56840
             and not p.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"uids 56801-56840 are taken by others: {taken[0].pw_name}")
    remove_test_accounts(PREFIX, UID_BASE)
    tmp_path.chmod(0o755)
    yield lab_repo(tmp_path, PREFIX, UID_BASE)
    remove_test_accounts(PREFIX, UID_BASE)


def test_a_remote_moved_away_stalls_the_source_backs_off_and_a_poke_brings_it_back(
        repo, tmp_path):
    """The remote moved away: FetchFailed, one warning line per failed fetch and no
    traceback, each try later than the last by twice as long (interval 1 s: 2, 4 s …),
    /readyz 503 once Stalled past --not-ready-after; moved back, a signed webhook fetches at
    once — before the back-off's next try — and the source is Ready, /readyz 200 again."""
    with running(repo, tmp_path / "state", "--interval", "1", "--resync", "3600",
                 "--not-ready-after", "4") as d:
        until(lambda: d.get("/readyz").ok, f"never ready:\n{d.text()}")
        # ready from the deployment on; the fetch's times are recorded a moment later
        until(lambda: d.source()["lastFetch"], f"the first fetch never recorded:\n{d.text()}")
        first = d.source()
        assert (first["condition"], first["reason"], first["fetchFailures"]) == (
            "Ready", "RevisionDeployed", 0)
        assert first["lastFetch"] and d.metric("wodsync_source_ready") == 1.0
        assert d.metric(f'wodsync_source_revision_info{{revision="{repo.first}"}}') == 1.0

        moved = repo.origin.with_name("moved.git")
        repo.origin.rename(moved)
        attempts: list[str] = []

        def failed(n: int) -> bool:
            s = d.source()
            if s["lastFetchAttempt"] not in attempts and s["fetchFailures"]:
                attempts.append(s["lastFetchAttempt"])
            return s["fetchFailures"] >= n

        until(lambda: failed(1), f"the moved remote never failed a fetch:\n{d.text()}")
        s = d.source()
        assert (s["condition"], s["reason"]) == ("Stalled", "FetchFailed")
        assert "cannot fetch branch main" in s["message"] and s["since"]
        assert d.metric("wodsync_source_ready") == 0.0
        if (datetime.now(at(s["since"]).tzinfo) - at(s["since"])).total_seconds() < 3:
            assert d.get("/readyz").ok, "Stalled for less than the threshold: still ready"
        until(lambda: failed(3), "the third failed fetch never came", timeout=30)
        gaps = [(at(b) - at(a)).total_seconds() for a, b in itertools.pairwise(attempts)]
        assert len(gaps) >= 2 and gaps[0] >= 2 and gaps[1] >= 4, (attempts, gaps)
        s = d.source()
        planned = (at(s["nextFetch"]) - at(s["lastFetchAttempt"])).total_seconds()
        assert planned >= 2 ** s["fetchFailures"], s  # the interval doubled per failure
        refused = d.get("/readyz")
        assert refused.status_code == 503 and "Stalled" in refused.text, refused.text
        assert "FetchFailed" in refused.text
        assert d.metric("wodsync_source_fetch_failures_total") >= 3

        checked = wodsync("status", "--state", tmp_path / "state")
        assert "source: Stalled (FetchFailed)" in checked.stdout, checked.stdout

        warnings = d.lines(r"WARNING .*source: cannot fetch branch main")
        assert len(warnings) == len(d.lines("cannot fetch branch main")) >= 3
        assert "Traceback" not in d.text()

        moved.rename(repo.origin)
        due = at(d.source()["nextFetch"])
        assert d.poke(repo.first).status_code == 202
        until(lambda: d.source()["condition"] == "Ready", "never Ready after the move back")
        back = d.source()
        assert at(back["lastFetch"]) < due, "the webhook fetched at once, not at the back-off"
        assert (back["reason"], back["fetchFailures"]) == ("RevisionDeployed", 0)
        assert at(back["since"]) > at(s["since"])
        until(lambda: d.get("/readyz").ok, "readyz stayed 503 once the source was Ready")
        assert d.metric("wodsync_source_ready") == 1.0


def test_a_read_only_revisions_folder_refuses_the_export_and_recovers(repo, tmp_path):
    """A new commit the daemon cannot write out (its revisions folder read-only): fetched,
    but Stalled ExportRefused with the system's reason, no traceback, retried with
    back-off; writable again, the commit deploys."""
    state = tmp_path / "state"
    with running(repo, state, "--interval", "1", "--resync", "3600") as d:
        until(lambda: d.get("/readyz").ok, f"never ready:\n{d.text()}")
        with read_only(state / "revisions"):
            repo.write("catalog/variables.yaml", "BRANDING: Lab\n")
            new = repo.commit("a variable")
            until(lambda: d.source()["reason"] == "ExportRefused",
                  f"the export was never refused:\n{d.text()}")
            s = d.source()
            assert s["condition"] == "Stalled" and "Read-only file system" in s["message"], s
            assert new[:12] in s["message"] and s["lastGoodRevision"] == repo.first
            assert s["lastFetch"] == s["lastFetchAttempt"], "the fetch itself worked"
            until(lambda: d.source()["fetchFailures"] >= 2, "the export was not retried")
            assert d.lines(r"WARNING .*ExportRefused") and "Traceback" not in d.text()
        until(lambda: d.source()["lastGoodRevision"] == new,
              f"the commit never deployed once writable:\n{d.text()}", timeout=30)
        assert (d.source()["condition"], d.source()["fetchFailures"]) == ("Ready", 0)


def host_of(d, name: str = "local") -> dict:
    return {h["host"]: h for h in d.status()["hosts"]}.get(name, {})


def test_an_invalid_head_leaves_host_messages_and_gauges_in_step(repo, tmp_path):
    """A host that fails (its system file under a read-only folder) is Stalled with its
    error and gauge 0; once it applies, Ready with no error left and gauge 1. Then an
    invalid head: the source Stalled (gauge 0), the host still Ready on the last good
    revision with a message of now, its gauge 1 — each agreeing with its condition. Removed
from the catalog, the host is no longer reported."""
    target = tmp_path / "etc-lab"
    target.mkdir()
    repo.write("catalog/system.yaml", f"files:\n  - template: motd.j2\n    path: {target}/motd\n")
    repo.write("templates/motd.j2", "Welcome to {{ host.name }}\n")
    repo.write("hosts/local.yaml", "address: localhost\ntransport: local\nlocation: lab\n"
               f"pool: test\nstate_dir: {tmp_path}/hoststate\n")
    repo.commit("a local host")
    with running(repo, tmp_path / "state", "--interval", "1", "--resync", "3600") as d:
        with read_only(target):
            until(lambda: host_of(d).get("condition") == "Stalled",
                  f"the host never stalled:\n{d.text()}")
            stalled = host_of(d)
            assert "Read-only file system" in (stalled["lastError"] or ""), stalled
            assert stalled["stalledSince"]
            assert d.metric('wodsync_host_ready{host="local"}') == 0.0
        d.reconcile()  # at once, not after the host's back-off
        until(lambda: host_of(d).get("condition") == "Ready", f"never Ready:\n{d.text()}")
        ready = host_of(d)
        assert ready["lastError"] is None and ready["stalledSince"] is None, ready
        assert "Read-only" not in ready["message"]
        assert d.metric('wodsync_host_ready{host="local"}') == 1.0

        repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
                   .replace("last: 2", "lasst: 2"))
        bad = repo.commit("a typo")
        until(lambda: d.source().get("headRevision") == bad, "the bad head was never seen")
        s = d.source()
        assert (s["condition"], s["reason"]) == ("Stalled", "InvalidRevision")
        assert d.metric("wodsync_source_ready") == 0.0
        host = host_of(d)
        assert (host["condition"], host["lastError"]) == ("Ready", None), host
        assert d.metric('wodsync_host_ready{host="local"}') == 1.0
        assert (target / "motd").read_text() == "Welcome to local\n"

        # The host leaves the catalog: it is no longer reported (status, readiness, gauge)
        repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
                   .replace("lasst: 2", "last: 2"))
        (repo.work / "hosts/local.yaml").unlink()
        gone = repo.commit("the host leaves")
        until(lambda: d.source().get("lastGoodRevision") == gone, "never deployed")
        until(lambda: "local" not in {h["host"] for h in d.status()["hosts"]},
              f"the removed host is still reported:\n{d.text()}")
        assert d.metric('wodsync_host_ready{host="local"}') is None
        assert "host local left the catalog" in d.text()
    subprocess.run(["rm", "-rf", str(target)], check=True)
