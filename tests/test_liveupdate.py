"""Live update on real seats of this machine: four sessions of one workshop — one untouched, one
with edited cells, one with a file of its own where the fix adds one, one whose notebook was
deleted and with a link planted where a new file lands — get a fix with nbgitpuller's rules, in
one round trip for the host; the students' edits stay byte for byte, the history shows each
report, `live_update: off` is never touched, and a seat's base goes with its release.

Accounts `wodqb1`–`wodqb6` (uids 41201-41206, pool uid_base 41200; bench/liveupdate.py has
wodqb11 and on), homes under /home/wodsync-test-liveupdate; all removed at the end of the
module.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wodsync.agent import seatbase
from wodsync.controller import open_controller
from wodsync.daemon.loop import Daemon as Loops
from wodsync.daemon.loop import Settings
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.git import GitSource
from wodsync.source.revision import Current
from wodsync.store import Participant, SessionState, Trigger, open_store

from gitorigin import Origin
from sessionlab import wodsync

PREFIX, UID_BASE, SEATS = "wodqb", 41200, 6
HOMES = Path("/home/wodsync-test-liveupdate")
WS = "WKSHP-Live"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real seat accounts)")


def _cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": [source]}


def _notebook(*sources: str) -> str:
    return json.dumps({"cells": [_cell(s) for s in sources], "metadata": {}, "nbformat": 4,
                       "nbformat_minor": 5})


INTRO = _notebook("print('{{ STUDENT }}')", "x = 1", "x + 1")
INTRO_FIXED = _notebook("print('{{ STUDENT }}')", "x = 1", "x + 2  # fixed")
LAB = _notebook("y = 10", "y * 2")
LAB_FIXED = _notebook("y = 11  # fixed", "y * 2")


def _range_taken() -> str | None:
    for entry in pwd.getpwall():
        if UID_BASE < entry.pw_uid <= UID_BASE + 199 and not entry.pw_name.startswith(PREFIX):
            return f"uid {entry.pw_uid} is {entry.pw_name}, not a test account of this module"
    return None


def _cleanup() -> None:
    """This module's accounts only: bench/liveupdate.py has wodqb11 and on."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and UID_BASE < entry.pw_uid <= UID_BASE + SEATS:
            subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
    for group in grp.getgrall():
        if group.gr_name.startswith(PREFIX) and UID_BASE < group.gr_gid <= UID_BASE + SEATS:
            subprocess.run(["groupdel", group.gr_name], check=False, capture_output=True)
    shutil.rmtree(HOMES, ignore_errors=True)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Path]:
    taken = _range_taken()
    if taken:
        pytest.skip(f"the uids {UID_BASE + 1}-{UID_BASE + 199} of this module are taken: {taken}")
    _cleanup()
    HOMES.mkdir(mode=0o755)
    tmp = tmp_path_factory.mktemp("liveupdate")
    root = tmp / "repo"
    _write(root, {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        f"catalog/workshops/{WS}/workshop.yaml":
            "name: Live\ncapacity: 4\nseats: {first: 1, last: 4}\nlocation: lab\nduration: 2\n",
        f"catalog/workshops/{WS}/1-Intro.ipynb": INTRO,
        f"catalog/workshops/{WS}/2-Lab.ipynb": LAB,
        f"catalog/workshops/{WS}/data/notes.txt": "notes of {{ STDID }}\n",
        "catalog/workshops/WKSHP-Frozen/workshop.yaml":
            "name: Frozen\ncapacity: 2\nseats: {first: 5, last: 6}\nlocation: lab\n"
            "duration: 2\nlive_update: \"off\"\n",
        "catalog/workshops/WKSHP-Frozen/1-Intro.ipynb": INTRO,
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    })
    try:
        applied = wodsync(root, tmp, "apply", "--yes")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield root
    finally:
        _cleanup()


@pytest.fixture
def state(lab, tmp_path) -> Iterator[Path]:
    """The controller's state folder; every session still holding a seat is purged after."""
    yield tmp_path / "state"
    ctl = open_controller(lab, tmp_path / "state", None, Secrets(env={}))
    try:
        for s in ctl.store.sessions.find(live=True):
            ctl.sessions.purge(s.id, "test teardown")
    finally:
        ctl.close()


def _home(username: str) -> Path:
    return HOMES / username / WS


def _fix(root: Path) -> None:
    """The fix merged: a cell of each notebook changed, a data file added."""
    _write(root, {f"catalog/workshops/{WS}/1-Intro.ipynb": INTRO_FIXED,
                  f"catalog/workshops/{WS}/2-Lab.ipynb": LAB_FIXED,
                  f"catalog/workshops/{WS}/data/extra.txt": "new data\n",
                  "catalog/workshops/WKSHP-Frozen/1-Intro.ipynb": INTRO_FIXED})


