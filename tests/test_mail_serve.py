"""Mails from a real `wodsync serve` process with real seats (the session lab's catalog, its
accounts wodtx/wodty): a CREATE's credentials arrive in an aiosmtpd sink with the password the
API gave; a CLI PURGE in another process queues the ended mail that the server sends; and a
server killed with SIGKILL between the commit of a CREATE and the send of its mail sends it
exactly once after its restart. The window is made deterministic by the sender's test hook
(`WODSYNC_MAIL_PAUSE_AFTER_CLAIM`): it stops right after claiming, where the test kills it."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wodsync.mail.sender import PAUSE_ENV
from wodsync.mail.sink import Sink
from wodsync.store import OutboxState, open_store

import apiserver
from helpers import until
from sessionlab import cleanup_accounts, wodsync, write_catalog

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates seats")

API_TOKEN = "wodsync-api-" + os.urandom(8).hex()
LEASE_S = 2  # the killed server's claim ends this soon: the restarted one takes the mail then


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, **extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("mailserve")
    root = tmp / "repo"
    write_catalog(root, tmp)
    applied = wodsync(root, tmp, "apply", "--yes", env=_env(), timeout=900)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    with Sink(tmp / "maildir") as sink:
        (root / "catalog/mail.yaml").write_text(
            f'smtp: {{host: 127.0.0.1, port: {sink.port}}}\n'
            'from: "Lab <lab@example.org>"\noperators: [ops@example.org]\n'
            "portal_url: https://portal.example.org\n"
            f"sending: {{lease_seconds: {LEASE_S}, backoff_seconds: 0.2}}\n")
        yield {"root": root, "tmp": tmp, "sink": sink}
    cleanup_accounts()


def _server(lab: dict[str, Any], state: Path, **env: str) -> apiserver.Server:
    return apiserver.Server(lab["root"], state, _env(**env), API_TOKEN)


def _create(server: apiserver.Server, email: str) -> dict[str, Any]:
    answer = server.call("POST", "/api/v1/sessions", json={
        "workshop": "WKSHP-Sess", "participant": {"name": "Ann", "email": email}})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _to(lab: dict[str, Any], email: str) -> list[Any]:
    return [m for m in lab["sink"].messages() if m["To"] == email]


def _purge(lab: dict[str, Any], state: Path, session_id: str) -> None:
    wodsync(lab["root"], state, "session", "purge", session_id, env=_env())


def test_a_create_mails_the_credentials_and_a_cli_purge_the_ended_notice(
        lab: dict[str, Any], tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = _server(lab, state).start()
    try:
        created = _create(server, "ann@example.org")
        until(lambda: _to(lab, "ann@example.org"), "no credentials mail arrived", timeout=30)
        [mail] = _to(lab, "ann@example.org")
        text = mail.get_body(("plain",)).get_content()
        assert f"Password:  {created['credentials']['password']}" in text
        assert f"User:      {created['credentials']['username']}" in text
        _purge(lab, state, created["id"])  # another process: the server's sender sends it
        until(lambda: len(_to(lab, "ann@example.org")) == 2, "no ended mail", timeout=30)
        assert _to(lab, "ann@example.org")[1]["Subject"] == "Thank you for taking Sessions"
    finally:
        server.stop()


def test_a_server_killed_before_sending_sends_the_mail_once_after_its_restart(
        lab: dict[str, Any], tmp_path: Path) -> None:
    state, marker = tmp_path / "state", tmp_path / "claimed"
    server = _server(lab, state, **{PAUSE_ENV: str(marker)}).start()
    created = _create(server, "kill@example.org")
    until(marker.exists, "the sender never claimed the credentials mail", timeout=30)
    server.stop(signal.SIGKILL)
    with open_store(state_dir=state) as store:
        [mail] = store.outbox.list(session_id=created["id"])
    assert marker.read_text().split() == [str(mail.id)]
    assert mail.state is OutboxState.SENDING and _to(lab, "kill@example.org") == []
    restarted = _server(lab, state).start()
    try:
        until(lambda: _to(lab, "kill@example.org"), "the mail was lost", timeout=30)
        with open_store(state_dir=state) as store:
            until(lambda: store.outbox.get(mail.id).state is OutboxState.SENT,  # type: ignore
                  "the mail was never marked sent", timeout=30)
            assert store.outbox.get(mail.id).attempts == 2  # type: ignore[union-attr]
        listed = json.loads(_mail_list(state))
        assert [(m["kind"], m["state"]) for m in listed] == [("credentials", "sent")]
        assert len(_to(lab, "kill@example.org")) == 1  # exactly once
        _purge(lab, state, created["id"])
    finally:
        restarted.stop()


def _mail_list(state: Path) -> str:
    from helpers import wodsync as run

    result = run("mail", "list", "--json", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    return result.stdout
