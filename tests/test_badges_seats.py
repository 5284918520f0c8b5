"""Badges from real sessions: CREATE and CLEANUP on real seats of this machine, the completion
counted by the host from the seat's notebook, the badge awarded (or not) as the session ends,
and shown by the public page served from the same store.

Accounts `wodtv1`–`wodtv4` (uids 58701-58704, their shared group `wodtvstudents` 58750), homes
under /home/wodsync-test-badges; all removed at the end of the module. The range the brief gave
(60201-60250) is refused by the catalog (pools stay within 1000..59999, below Debian's
reserved ids), so the prefix is the brief's and the range the free one next to the session
labs'."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.controller import open_controller
from wodsync.secrets import Secrets
from wodsync.store import InvalidTransition, Participant, SessionState

from apiserver import serving
from helpers import remove_test_accounts
from sessionlab import wodsync

PREFIX, UID_BASE, GROUP_GID = "wodtv", 58700, 58750
HOMES = Path("/home/wodsync-test-badges")
NOTEBOOK = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": [f"print({n})"]} for n in range(4)],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real seat accounts)")


def _range_taken() -> str | None:
    for entry in pwd.getpwall():
        if UID_BASE < entry.pw_uid <= GROUP_GID and not entry.pw_name.startswith(PREFIX):
            return f"uid {entry.pw_uid} is {entry.pw_name}, not a test account of this module"
    for group in grp.getgrall():
        if UID_BASE < group.gr_gid <= GROUP_GID and not group.gr_name.startswith(PREFIX):
            return f"gid {group.gr_gid} is {group.gr_name}, not a test group of this module"
    return None


def _cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Path]:
    taken = _range_taken()
    if taken:
        pytest.skip(f"the ids {UID_BASE + 1}-{GROUP_GID} of this module are taken: {taken}")
    _cleanup()
    HOMES.mkdir(mode=0o755)
    tmp = tmp_path_factory.mktemp("badge-seats")
    root = tmp / "repo"
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n    last: 4\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n"
            f"    group: {PREFIX}students\n    group_gid: {GROUP_GID}\n",
        "catalog/workshops/WKSHP-Badge/workshop.yaml":
            "name: Badges 101\ncapacity: 4\nseats: {first: 1, last: 4}\nlocation: lab\n"
            "duration: 1\nbadge_threshold: 50\n",
        "catalog/workshops/WKSHP-Badge/1-Cells.ipynb": json.dumps(NOTEBOOK),
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    try:
        applied = wodsync(root, tmp, "apply", "--yes")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield root
    finally:
        _cleanup()


def _run_cells(username: str, executed: int) -> None:
    """The participant ran `executed` of the notebook's 4 code cells."""
    notebook = HOMES / username / "WKSHP-Badge/1-Cells.ipynb"
    nb = json.loads(notebook.read_text())
    for n, cell in enumerate(nb["cells"][:executed], start=1):
        cell["execution_count"] = n
    notebook.write_text(json.dumps(nb))


def test_a_real_cleanup_awards_the_badge_at_the_threshold_and_not_below(lab, tmp_path):
    ctl = open_controller(lab, tmp_path / "state", None, Secrets(env={}))
    try:
        below = ctl.sessions.create("WKSHP-Badge", Participant("Ada", "ada@example.org"))
        at = ctl.sessions.create("WKSHP-Badge", Participant("Grace", "grace@example.org"))
        _run_cells(below.session.username, 1)
        _run_cells(at.session.username, 2)
        ended_below = ctl.sessions.cleanup(below.session.id)
        ended_at = ctl.sessions.cleanup(at.session.id)
        assert (ended_below.state, ended_below.completion) == (SessionState.ENDED, 25.0)
        assert (ended_at.state, ended_at.completion) == (SessionState.ENDED, 50.0)
        assert ctl.store.badges.for_session(ended_below.id) == []
        [badge] = ctl.store.badges.for_session(ended_at.id)
        assert (badge.title, badge.name, badge.completion) == ("Badges 101", "Grace", 50.0)
        with pytest.raises(InvalidTransition):  # asked again: refused, nothing awarded
            ctl.sessions.cleanup(at.session.id)
        assert len(ctl.store.badges.find("grace@example.org")) == 1
        app = create_app(Context(ctl.store, sessions=ctl.sessions))
        with serving(app) as base:
            page = requests.get(f"{base}/badges/{badge.id}", timeout=30)
        assert page.status_code == 200
        assert "Badges 101" in page.text and "Grace" in page.text
        assert "grace@example.org" not in page.text
    finally:
        for s in ctl.store.sessions.find(live=True):
            ctl.sessions.purge(s.id, "test teardown")
        ctl.close()