def _sources(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def _edit_cell(path: Path, index: int, source: str) -> None:
    nb = json.loads(path.read_text())
    nb["cells"][index]["source"] = [source]
    nb["cells"][index]["execution_count"] = 7
    path.write_text(json.dumps(nb, indent=1))


def _as_seat(path: Path, username: str) -> None:
    entry = pwd.getpwnam(username)
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def test_a_fix_reaches_four_seats_by_nbgitpuller_rules_and_keeps_the_students_work(
        lab, state, tmp_path):
    ctl = open_controller(lab, state, None, Secrets(env={}))
    try:
        made = [ctl.sessions.create(WS, Participant(f"P{n}", f"p{n}@example.org")).session
                for n in range(4)]
        frozen = ctl.sessions.create("WKSHP-Frozen", Participant("F", "f@example.org")).session
    finally:
        ctl.close()
    untouched, edited, own, deleted = made
    # edited: a cell the fix leaves alone (Intro: merged), a cell the fix changes (Lab: beside)
    _edit_cell(_home(edited.username) / "1-Intro.ipynb", 1, "x = 41  # mine")
    _edit_cell(_home(edited.username) / "2-Lab.ipynb", 0, "y = 99  # mine")
    lab_mine = (_home(edited.username) / "2-Lab.ipynb").read_bytes()
    # own: the student wrote data/extra.txt before the fix added it
    (_home(own.username) / "data/extra.txt").write_bytes(b"my own notes\n")
    _as_seat(_home(own.username) / "data/extra.txt", own.username)
    # deleted: the intro notebook removed, a link planted where the new data file lands
    (_home(deleted.username) / "1-Intro.ipynb").unlink()
    target = tmp_path / "root-file"
    target.write_bytes(b"root's\n")
    (_home(deleted.username) / "data/extra.txt").symlink_to(target)
    _as_seat(_home(deleted.username) / "data/extra.txt", deleted.username)

    _fix(lab)
    ctl = open_controller(lab, state, None, Secrets(env={}))
    try:
        done = {u.session: u for u in ctl.sessions.update(workshops=[WS, "WKSHP-Frozen"])}
        events = {s.id: ctl.store.sessions.events(s.id)[-1] for s in made}
        revision = ctl.deployment.revision
        after = {s.id: ctl.store.sessions.get(s.id) for s in made}
    finally:
        ctl.close()

    def actions(session) -> dict[str, str]:
        assert done[session.id].ok, done[session.id]
        return {f["path"]: f["action"] for f in done[session.id].files}

    assert actions(untouched) == {"1-Intro.ipynb": "updated", "2-Lab.ipynb": "updated",
                                  "data/extra.txt": "added"}
    home = _home(untouched.username)
    assert (home / "1-Intro.ipynb").read_text() == INTRO_FIXED.replace(
        "{{ STUDENT }}", untouched.username)
    assert (home / "data/extra.txt").read_text() == "new data\n"

    assert actions(edited) == {"1-Intro.ipynb": "merged", "2-Lab.ipynb": "beside",
                               "data/extra.txt": "added"}
    home = _home(edited.username)
    assert _sources(home / "1-Intro.ipynb") == [f"print('{edited.username}')", "x = 41  # mine",
                                                "x + 2  # fixed"]
    assert json.loads((home / "1-Intro.ipynb").read_text())["cells"][1]["execution_count"] == 7
    assert (home / "2-Lab.ipynb").read_bytes() == lab_mine  # byte for byte
    assert _sources(home / "2-Lab.updated.ipynb") == ["y = 11  # fixed", "y * 2"]

    assert actions(own) == {"1-Intro.ipynb": "updated", "2-Lab.ipynb": "updated",
                            "data/extra.txt": "beside"}
    home = _home(own.username)
    assert (home / "data/extra.txt").read_bytes() == b"my own notes\n"
    assert (home / "data/extra.updated.txt").read_text() == "new data\n"

    assert actions(deleted) == {"1-Intro.ipynb": "restored", "2-Lab.ipynb": "updated",
                                "data/extra.txt": "added"}
    home = _home(deleted.username)
    assert _sources(home / "1-Intro.ipynb")[2] == "x + 2  # fixed"
    assert target.read_bytes() == b"root's\n"  # the link was not followed
    landed = (home / "data/extra.txt").lstat()
    assert not (home / "data/extra.txt").is_symlink()
    assert landed.st_uid == pwd.getpwnam(deleted.username).pw_uid

    assert done[frozen.id].skipped == "workshop WKSHP-Frozen has live_update: off"
    assert _sources(_home(frozen.username).parent / "WKSHP-Frozen/1-Intro.ipynb")[2] == "x + 1"

    for s in made:  # the history has each report; the session is on the new revision
        assert events[s.id].message.startswith(f"live update to revision {revision[:12]}: ")
        assert events[s.id].to_state is SessionState.ACTIVE
        assert after[s.id].revision == revision
    assert "beside   2-Lab.ipynb → 2-Lab.updated.ipynb" in events[edited.id].output
    assert "merged   1-Intro.ipynb" in events[edited.id].output


def test_a_second_update_changes_nothing_and_a_release_drops_the_base(lab, state):
    ctl = open_controller(lab, state, None, Secrets(env={}))
    try:
        session = ctl.sessions.create(WS, Participant("Q", "q@example.org")).session
        state_dir = Path(ctl.deployment.catalog.hosts["lab1"].state_dir)
        base = Path(seatbase.folder(str(state_dir), session.username))
        assert (base / "base.json").is_file()
        assert base.stat().st_mode & 0o777 == 0o700
        [again] = ctl.sessions.update([session.id])
        assert (again.ok, again.files) == (True, [])
        assert ctl.store.sessions.events(session.id)[-1].message.endswith("nothing to change")
        ctl.sessions.cleanup(session.id)
        assert not base.exists()
        [gone] = ctl.sessions.update([session.id])
        assert gone.skipped == "session is ended"
    finally:
        ctl.close()


def test_the_daemon_updates_the_sessions_of_a_workshop_a_new_revision_changes(lab, tmp_path):
    """A commit changing the workshop reaches its live session at the host's next converged
    round; a commit changing only another workshop leaves it alone."""
    repo = Origin(tmp_path / "git")
    shutil.copytree(lab / "catalog", repo.work / "catalog")
    shutil.copytree(lab / "hosts", repo.work / "hosts")
    repo.commit("the lab")
    store = open_store(state_dir=tmp_path / "daemon")
    current = Current()
    loops = Loops(GitSource(str(repo.origin), "main", tmp_path / "daemon"), store,
                  Secrets(env={}), SessionService(store, current), current, Settings())
    try:
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        session = loops.sessions.create(WS, Participant("D", "d@example.org")).session
        nb = json.loads((repo.work / f"catalog/workshops/{WS}/1-Intro.ipynb").read_text())
        nb["cells"].append(_cell("print('added by the fix')"))
        repo.write(f"catalog/workshops/{WS}/1-Intro.ipynb", json.dumps(nb))
        fixed = repo.commit("a cell added")
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        assert _sources(_home(session.username) / "1-Intro.ipynb")[-1] == \
            "print('added by the fix')"
        event = store.sessions.events(session.id)[-1]
        assert event.message == f"live update to revision {fixed[:12]}: 1 updated"
        assert store.sessions.get(session.id).revision == fixed
        repo.write("catalog/workshops/WKSHP-Frozen/2-More.ipynb", LAB)
        repo.commit("another workshop only")
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        assert store.sessions.events(session.id)[-1] == event
    finally:
        for s in store.sessions.find(live=True):
            loops.sessions.purge(s.id, "test teardown")
        loops.sessions.connections.close()
        loops.source.close()
        store.close()


def test_the_command_updates_one_session_and_prints_each_file(lab, state):
    ctl = open_controller(lab, state, None, Secrets(env={}))
    try:
        session = ctl.sessions.create(WS, Participant("C", "c@example.org")).session
    finally:
        ctl.close()
    (_home(session.username) / "2-Lab.ipynb").unlink()
    _write(lab, {f"catalog/workshops/{WS}/data/notes.txt": "notes, fixed {{ STDID }}\n",
                 f"catalog/workshops/{WS}/2-Lab.ipynb": _notebook("y = 12", "y * 3")})
    both = wodsync(lab, state, "session", "update", session.id, "--workshop", WS)
    assert both.returncode == 64, both.stdout + both.stderr  # a usage error
    assert "not both" in both.stdout + both.stderr
    done = wodsync(lab, state, "session", "update", session.id)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "restored 2-Lab.ipynb" in out and "updated  data/notes.txt" in out, out
    assert (_home(session.username) / "data/notes.txt").read_text() == \
        "notes, fixed {{ STDID }}\n"
    assert _sources(_home(session.username) / "2-Lab.ipynb") == ["y = 12", "y * 3"]
