"""A session's score: its workshop's checks run on its seat, the passed points over all points.

The controller sends each check script as data, exactly as the repository holds it (read
without following a link, never rendered); the host runs them as the seat's user
(`agent.checks`) and answers each step's outcome. The score is computed here, from those
outcomes, so a host can never claim a score the steps do not add up to. The same path runs a
workshop's `solve` scripts (`solve_payload`) for the content CI: only the scripts differ.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from wodsync.agent.protocol import CheckScript, SeatCheckRequest
from wodsync.catalog.loader import Catalog
from wodsync.catalog.repofs import RepoFileError, load_repo_file
from wodsync.sessions import seat
from wodsync.store import Session

Which = Literal["script", "solve"]


class ChecksError(Exception):
    """The checks cannot be run: none to run, or a script cannot be read (the message says
    why)."""


class BadAnswer(ChecksError):
    """The host's answer cannot be scored: unreadable steps, or not the steps sent."""


@dataclass(frozen=True)
class Step:
    """One check's outcome: passed, the student's message (the script's `FAIL:` line, or why
    it did not pass), its points and seconds."""

    name: str
    points: int
    passed: bool
    message: str
    seconds: float


@dataclass(frozen=True)
class Score:
    """0–100: passed points over all points, rounded half up; each step's outcome."""

    score: int
    steps: list[Step]

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "steps": [vars(s) for s in self.steps]}

    def text(self) -> str:
        return f"score {self.score}"


def score_of(steps: Sequence[Step]) -> int:
    """Passed points × 100 / all points, rounded half up (no float on the way)."""
    total = sum(s.points for s in steps)
    if total <= 0:
        raise ChecksError("no points to score")
    passed = sum(s.points for s in steps if s.passed)
    return (200 * passed + total) // (2 * total)


def scripts(catalog: Catalog, key: str, which: Which = "script") -> list[CheckScript]:
    """Workshop `key`'s check (or solve) scripts as data, each as the repository holds it;
    a step without a solve script has none to send."""
    ws = catalog.workshops[key]
    folder = catalog.folders[key].path.relative_to(catalog.root).as_posix()
    found: list[CheckScript] = []
    for check in ws.checks:
        rel = check.script if which == "script" else check.solve
        if rel is None:
            continue
        try:
            data = load_repo_file(catalog.root, f"{folder}/{rel}").data
        except RepoFileError as exc:
            raise ChecksError(f"{key}: check {check.name}: {exc}") from None
        found.append({"name": check.name, "points": check.points,
                      "data": base64.b64encode(data).decode()})
    return found


def check_payload(catalog: Catalog, session: Session, secrets: Any,
                  which: Which = "script") -> SeatCheckRequest:
    """`seat_check` for the session's seat: the checks (or the solve scripts) and the
    workshop's timeout."""
    payload: SeatCheckRequest = seat.base_payload(catalog, session, secrets)
    payload["checks"] = scripts(catalog, session.workshop, which)
    payload["check_timeout"] = float(catalog.workshops[session.workshop].check_timeout)
    return payload


def _step(value: Any) -> Step:
    try:
        step = Step(str(value["name"]), int(value["points"]), bool(value["passed"]),
                    str(value["message"])[:500], float(value["seconds"]))
    except (TypeError, KeyError, ValueError) as exc:
        raise BadAnswer(f"the host's answer has an unreadable step: {exc}") from None
    if step.points < 1:
        raise BadAnswer(f"the host's answer gives step {step.name} {step.points} points")
    return step


def score(answer: Any) -> Score:
    """The score of the host's steps (`seat_check`'s answer, or a CLEANUP's `checks`)."""
    if not isinstance(answer, list) or not answer:
        raise BadAnswer("the host answered no step")
    steps = [_step(v) for v in answer]
    return Score(score_of(steps), steps)


def add_to_cleanup(payload: Any, catalog: Catalog, session: Session) -> str:
    """A CLEANUP's payload gets the workshop's checks, scored on the host before its hook.
    A script that cannot be read costs the score, never the release: the problem is returned
    (for the log) and the CLEANUP goes without checks. A retried release that already has its
    score does not run them again (the home may be half emptied by then)."""
    ws = catalog.workshops.get(session.workshop)
    if ws is None or not ws.checks or session.score is not None:
        return ""  # none to run, or scored by an earlier try of this release
    try:
        payload["checks"] = scripts(catalog, session.workshop)
    except ChecksError as exc:
        return f"checks not run: {exc}"
    payload["check_timeout"] = float(ws.check_timeout)
    return ""


def run(call: Callable[[str, str, Any], Any], catalog: Catalog, session: Session,
        secrets: Any, which: Which = "script") -> Score:
    """Run the session's workshop's checks (or, `which="solve"`, its solve scripts) on its seat
    through `call(host, op, payload)`; the score of what came back. For a run of solve scripts
    the score says how many of them succeeded."""
    payload = check_payload(catalog, session, secrets, which)
    if not payload["checks"]:
        raise ChecksError(f"workshop {session.workshop} has no "
                          f"{'checks' if which == 'script' else 'solve scripts'}")
    scored = score(call(session.host, "seat_check", payload)["steps"])
    asked = [(c["name"], c["points"]) for c in payload["checks"]]
    if [(s.name, s.points) for s in scored.steps] != asked:
        raise BadAnswer("the host answered other steps than the ones sent")
    return scored
