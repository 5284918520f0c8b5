"""A workshop's `checks:` and `check_timeout` in the catalog: what is accepted, and each mistake
named where it is; the score's arithmetic; where the score shows (the ended mail, the session
page). Pure: the example repository copied per test, no host."""

from __future__ import annotations

import dataclasses

from wodsync.api.pages import page
from wodsync.catalog import validate
from wodsync.mail.compose import sample_session
from wodsync.render.content import check_paths
from wodsync.sessions.checks import ChecksError, Step, score, score_of
from wodsync.store import SessionState

from helpers import errors_of, only_error

PY = "catalog/workshops/WKSHP-Python101/workshop.yaml"
FOLDER = "catalog/workshops/WKSHP-Python101"
CHECKS = ("checks:\n"
          "  - {name: loop, script: checks/loop.sh, points: 3, solve: solve/loop.sh}\n"
          "  - {name: types, script: checks/types.py}\n")


def _with_checks(repo, checks: str = CHECKS, scripts=("checks/loop.sh", "checks/types.py",
                                                     "solve/loop.sh")) -> None:
    repo.write(PY, repo.read(PY) + checks)
    for rel in scripts:
        repo.write(f"{FOLDER}/{rel}", "#!/bin/sh\nexit 0\n")


def test_checks_are_read_with_their_defaults(repo):
    _with_checks(repo)
    catalog, found = validate(repo.root)
    assert [d for d in found if d.is_error] == []
    ws = catalog.workshops["WKSHP-Python101"]
    assert [(c.name, c.script, c.points, c.solve) for c in ws.checks] == [
        ("loop", "checks/loop.sh", 3, "solve/loop.sh"), ("types", "checks/types.py", 1, None)]
    assert ws.check_timeout == 30
    assert check_paths(ws) == {"checks/loop.sh", "checks/types.py", "solve/loop.sh"}


def test_a_missing_check_script_is_named_at_its_line(repo):
    _with_checks(repo, scripts=("checks/loop.sh", "solve/loop.sh"))
    d = only_error(repo.root, "missing-script")
    assert "'checks/types.py' is not a file in WKSHP-Python101/" in d.message
    assert (d.path, d.line) == (PY, repo.line_of(PY, "name: types"))


def test_a_missing_solve_script_is_named(repo):
    _with_checks(repo, scripts=("checks/loop.sh", "checks/types.py"))
    d = only_error(repo.root, "missing-script")
    assert "'solve/loop.sh'" in d.message and d.path == PY


def test_a_check_name_given_twice_is_refused(repo):
    _with_checks(repo, CHECKS.replace("name: types", "name: loop"))
    found = errors_of(repo.root)
    assert len(found) == 1 and "check 'loop' is named twice" in found[0].message, found
    assert (found[0].path, found[0].code) == (PY, "duplicate-check")


def test_points_and_timeout_are_bounded(repo):
    _with_checks(repo, CHECKS.replace("points: 3", "points: 0") + "check_timeout: 601\n")
    messages = " | ".join(d.text() for d in errors_of(repo.root))
    assert "points" in messages and "check_timeout" in messages, messages


def test_a_script_path_cannot_leave_the_workshop_folder(repo):
    _with_checks(repo, CHECKS.replace("checks/types.py", "../WKSHP-Git101/x.sh"))
    assert errors_of(repo.root), "a path outside the folder is refused"


def test_the_score_is_passed_points_over_all_points_rounded_half_up():
    def steps(*passed_points: tuple[bool, int]) -> list[Step]:
        return [Step(f"s{n}", p, ok, "", 0.0) for n, (ok, p) in enumerate(passed_points)]

    assert score_of(steps((True, 1), (False, 1))) == 50
    assert score_of(steps((True, 1), (False, 2))) == 33
    assert score_of(steps((True, 2), (False, 1))) == 67
    assert score_of(steps((True, 1), (False, 7))) == 13  # 12.5 rounds up
    assert score_of(steps((False, 5))) == 0 and score_of(steps((True, 5))) == 100


def test_a_host_answer_that_does_not_add_up_is_refused():
    good = {"name": "a", "points": 1, "passed": True, "message": "", "seconds": 0.1}
    assert score([good]).score == 100
    for bad in ([], None, [{**good, "points": 0}], [{"name": "a"}], [{**good, "points": "x"}]):
        try:
            score(bad)
        except ChecksError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_the_score_shows_in_the_ended_mail_and_on_the_session_page(repo, cli):
    text = cli("mail", "preview", "ended", "--root", repo.root)
    assert text.exit_code == 0, text.output
    assert "Your score: 75 / 100." in text.output  # the sample session's score
    html = cli("mail", "preview", "ended", "--root", repo.root, "--html")
    assert "Your score: <strong>75 / 100</strong>" in html.output
    ended = dataclasses.replace(sample_session(validate(repo.root)[0], None),
                                state=SessionState.ENDED, score=67)
    view = {"title": "Python 101", "badges": [], "notice": "", "refusal": "", "page": "/s/x",
            "running": False, "hub_url": None, "username": None, "password": None,
            "time_left": "", "ends_at": "", "extension_left": 0, "step_hours": 1,
            "replay": None, "feedback": None}
    body = page("session.html", session=ended, **view).body.decode()
    assert '<span id="score">Your score: 67 / 100.</span>' in body
    body = page("session.html", session=dataclasses.replace(ended, score=None),
                **view).body.decode()
    assert "score" not in body.split('id="state"')[1].split("</p>")[0]
