"""Log lines: one format for every line, JSON objects with `--log-json`, and a session's moves
logged once they have committed, never a secret."""

from __future__ import annotations

import json
import logging

import pytest

from wodsync.logs import FIELDS, JsonFormatter, TextFormatter
from wodsync.store import Candidate, Participant, open_store
from wodsync.store.models import after_commit, writing


def _record(message: str, fields: dict | None = None, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            info = sys.exc_info()
    record = logging.LogRecord("wodsync.daemon", logging.WARNING, __file__, 1, message, (),
                               info)
    if fields is not None:
        setattr(record, FIELDS, fields)
    return record


def test_a_json_line_has_time_level_logger_message_and_fields() -> None:
    line = json.loads(JsonFormatter().format(_record("reconciled h1", {"host": "h1", "n": 3})))
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert (line["level"], line["logger"], line["message"], line["host"], line["n"]) == (
        "warning", "wodsync.daemon", "reconciled h1", "h1", 3)


def test_a_traceback_is_one_field_of_one_line() -> None:
    text = JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]


def test_a_field_never_replaces_the_line_s_own_keys() -> None:
    line = json.loads(JsonFormatter().format(_record("m", {"message": "forged", "level": "x"})))
    assert (line["message"], line["level"]) == ("m", "warning")


def test_a_text_line_carries_its_fields_as_key_value() -> None:
    text = TextFormatter().format(_record("reconciled", {"host": "h1", "error": "a b"}))
    assert text.endswith('WARNING reconciled host=h1 error="a b"')


def test_a_session_move_is_logged_once_committed(tmp_path, caplog) -> None:
    store = open_store(state_dir=tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="wodsync.sessions"):
            s = store.sessions.allocate("WKSHP-A", Participant("Ann", "ann@example.org", ""),
                                        [Candidate("lab", "h1", 1, "s1")], 5, 1.0, "rev",
                                        "pw-secret-123")
        moves = [r for r in caplog.records if r.name == "wodsync.sessions"]
        assert len(moves) == 1 and moves[0].getMessage().startswith(
            f"session {s.id}: - → creating: ")
        assert getattr(moves[0], FIELDS) == {"session": s.id, "from": "-", "to": "creating"}
        assert "pw-secret-123" not in caplog.text and "ann@example.org" not in caplog.text
    finally:
        store.close()


def test_nothing_is_reported_for_a_transaction_that_rolled_back(tmp_path) -> None:
    store = open_store(state_dir=tmp_path)
    seen: list[str] = []
    try:
        with pytest.raises(RuntimeError), writing(store.engine) as conn:
            after_commit(conn, lambda: seen.append("rolled back"))
            raise RuntimeError("the write failed")
        with writing(store.engine) as conn:
            after_commit(conn, lambda: seen.append("committed"))
        assert seen == ["committed"]
    finally:
        store.close()
