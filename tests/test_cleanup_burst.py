"""CLEANUP bursts on real seats of this machine: concurrent ends of sessions on one host share
`seat_end` calls, and each seat keeps the guarantees of a release of its own — a seat whose
hook fails fails alone and stays held until its retry finishes; the others are free and given
again; the store's states and history are those of a release alone.

Accounts: prefix `wodqd`, uids 41601-41606 (pool uid_base 41600); homes under
/home/wodsync-test-cleanupburst. Removed at the end, also on failure.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.controller import open_controller
from wodsync.secrets import Secrets
from wodsync.sessions.service import NoSeat
from wodsync.store import Participant, SessionState

from apiserver import serving
from helpers import remove_test_accounts, until
from sessionlab import wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

PREFIX, UID_BASE, SEATS = "wodqd", 41600, 6
HOMES = Path("/home/wodsync-test-cleanupburst")
TOKEN = "cleanupburst-" + "t" * 24


def _remove_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def _write_catalog(root: Path, tmp: Path) -> None:
    """One local host, a pool of six seats, a workshop of all six whose cleanup hook refuses a
    seat while `tmp/fail-<seat>` exists."""
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/workshops/WKSHP-End/workshop.yaml":
            f"name: End\ncapacity: {SEATS}\nseats: {{first: 1, last: {SEATS}}}\n"
            "location: lab\nduration: 1\nhooks: {cleanup: scripts/cleanup.sh}\n",
        "catalog/workshops/WKSHP-End/1-Intro.ipynb":
            '{"cells": [{"cell_type": "code", "metadata": {}, "execution_count": null, '
            '"outputs": [], "source": ["1 + 1"]}], "metadata": {}, "nbformat": 4, '
            '"nbformat_minor": 5}',
        "catalog/workshops/WKSHP-End/scripts/cleanup.sh":
            f"#!/bin/bash\nif [ -e {tmp}/fail-$STUDENT ]; then echo refused $STUDENT; exit 4; "
            f"fi\necho cleanup $STUDENT\n",
        "hosts/lab1.yaml": "address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict[str, Path]]:
    taken = [e.pw_name for e in pwd.getpwall()
             if UID_BASE < e.pw_uid <= UID_BASE + SEATS and not e.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"uids {UID_BASE + 1}-{UID_BASE + SEATS} are taken by {taken}")
    _remove_accounts()
    HOMES.mkdir(mode=0o755)
    tmp = tmp_path_factory.mktemp("cleanupburst")
    root = tmp / "repo"
    _write_catalog(root, tmp)
    try:
        applied = wodsync(root, tmp, "apply", "--yes")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield {"root": root, "tmp": tmp}
    finally:
        _remove_accounts()


@pytest.fixture
def ctl(lab, tmp_path):
    controller = open_controller(lab["root"], tmp_path / "state", None, Secrets())
    yield controller
    for flag in lab["tmp"].glob("fail-*"):
        flag.unlink()
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def _person(n: int) -> Participant:
    return Participant(f"Bob {n}", f"bob{n}@example.org", "ACME")


def _locked(user: str) -> bool:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1].startswith("!")


def _records(lab: dict[str, Path]) -> list[str]:
    return sorted(p.stem for p in (lab["tmp"] / "state-lab1/seats").glob("*.json"))


def _held_first(ctl: Any, others: int) -> list[list[str]]:
    """The ends' calls, one lane per host: the first waits inside until `others` ends queue
    behind it, so they all leave in the next call. Returns the seats of each call, as made."""
    ends = ctl.sessions.ends
    ends.lanes = 1
    calls: list[list[str]] = []
    carry: Callable[..., Any] = ends._call

    def held(name: str, host: Any, payload: dict[str, Any]) -> Any:
        if not calls:
            until(lambda: ends.waiting(name) == others, "the other ends never queued")
        calls.append([s["user"] for s in payload["seats"]])
        return carry(name, host, payload)

    ends._call = held
    return calls


def _history(ctl: Any, session_id: str, user: str) -> list[tuple[str, str, str, str]]:
    """(from, to, message, output) of each event from the CLEANUP on, the seat's name and
    the figures (seconds, seat numbers) made neutral. (The CREATE's events name its slowest
    steps, which vary.)"""
    def neutral(text: str) -> str:
        return re.sub(r"[0-9]+(\.[0-9]+)?", "N", text.replace(user, "SEAT"))

    events = ctl.store.sessions.events(session_id)
    start = next(n for n, e in enumerate(events) if e.to_state == SessionState.CLEANING)
    return [(str(e.from_state), str(e.to_state), neutral(e.message), neutral(e.output))
            for e in events[start:]]


def test_a_burst_of_cleanups_through_the_api_shares_a_call_and_a_failing_hook_fails_alone(
        ctl, lab):
    """Six DELETEs at once: the first leaves alone, five wait and leave in one `seat_end`.
    The cleanup hook refuses one seat: that session alone stays `releasing` (202), its seat
    released on the host all the same but held in the store; the five others are ended (200),
    with the history a release alone writes, and are given again — not the failing seat,
    until its retry has finished."""
    alone = ctl.sessions.create("WKSHP-End", _person(99)).session
    ctl.sessions.release.end = None  # a release in a call of its own, as before the bursts
    single = ctl.sessions.cleanup(alone.id)
    ctl.sessions.release.end = ctl.sessions._end
    assert single.state == SessionState.ENDED
    sessions = [ctl.sessions.create("WKSHP-End", _person(n)).session for n in range(SEATS)]
    failing = sessions[3]
    (lab["tmp"] / f"fail-{failing.username}").touch()
    calls = _held_first(ctl, SEATS - 1)
    context = Context(ctl.store, sessions=ctl.sessions, api_token=lambda: TOKEN)
    answers: dict[str, requests.Response] = {}
    with serving(create_app(context)) as base:
        def delete(session_id: str) -> None:
            answers[session_id] = requests.delete(
                f"{base}/api/v1/sessions/{session_id}", timeout=120,
                headers={"Authorization": f"Bearer {TOKEN}"})

        threads = [threading.Thread(target=delete, args=(s.id,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    assert sorted(len(c) for c in calls) == [1, SEATS - 1], calls
    assert sorted(u for c in calls for u in c) == sorted(s.username for s in sessions)
    codes = {s.id: answers[s.id].status_code for s in sessions}
    assert codes == {s.id: 202 if s is failing else 200 for s in sessions}
    for s in sessions:
        now = ctl.store.sessions.get(s.id)
        assert _locked(s.username) and list((HOMES / s.username).iterdir()) == [], \
            "every seat of the call is released on the host, the failing one too"
        if s is failing:
            assert now.state == SessionState.RELEASING and now.release_op == "cleanup"
            assert "hook cleanup" in now.error and now.release_attempts == 1, now.error
        else:
            assert now.state == SessionState.ENDED, (now.state, now.error)
            assert _history(ctl, s.id, s.username) == _history(ctl, alone.id,
                                                               alone.username)
    assert _records(lab) == [failing.username], "only the unfinished release stays recorded"

    again = [ctl.sessions.create("WKSHP-End", _person(10 + n)).session
             for n in range(SEATS - 1)]
    assert sorted(s.seat for s in again) == sorted(s.seat for s in sessions
                                                   if s is not failing)
    with pytest.raises(NoSeat):  # the failing seat is not given before its release finished
        ctl.sessions.create("WKSHP-End", _person(20))
    (lab["tmp"] / f"fail-{failing.username}").unlink()
    retried = ctl.sessions.retry_releases(datetime.now(UTC) + timedelta(hours=1))
    assert [(r.id, r.state) for r in retried] == [(failing.id, SessionState.ENDED)]
    last = ctl.sessions.create("WKSHP-End", _person(20)).session
    assert last.seat == failing.seat


def test_sessions_whose_time_is_up_together_end_in_shared_calls(ctl, lab):
    """The expiry loop's round ends the sessions of an event side by side: four due at once,
    one lane — the first call carries one seat, the three others leave together in the next.
    All four are ended, their homes emptied, their records gone."""
    sessions = [ctl.sessions.create("WKSHP-End", _person(n)).session for n in range(4)]
    calls = _held_first(ctl, 3)
    ended = ctl.sessions.expire(datetime.now(UTC) + timedelta(hours=2))
    assert sorted(len(c) for c in calls) == [1, 3], calls
    assert [(e.id, e.state) for e in ended] == [(s.id, SessionState.ENDED) for s in sessions]
    assert all(list((HOMES / s.username).iterdir()) == [] for s in sessions)
    assert _records(lab) == []
