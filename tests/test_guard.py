"""The seat guard against real processes of real seats on this machine (a local host without a
hub; idle servers are `test_guard_idle.py`'s): miners killed in one round, a CPU hog's rule
acted on after its minutes, old kernels stopped, processes of free seats killed, `report` and
`--dry-run` only recording, and a quarantined seat given to nobody until an operator releases it.

Accounts `wodtn1`…`wodtn8`, uids 53501-53508; homes under /home/wodsync-test-guard. (This
session's brief gave the guard uids 60501-60550, which the catalog refuses — a pool's ids stay
within 1000..59999, below Debian's reserved 60000-64999 — so the block is the same one 7000
lower.)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wodsync.agent.run import kill_uid
from wodsync.controller import Controller, open_controller
from wodsync.guard.actions import Sentinel
from wodsync.secrets import Secrets
from wodsync.store import Participant, SessionState

from helpers import ended, remove_test_accounts
from sessionlab import wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv (./bootstrap test)")

PREFIX, UID_BASE, SEATS = "wodtn", 53500, 8
HOMES = Path("/home/wodsync-test-guard")
PYTHON = "/usr/bin/python3"


def _range_taken() -> str | None:
    for entry in pwd.getpwall():
        if UID_BASE < entry.pw_uid <= UID_BASE + 50 and not entry.pw_name.startswith(PREFIX):
            return f"uid {entry.pw_uid} is {entry.pw_name}'s: this module's range is taken"
    return None


def _cleanup() -> None:
    for uid in range(UID_BASE + 1, UID_BASE + 51):  # userdel refuses a user still running
        kill_uid(uid)
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def _remove_seats(seats: range) -> None:
    """Only these seats' accounts (the module's own lab may be alive)."""
    for n in seats:
        kill_uid(UID_BASE + n)
        subprocess.run(["userdel", f"{PREFIX}{n}"], check=False, capture_output=True)
        subprocess.run(["groupdel", f"{PREFIX}{n}"], check=False, capture_output=True)


def write_catalog(root: Path, state: Path) -> None:
    HOMES.mkdir(mode=0o755, exist_ok=True)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/workshops/WKSHP-Guard/workshop.yaml":
            "name: Guard\ncapacity: 4\nseats: {first: 1, last: 4}\nlocation: lab\n"
            "duration: 2\n",
        "catalog/workshops/WKSHP-Guard/1-Intro.ipynb":
            '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {state}\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """The seats, made once for the module by a real apply."""
    taken = _range_taken()
    if taken:
        pytest.skip(taken)
    _cleanup()
    tmp = tmp_path_factory.mktemp("guard")
    root = tmp / "repo"
    write_catalog(root, tmp / "state-lab1")
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "tmp": tmp}
    _cleanup()


class Guarded:
    """A controller whose catalog has `guard.yaml` = the test's rules, and the processes the
    test started as seats (all ended at teardown)."""

    def __init__(self, lab: dict[str, Path], state: Path, rules: str) -> None:
        (lab["root"] / "catalog/guard.yaml").write_text(f"interval: 5\nrules:\n{rules}")
        # The host's guard state starts afresh: no CPU sample or report of an earlier test.
        shutil.rmtree(lab["tmp"] / "state-lab1/guard", ignore_errors=True)
        self.ctl: Controller = open_controller(lab["root"], state, None, Secrets())
        self.sentinel = Sentinel(self.ctl.sessions)
        self.procs: list[subprocess.Popen[bytes]] = []

    def run_as(self, seat: int, argv: list[str]) -> int:
        """A real process of seat `seat` (its uid and gid), as a student would start it."""
        uid = UID_BASE + seat
        proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                 *argv], cwd="/", stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # started once the last exec'd command line shows
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            # and /proc/<pid> is the seat's: during an exec the kernel shows it as root's for
            # a moment (a new memory map is not yet dumpable), and the guard skips it then
            if not cmdline.startswith((b"setpriv", b"bash")) and \
                    Path(f"/proc/{proc.pid}").stat().st_uid == uid:
                return proc.pid
            time.sleep(0.02)
        raise AssertionError(f"{argv} did not start")

    def alive(self, pid: int) -> bool:
        for proc in self.procs:
            if proc.pid == pid:
                proc.poll()
        return not ended(pid)

    def dies(self, pid: int, seconds: float = 10) -> bool:
        """Whether `pid` ends within `seconds`: a SIGKILL is delivered a moment after the
        agent that sent it has answered."""
        deadline = time.monotonic() + seconds
        while self.alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def round(self, dry_run: bool = False) -> list[dict[str, object]]:
        report = self.sentinel.run("lab1", dry_run=dry_run)
        return [{"rule": e.rule, "action": e.action, "outcome": e.outcome, "seat": e.username,
                 "session": e.session_id, **e.evidence} for e in report.events]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for s in self.ctl.store.sessions.find(live=True):
            self.ctl.sessions.purge(s.id, "test teardown")
        self.ctl.close()


@pytest.fixture
def guarded(lab, tmp_path) -> Iterator[Callable[[str], Guarded]]:
    made: list[Guarded] = []

    def make(rules: str) -> Guarded:
        made.append(Guarded(lab, tmp_path / "state", rules))
        return made[-1]

    yield make
    for g in made:
        g.close()
    (lab["root"] / "catalog/guard.yaml").unlink(missing_ok=True)
    (lab["root"] / "catalog/mail.yaml").unlink(missing_ok=True)


def alice(n: int) -> Participant:
    return Participant(f"Alice {n}", f"alice{n}@example.org", "ACME")


def sleeper(name: str) -> list[str]:
    """`sleep` running under another name (argv[0]), as a renamed miner binary would."""
    return ["bash", "-c", f'exec -a "{name}" sleep 300']


MAIL = ("smtp: {host: 127.0.0.1, port: 2525}\nfrom: wod@example.org\n"
        "operators: [ops@example.org, oncall@example.org]\nportal_url: http://127.0.0.1/\n")


def test_a_process_named_like_a_miner_is_killed_within_one_round(guarded, lab):
    (lab["root"] / "catalog/mail.yaml").write_text(MAIL)  # the operators hear of it
    g = guarded("  - {name: miners, type: banned, action: kill}\n")  # the default patterns
    s = g.ctl.sessions.create("WKSHP-Guard", alice(1)).session
    miner = g.run_as(s.seat, sleeper("./xmrig --donate-level 1"))
    notebook = g.run_as(s.seat, sleeper("jupyter-lab"))
    found = g.round()
    assert [(e["rule"], e["action"], e["outcome"], e["seat"], e["session"]) for e in found] == \
        [("miners", "kill", "killed", s.username, s.id)]
    assert found[0]["pid"] == miner and "xmrig" in str(found[0]["cmdline"])
    assert g.dies(miner), "killed in that very round"
    assert g.alive(notebook), "only the miner"
    assert g.ctl.store.sessions.get(s.id).state is SessionState.ACTIVE, "kill leaves the session"
    events = g.ctl.store.guard.events("lab1")
    assert [(e.rule, e.outcome) for e in events] == [("miners", "killed")]
    told = g.ctl.store.outbox.list(kind="operator")
    assert sorted(m.to for m in told) == ["oncall@example.org", "ops@example.org"]
    assert told[0].context["event"] == "seat guard: miners (kill)"
    assert "xmrig" in told[0].context["details"] and s.username in told[0].context["details"]


def test_report_only_records_once_and_a_dry_run_kills_nothing(guarded, cli, lab):
    g = guarded("  - {name: miners, type: banned, action: report, patterns: [minerd]}\n"
                "  - {name: hogs, type: banned, action: kill, patterns: ['^ethminer']}\n")
    s = g.ctl.sessions.create("WKSHP-Guard", alice(2)).session
    miner = g.run_as(s.seat, sleeper("minerd -o stratum"))
    found = g.round()
    assert [(e["rule"], e["outcome"]) for e in found] == [("miners", "reported")]
    assert g.alive(miner), "report is a dry run of its rule"
    assert g.round() == [], "a process is reported once, not every round"
    other = g.run_as(s.seat, sleeper("ethminer --farm"))
    ran = cli("guard", "run", "--dry-run", "--root", lab["root"], "--state",
              g.ctl.state)
    assert ran.exit_code == 0, ran.output
    assert "rule hogs: report → reported (dry run)" in ran.output
    assert g.alive(other), "--dry-run: nothing is killed"
    assert g.round()[0]["outcome"] == "killed", "without --dry-run the rule acts"
    assert g.dies(other)


def test_a_process_of_a_free_seat_is_killed_and_a_seat_in_use_is_left(guarded):
    g = guarded("  - {name: nobody-home, type: free_seat, action: kill}\n")
    s = g.ctl.sessions.create("WKSHP-Guard", alice(3)).session
    free_seat = 7  # outside the workshop's range: never given in this module
    stray = g.run_as(free_seat, sleeper("sleep"))
    working = g.run_as(s.seat, sleeper("python3 -m http.server"))
    found = g.round()
    assert [(e["rule"], e["seat"], e["outcome"], e["session"]) for e in found] == \
        [("nobody-home", f"{PREFIX}{free_seat}", "killed", None)]
    assert g.dies(stray)
    assert g.alive(working)


def test_a_kernel_past_its_age_is_stopped_and_a_young_one_is_not(guarded):
    g = guarded("  - {name: old-kernels, type: kernel_age, action: kill, hours: 0.0005}\n")
    s = g.ctl.sessions.create("WKSHP-Guard", alice(4)).session
    kernel = [PYTHON, "-c", "import time; time.sleep(300)", "-m", "ipykernel_launcher", "-f",
              "/tmp/kernel-1.json"]
    old = g.run_as(s.seat, kernel)
    time.sleep(2.0)  # past 0.0005 h = 1.8 s
    young = g.run_as(s.seat, kernel)
    found = g.round()
    assert [(e["rule"], e["pid"], e["outcome"]) for e in found] == \
        [("old-kernels", old, "killed")]
    assert float(found[0]["age"]) >= 1.8  # type: ignore[arg-type]
    assert g.dies(old)
    assert g.alive(young)


def test_a_cpu_hog_past_its_minutes_is_quarantined_until_an_operator_releases_it(
        guarded, cli, lab):
    """CPU over the rule's percent in two rounds 1.8 s apart (minutes: 0.03); the seat is
    quarantined (the session purged), the next CREATE gets another seat, and `seat release`
    gives it back."""
    g = guarded("  - {name: hog, type: cpu, action: quarantine, percent: 10, minutes: 0.03}\n")
    s = g.ctl.sessions.create("WKSHP-Guard", alice(5)).session
    hog = g.run_as(s.seat, [PYTHON, "-c", "while True: pass"])
    idle = g.run_as(s.seat, sleeper("sleep"))
    assert g.round() == [], "the first round only samples"
    time.sleep(1.0)
    assert g.round() == [], "over the percent, not yet for its minutes"
    time.sleep(1.0)
    found = g.round()
    assert [(e["rule"], e["action"], e["session"], e["pid"]) for e in found] == \
        [("hog", "quarantine", s.id, hog)]
    assert float(found[0]["cpu"]) >= 10 and "while True" in str(found[0]["cmdline"])  # type: ignore[arg-type]
    assert str(found[0]["outcome"]).startswith(f"quarantined; session {s.id} ended")
    assert g.ctl.store.sessions.get(s.id).state is SessionState.ENDED
    assert g.dies(hog) and g.dies(idle), "the PURGE ended the seat's processes"
    [q] = g.ctl.store.guard.quarantined("lab1")
    assert (q.seat, q.username, q.rule) == (s.seat, s.username, "hog")

    other = g.ctl.sessions.create("WKSHP-Guard", alice(6)).session
    assert other.seat != s.seat, "a quarantined seat is given to nobody"
    released = cli("seat", "release", "lab1", str(s.seat), "--yes", "--root", lab["root"],
                   "--state", g.ctl.state)
    assert released.exit_code == 0, released.output
    assert "its quarantine lifted" in released.output
    again = g.ctl.sessions.create("WKSHP-Guard", alice(7)).session
    assert again.seat == s.seat, "released: the first free seat again"


def test_the_daemon_runs_the_round_every_interval_and_shows_it(tmp_path):
    """`wodsync daemon` on a catalog with `guard.yaml` (interval 1 s): a miner started on a
    seat of its pool is killed by the daemon's own loop; the event is in /api/v1/status and
    counted in /metrics."""
    import requests

    from gitorigin import Origin
    from helpers import until
    from sshd import free_port

    homes = tmp_path / "homes"
    homes.mkdir()
    tmp_path.chmod(0o755)
    origin = Origin(tmp_path / "git")
    origin.write("catalog/locations.yaml", "locations:\n  - name: lab\n")
    origin.write("catalog/students.yaml", f"pools:\n  test:\n    prefix: {PREFIX}\n"
                 f"    first: 11\n    last: 14\n    uid_base: {UID_BASE}\n"
                 f"    gid_base: {UID_BASE}\n    home_root: {homes}\n")
    origin.write("catalog/workshops/README.md", "none yet\n")
    origin.write("catalog/guard.yaml", "interval: 1\nrules:\n"
                 "  - {name: miners, type: banned, action: kill}\n")
    origin.write("hosts/local.yaml", "address: localhost\ntransport: local\nlocation: lab\n"
                 f"pool: test\nstate_dir: {tmp_path}/hoststate\n")
    origin.commit("a guarded lab")
    port, token = free_port(), "api-" + os.urandom(6).hex()
    log = (tmp_path / "daemon.log").open("ab")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "wodsync"), "daemon", "--repo", str(origin.origin),
         "--state", str(tmp_path / "state"), "--listen", f"127.0.0.1:{port}"],
        env=dict(os.environ, WODSYNC_API_TOKEN=token), stdout=log, stderr=log)
    auth = {"Authorization": f"Bearer {token}"}
    miner = None
    try:
        def get(path: str) -> requests.Response:
            return requests.get(f"http://127.0.0.1:{port}{path}", headers=auth, timeout=5)

        def ready() -> bool:
            try:
                return get("/readyz").ok
            except requests.ConnectionError:
                return False

        until(ready, "the daemon never got ready")
        miner = subprocess.Popen(["setpriv", f"--reuid={UID_BASE + 12}",
                                  f"--regid={UID_BASE + 12}", "--clear-groups", *sleeper("xmrig")])
        until(lambda: miner.poll() is not None, "the daemon's guard killed the miner",
              timeout=30)
        events = get("/api/v1/status").json()["guard"]["events"]
        assert [(e["rule"], e["action"], e["outcome"], e["seat"]) for e in events] == \
            [("miners", "kill", "killed", f"{PREFIX}12")]
        assert events[0]["evidence"]["pid"] == miner.pid
        assert 'wodsync_guard_actions_total{action="kill",rule="miners"} 1.0' in \
            get("/metrics").text
    finally:
        if miner is not None and miner.poll() is None:
            miner.kill()
        daemon.terminate()
        daemon.wait(timeout=120)
        log.close()
        _remove_seats(range(11, 15))
