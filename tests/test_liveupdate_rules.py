"""Live update's decisions without a seat: nbgitpuller's rule per file (`agent.liveupdate.decide`),
the cell-level notebook merge (`agent.nbmerge`), the `.updated` names, a seat record that
refuses the update, and the probe of a home that never follows a link (in a temporary folder
of this test's own)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from wodsync.agent import nbmerge
from wodsync.agent.liveupdate import _refusal, beside, decide, probe
from wodsync.agent.seatbase import digest
from wodsync.sessions.liveupdate import report_lines, summary


def _nb(*sources: str, **cell: Any) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "source": s, "metadata": {}, **cell}
                      for s in sources], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _bytes(nb: dict[str, Any]) -> bytes:
    return json.dumps(nb).encode()


def test_each_file_gets_nbgitpuller_s_rule_against_what_the_seat_was_given():
    old, new = b"v1\n", b"v2\n"
    assert decide("a.txt", digest(old), old, ("file", b"mine\n"), None) is None  # unchanged
    assert decide("a.txt", digest(old), new, ("file", old), None) == (
        "updated", [("a.txt", new)], "")
    assert decide("a.txt", digest(old), new, ("missing", None), None) == (
        "restored", [("a.txt", new)], "")
    assert decide("a.txt", None, new, ("missing", None), None) == ("added", [("a.txt", new)], "")
    assert decide("a.txt", digest(old), new, ("file", b"mine\n"), None)[:2] == ("kept", [])
    assert decide("a.txt", None, new, ("file", b"mine\n"), None)[:2] == (
        "beside", [("a.updated.txt", new)])
    assert decide("a.txt", digest(old), new, ("blocked", None), None)[:2] == ("kept", [])
    assert decide("a.txt", digest(old), new, ("file", new), None) is None  # already there


def test_a_notebook_edited_in_other_cells_merges_and_in_the_same_cell_lands_beside():
    base = _nb("a", "b", "c")
    mine = _nb("a", "b mine", "c", execution_count=3)
    fixed = _nb("a", "b", "c fixed")
    action, files, _ = decide("n.ipynb", digest(_bytes(base)), _bytes(fixed),
                              ("file", _bytes(mine)), _bytes(base))
    assert action == "merged"
    merged = json.loads(files[0][1])
    assert [c["source"] for c in merged["cells"]] == ["a", "b mine", "c fixed"]
    assert merged["cells"][1]["execution_count"] == 3  # the student's own cell, as it was
    clash = _nb("a", "b fixed", "c")
    assert decide("n.ipynb", digest(_bytes(base)), _bytes(clash), ("file", _bytes(mine)),
                  _bytes(base)) == ("beside", [("n.updated.ipynb", _bytes(clash))],
                                    "edited by the student in the cells the fix changes")


def test_the_merge_takes_inserted_and_deleted_cells_from_both_sides():
    base = _nb("a", "b", "c", "d")
    mine = _nb("a", "new mine", "b", "c", "d")
    fixed = _nb("a", "b", "c")
    merged = nbmerge.merge(base, mine, fixed)
    assert merged is not None
    assert [c["source"] for c in merged["cells"]] == ["a", "new mine", "b", "c"]
    assert nbmerge.merge(base, _nb("x", "a", "b", "c", "d"), _nb("y", "a", "b", "c", "d")) \
        is None  # two insertions at one place: whose first?
    assert nbmerge.parse(b"{not json") is None
    assert nbmerge.parse(b'{"cells": 3}') is None


def test_upstream_names_beside_the_students_file_keep_the_suffix():
    assert beside("1-Intro.ipynb") == "1-Intro.updated.ipynb"
    assert beside("data/notes.txt") == "data/notes.updated.txt"
    assert beside("bin/run") == "bin/run.updated"
    assert beside(".env") == ".env.updated"


def test_only_a_seat_recorded_active_for_the_session_and_workshop_is_updated():
    seat: Any = {"user": "s1", "session": "abc", "workshop": "W"}
    assert _refusal(seat, {"session": "abc", "workshop": "W", "state": "active"}) is None
    assert _refusal(seat, None) == "seat s1 is free on the host"
    assert _refusal(seat, {"session": "zzz", "workshop": "W", "state": "active"}) == \
        "seat s1 is held on the host by session zzz"
    assert _refusal(seat, {"session": "abc", "workshop": "W", "state": "releasing"}) == \
        "seat s1 is releasing on the host"
    assert _refusal(seat, {"session": "abc", "workshop": "X", "state": "active"}) == \
        "seat s1 holds workshop X on the host"


def test_the_probe_never_follows_a_link_and_sees_a_folder_in_the_way(tmp_path: Path):
    (tmp_path / "W/data").mkdir(parents=True)
    (tmp_path / "W/data/f.txt").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"not yours")
    (tmp_path / "W/link.txt").symlink_to(tmp_path / "secret")
    (tmp_path / "W/linkdir").symlink_to(tmp_path / "W/data")
    (tmp_path / "W/file").write_bytes(b"a file where a folder goes")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert probe(fd, ["W", "data", "f.txt"]) == ("file", b"x")
        assert probe(fd, ["W", "link.txt"]) == ("missing", None)
        assert probe(fd, ["W", "linkdir", "f.txt"]) == ("missing", None)
        assert probe(fd, ["W", "data"]) == ("blocked", None)
        assert probe(fd, ["W", "file", "g.txt"]) == ("blocked", None)
        assert probe(fd, ["W", "none.txt"]) == ("missing", None)
    finally:
        os.close(fd)


def test_the_history_report_says_each_file_and_where_the_upstream_one_landed():
    files: Any = [{"path": "1.ipynb", "action": "merged"},
                  {"path": "2.ipynb", "action": "beside", "beside": "2.updated.ipynb",
                   "note": "edited"}]
    assert report_lines(files) == ["merged   1.ipynb",
                                   "beside   2.ipynb → 2.updated.ipynb (edited)"]
    assert summary(files) == "1 beside, 1 merged"
    assert summary([]) == "nothing to change"
