"""Checks and scores against real seats on this machine: accounts of the pool `wodqa` (uids
41001-41008, homes under /home/wodsync-test-checks), a local host without a hub, sessions made
and ended by the real `SessionService`, the checks run by the real agent as the seat's user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from wodsync.agent.run import BASE_PATH, processes_of
from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.controller import open_controller
from wodsync.engine.remote import HostError
from wodsync.secrets import Secrets
from wodsync.sessions import checks
from wodsync.sessions.service import CannotCheck
from wodsync.store import Participant, SessionState

from apiserver import serving
from helpers import ended, remove_test_accounts
from sessionlab import wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real accounts)")

PREFIX, BASE = "wodqa", 41000
HOMES = Path("/home/wodsync-test-checks")
TOKEN = "checks-test-token-0123456789abcdef"

ANSWER = """#!/bin/bash
# the answer file must hold 42
grep -qx 42 "$HOME/WKSHP-Checks/answer.txt" 2>/dev/null && exit 0
echo "some noise first"
echo "FAIL: answer.txt should hold 42"
echo "FAIL: a second FAIL line is not the message"
exit 1
"""
DONE = """#!/usr/bin/env python3
import os, sys
if os.path.isfile(os.path.join(os.environ["HOME"], "WKSHP-Checks", "done.txt")):
    sys.exit(0)
print("FAIL: create done.txt in your workshop folder")
sys.exit(1)
"""
SOLVE_ANSWER = "#!/bin/sh\necho 42 > \"$HOME/WKSHP-Checks/answer.txt\"\n"
SOLVE_DONE = "#!/bin/sh\ntouch \"$HOME/WKSHP-Checks/done.txt\"\n"
# What a check sees: printed as its FAIL message, so the test reads it back.
PROBE = """#!/bin/bash
echo "FAIL: uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$PWD vars=$(env | cut -d= -f1 \
| sort | tr '\\n' ,) PATH=$PATH WORKSHOP=$WORKSHOP STUDENT=$STUDENT HOME=$HOME USER=$USER"
exit 1
"""
# Reads the path the student wrote in ~/target: another seat's file, in the test.
PEEK = """#!/bin/bash
if cat "$(cat "$HOME/target")" 2>/dev/null; then exit 0; fi
echo "FAIL: could not read it"
exit 1
"""
HANG = """#!/bin/bash
sleep 600 &
echo $! > "$HOME/child.pid"
echo $$ > "$HOME/check.pid"
sleep 600
"""


def _taken_by_others() -> list[str]:
    return [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
            if BASE < e.pw_uid <= BASE + 40 and not e.pw_name.startswith(PREFIX)]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def write_catalog(root: Path, tmp: Path) -> None:
    """Three workshops on one local host: scored steps with solve scripts, probes of what a
    check sees, and a check that hangs (a 2 s timeout); one without checks."""
    checks = ("checks:\n"
              "  - {name: answer, script: checks/answer.sh, points: 2, "
              "solve: solve/answer.sh}\n"
              "  - {name: done, script: checks/done.py, solve: solve/done.sh}\n")
    _write(root, {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n    last: 8\n"
            f"    uid_base: {BASE}\n    gid_base: {BASE}\n    home_root: {HOMES}\n",
        "catalog/workshops/WKSHP-Checks/workshop.yaml":
            "name: Checks\ncapacity: 3\nseats: {first: 1, last: 3}\nlocation: lab\n"
            "duration: 1\n" + checks,
        "catalog/workshops/WKSHP-Checks/README.md": "Put 42 in answer.txt\n",
        "catalog/workshops/WKSHP-Checks/checks/answer.sh": ANSWER,
        "catalog/workshops/WKSHP-Checks/checks/done.py": DONE,
        "catalog/workshops/WKSHP-Checks/solve/answer.sh": SOLVE_ANSWER,
        "catalog/workshops/WKSHP-Checks/solve/done.sh": SOLVE_DONE,
        "catalog/workshops/WKSHP-Probe/workshop.yaml":
            "name: Probe\ncapacity: 2\nseats: {first: 4, last: 5}\nlocation: lab\n"
            "duration: 1\nchecks:\n  - {name: probe, script: probe.sh}\n"
            "  - {name: peek, script: peek.sh}\n",
        "catalog/workshops/WKSHP-Probe/probe.sh": PROBE,
        "catalog/workshops/WKSHP-Probe/peek.sh": PEEK,
        "catalog/workshops/WKSHP-Hang/workshop.yaml":
            "name: Hang\ncapacity: 1\nseats: {first: 6, last: 6}\nlocation: lab\n"
            "duration: 1\ncheck_timeout: 2\nchecks:\n  - {name: hang, script: hang.sh}\n"
            "  - {name: after, script: after.sh}\n",
        "catalog/workshops/WKSHP-Hang/hang.sh": HANG,
        "catalog/workshops/WKSHP-Hang/after.sh": "#!/bin/sh\nexit 0\n",
        "catalog/workshops/WKSHP-Plain/workshop.yaml":
            "name: Plain\ncapacity: 1\nseats: {first: 7, last: 7}\nlocation: lab\n"
            "duration: 1\n",
        "catalog/workshops/WKSHP-Plain/README.md": "no checks\n",
        "hosts/lab1.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    })


def _cleanup() -> None:
    remove_test_accounts(PREFIX, BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict[str, Path]]:
    taken = _taken_by_others()
    if taken:
        pytest.skip(f"uids {BASE + 1}-{BASE + 40} are taken by others: {', '.join(taken)}")
    _cleanup()
    HOMES.mkdir(mode=0o755)
    tmp = tmp_path_factory.mktemp("checks")
    root = tmp / "repo"
    write_catalog(root, tmp)
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "tmp": tmp}
    _cleanup()


@pytest.fixture
def ctl(lab, tmp_path):
    controller = open_controller(lab["root"], tmp_path / "state", None, Secrets())
    yield controller
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def _create(ctl, workshop: str, n: int = 0):
    return ctl.sessions.create(workshop, Participant(f"Ann {n}", f"ann{n}@example.org",
                                                     "ACME")).session


def _steps(scored) -> dict[str, tuple[bool, str]]:
    return {s.name: (s.passed, s.message) for s in scored.steps}


def test_a_correct_solution_scores_100_and_the_scripts_stay_out_of_the_home(ctl):
    s = _create(ctl, "WKSHP-Checks")
    home = HOMES / s.username / "WKSHP-Checks"
    assert (home / "README.md").exists()
    assert not (home / "checks").exists() and not (home / "solve").exists(), \
        "check and solve scripts never reach the student"
    solved = ctl.sessions.check(s.id, "solve")  # the content CI's runner: same path
    assert solved.score == 100, solved
    assert (home / "answer.txt").read_text() == "42\n"
    uid = pwd.getpwnam(s.username).pw_uid
    assert (home / "answer.txt").stat().st_uid == uid, "the solve ran as the seat's user"
    scored = ctl.sessions.check(s.id)
    assert scored.score == 100
    assert _steps(scored) == {"answer": (True, ""), "done": (True, "")}
    assert [(st.name, st.points) for st in scored.steps] == [("answer", 2), ("done", 1)]


def test_an_incorrect_solution_scores_0_with_the_first_fail_line(ctl):
    s = _create(ctl, "WKSHP-Checks")
    (HOMES / s.username / "WKSHP-Checks/answer.txt").write_text("41\n")
    scored = ctl.sessions.check(s.id)
    assert scored.score == 0
    assert _steps(scored) == {
        "answer": (False, "answer.txt should hold 42"),
        "done": (False, "create done.txt in your workshop folder")}


def test_a_partial_solution_scores_its_share_of_the_points(ctl):
    s = _create(ctl, "WKSHP-Checks")
    (HOMES / s.username / "WKSHP-Checks/done.txt").write_text("")
    assert ctl.sessions.check(s.id).score == 33  # 1 point of 3
    (HOMES / s.username / "WKSHP-Checks/answer.txt").write_text("42\n")
    (HOMES / s.username / "WKSHP-Checks/done.txt").unlink()
    assert ctl.sessions.check(s.id).score == 67  # 2 points of 3, rounded


def test_a_hanging_check_and_its_children_are_killed_at_the_timeout(ctl):
    s = _create(ctl, "WKSHP-Hang")
    uid = pwd.getpwnam(s.username).pw_uid
    started = time.monotonic()
    scored = ctl.sessions.check(s.id)
    took = time.monotonic() - started
    hang, after = scored.steps
    assert (hang.passed, hang.message) == (False, "did not finish within 2 s")
    assert 2 <= hang.seconds < 10, hang.seconds
    assert after.passed, "the next check runs after a killed one"
    assert scored.score == 50 and took < 30
    home = HOMES / s.username
    pids = [int((home / name).read_text()) for name in ("check.pid", "child.pid")]
    assert all(ended(pid) for pid in pids), "the check and its child were killed"
    assert processes_of(uid) == [], "nothing the check started outlives it"


def test_a_check_runs_as_the_seat_with_a_fixed_environment_and_cannot_read_another_home(ctl):
    mine, other = _create(ctl, "WKSHP-Probe", 1), _create(ctl, "WKSHP-Probe", 2)
    secret = HOMES / other.username / "WKSHP-Probe/secret.txt"
    secret.write_text("the other seat's work\n")
    (HOMES / mine.username / "target").write_text(str(secret))
    entry = pwd.getpwnam(mine.username)
    scored = ctl.sessions.check(mine.id)
    probe, peek = scored.steps
    assert not peek.passed and peek.message == "could not read it", \
        "another seat's home is out of a check's reach"
    assert probe.message == (
        f"uid={entry.pw_uid} gid={entry.pw_gid} groups={entry.pw_gid} pwd={entry.pw_dir} "
        "vars=HOME,LANG,LOGNAME,PATH,PWD,SHLVL,STUDENT,USER,WORKSHOP,_, "
        f"PATH={BASE_PATH} WORKSHOP=WKSHP-Probe STUDENT={mine.username} "
        f"HOME={entry.pw_dir} USER={mine.username}")
    # the same probe reads its own seat's file: the refusal above is the other home's mode
    (HOMES / mine.username / "target").write_text(str(HOMES / mine.username / "target"))
    assert ctl.sessions.check(mine.id).steps[1].passed


def test_the_score_is_stored_at_cleanup_before_the_home_is_wiped(ctl):
    s = _create(ctl, "WKSHP-Checks")
    (HOMES / s.username / "WKSHP-Checks/answer.txt").write_text("42\n")
    ended = ctl.sessions.cleanup(s.id)
    assert ended.state is SessionState.ENDED and ended.score == 67
    assert list((HOMES / s.username).iterdir()) == []
    assert "score 67" in ctl.store.sessions.events(s.id)[-1].message
    assert ctl.store.sessions.get(s.id).score == 67
    with pytest.raises(CannotCheck, match="is ended: only an active session"):
        ctl.sessions.check(s.id)
    dep = ctl.sessions.deployment()  # past the service: the host itself refuses the seat
    with pytest.raises(HostError, match=f"seat {s.username} is not in use by session {s.id}"):
        checks.run(ctl.sessions._call, dep.catalog, ended, dep.secrets)


def test_a_workshop_without_checks_is_refused_and_its_cleanup_has_no_score(ctl):
    s = _create(ctl, "WKSHP-Plain")
    with pytest.raises(CannotCheck, match="WKSHP-Plain declares no checks"):
        ctl.sessions.check(s.id)
    assert ctl.sessions.cleanup(s.id).score is None


def test_the_api_and_the_cli_answer_the_score(ctl, lab):
    s = _create(ctl, "WKSHP-Checks")
    plain = _create(ctl, "WKSHP-Plain", 1)
    (HOMES / s.username / "WKSHP-Checks/done.txt").write_text("")
    context = Context(ctl.store, sessions=ctl.sessions, api_token=lambda: TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(create_app(context)) as base:
        url = f"{base}/api/v1/sessions/{s.id}/check"
        assert requests.post(url, timeout=60).status_code == 401
        answer = requests.post(url, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["session"], body["score"]) == (s.id, 33)
        assert [(st["name"], st["passed"], st["message"]) for st in body["steps"]] == [
            ("answer", False, "answer.txt should hold 42"), ("done", True, "")]
        refused = requests.post(f"{base}/api/v1/sessions/{plain.id}/check", headers=auth,
                                timeout=60)
        assert refused.status_code == 409
        assert "declares no checks" in refused.json()["detail"]
        env = {**os.environ, "WODSYNC_API_TOKEN": TOKEN}
        remote = wodsync(lab["root"], lab["tmp"], "session", "check", s.id, "--api", base,
                         env=env)
        assert remote.returncode == 0, remote.stdout + remote.stderr
        assert "score: 33/100" in remote.stdout
        assert "answer (2 pt) failed" in remote.stdout
        assert "answer.txt should hold 42" in remote.stdout
        no_checks = wodsync(lab["root"], lab["tmp"], "session", "check", plain.id, "--api",
                            base, env=env)
        assert no_checks.returncode == 1 and "declares no checks" in no_checks.stderr


def test_the_cli_checks_a_session_of_the_local_store(lab, tmp_path):
    state = tmp_path / "state"
    created = wodsync(lab["root"], state, "session", "create", "WKSHP-Checks", "--email",
                      "cli@example.org", "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    sid = json.loads(created.stdout)["id"]
    try:
        checked = wodsync(lab["root"], state, "session", "check", sid, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        body = json.loads(checked.stdout)
        assert (body["session"], body["score"]) == (sid, 0)
        assert [st["message"] for st in body["steps"]] == [
            "answer.txt should hold 42", "create done.txt in your workshop folder"]
    finally:
        purged = wodsync(lab["root"], state, "session", "purge", sid)
        assert purged.returncode == 0, purged.stdout + purged.stderr
