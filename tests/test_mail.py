"""Lifecycle mails from the store's outbox to a real SMTP server (an aiosmtpd sink writing a
Maildir), on SQLite and PostgreSQL: a session's moves queue their mails in the move's own
transaction, the sender renders them from the catalog's templates as the store is now (the
password read then, a dropped mail said why), retries a refusing server with back-off, gives up
into `failed`, and two senders on one store never send a mail twice. No root needed: sessions
move through the store, without seats (the real CREATE is `test_mail_serve.py`'s)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from wodsync.catalog import Catalog, validate
from wodsync.mail import context as mail_context
from wodsync.mail import links, triggers
from wodsync.mail.sender import Sender
from wodsync.mail.sink import Sink
from wodsync.secrets import Entry, Secrets
from wodsync.store import (
    Candidate,
    OutboxError,
    OutboxState,
    Participant,
    Session,
    SessionState,
    Store,
    open_store,
)
from wodsync.store.models import writing
from wodsync.store.outbox import enqueue

from helpers import until, wodsync
from pg import store_on

REPO = Path(__file__).resolve().parent.parent
WORKSHOP = "WKSHP-Python101"
MAIL_YAML = """\
from: "WoD Example <wod@example.org>"
reply_to: support@example.org
operators: [ops@example.org]
portal_url: https://portal.example.org
feedback_url: https://portal.example.org/feedback
sending: {backoff_seconds: 0.05, max_backoff_seconds: 0.2, max_attempts: 3,
          lease_seconds: 30}
"""


# -- fixtures -----------------------------------------------------------------------------------


def make_repo(root: Path, mail_yaml: str | None = MAIL_YAML) -> Path:
    """The example repository (catalog, hosts, templates), with `catalog/mail.yaml`."""
    for part in ("catalog", "hosts", "templates"):
        shutil.copytree(REPO / part, root / part)
    if mail_yaml is not None:
        (root / "catalog/mail.yaml").write_text(mail_yaml)
    return root


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    loaded, found = validate(make_repo(tmp_path_factory.mktemp("mailrepo")))
    assert [d for d in found if d.is_error] == []
    assert loaded.mail is not None
    return loaded


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    with store_on(request.param, tmp_path, monkeypatch) as opened:
        yield opened


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    with Sink(tmp_path / "maildir") as running:
        yield running


@pytest.fixture
def mailing(store: Store, catalog: Catalog) -> Store:
    """The store with the mail hook on, as every session service installs it."""
    triggers.install(store.sessions, lambda: catalog.mail)
    return store


def sender(store: Store, catalog: Catalog, sink: Sink, **kw: Any) -> Sender:
    return Sender(store, lambda: catalog, Secrets(env={}), smtp=("127.0.0.1", sink.port),
                  poll=0.1, **kw)


def new_session(store: Store, email: str = "ada@example.org", seat: int = 1) -> Session:
    return store.sessions.allocate(
        WORKSHOP, Participant("Ada <b>Lovelace</b>", email), [Candidate(
            "emea", "hub-emea", seat, f"student{seat}")], 40, 2.0, "rev", "Pass-w0rd-1")


def active_session(store: Store, **kw: Any) -> Session:
    return store.sessions.activate(new_session(store, **kw).id)


def drain(s: Sender) -> None:
    while s.run_once():
        pass


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# -- the outbox ---------------------------------------------------------------------------------


def test_a_mail_is_queued_once_per_key_in_the_callers_transaction(store: Store) -> None:
    with writing(store.engine) as conn:
        first = enqueue(conn, "confirm", "a@example.org", context={"workshop": WORKSHOP},
                        key="confirm:r1")
        again = enqueue(conn, "confirm", "a@example.org", key="confirm:r1")
    assert first == again
    with pytest.raises(RuntimeError), writing(store.engine) as conn:
        enqueue(conn, "confirm", "b@example.org", key="confirm:r2")
        raise RuntimeError("the state change failed")
    assert [(m.key, m.state) for m in store.outbox.list()] == [("confirm:r1", OutboxState.QUEUED)]


@pytest.mark.parametrize(("kind", "to", "context", "said"), [
    ("welcome", "a@example.org", {}, "unknown mail kind 'welcome'"),
    ("confirm", "a@example.org, b@example.org", {}, "is not one e-mail address"),
    ("confirm", "a@example.org\r\nBcc: x@y.z", {}, "is not one e-mail address"),
    ("confirm", "a@example.org", {"links": {"confirm_token": "x"}}, "looks like a secret"),
    ("credentials", "a@example.org", {"password": "x"}, "looks like a secret"),
])
def test_bad_mails_are_refused_with_the_reason_and_nothing_is_written(
        store: Store, kind: str, to: str, context: dict[str, Any], said: str) -> None:
    with pytest.raises(OutboxError, match=said):
        store.outbox.enqueue(kind, to, context=context)
    assert store.outbox.list() == []


def test_a_claim_is_exclusive_until_its_lease_ends(store: Store) -> None:
    mail_id = store.outbox.enqueue("confirm", "a@example.org")
    lease = timedelta(seconds=30)
    assert [m.id for m in store.outbox.claim("one", lease)] == [mail_id]
    assert store.outbox.claim("two", lease) == []
    later = store.outbox.get(mail_id).lease_until + timedelta(seconds=1)  # type: ignore[union-attr]
    taken = store.outbox.claim("two", lease, now=later)
    assert [(m.id, m.lease_owner, m.attempts) for m in taken] == [(mail_id, "two", 2)]
    assert store.outbox.mark_sent(mail_id, "one") is False  # its lease was over
    assert store.outbox.mark_sent(mail_id, "two") is True
    assert store.outbox.get(mail_id).state is OutboxState.SENT  # type: ignore[union-attr]


# -- where mails come from ------------------------------------------------------------------------


def test_moves_queue_their_mails_in_the_same_transaction(mailing: Store) -> None:
    s = active_session(mailing)
    assert s.ends_at is not None
    mailing.sessions.mark_expiring(timedelta(hours=3), s.ends_at - timedelta(minutes=30))
    ends = mailing.sessions.extend(s.id, 1, 24).ends_at
    assert ends is not None  # the extension re-arms the notice
    mailing.sessions.mark_expiring(timedelta(hours=4), ends - timedelta(minutes=30))
    mailing.sessions.transition(s.id, SessionState.CLEANING)
    mailing.sessions.transition(s.id, SessionState.ENDED)
    failed = new_session(mailing, email="bob@example.org", seat=2)
    mailing.sessions.fail(failed.id, "create hook exited 3")
    kinds = [(m.kind, m.to) for m in mailing.outbox.list()]
    assert kinds == [("credentials", "ada@example.org"), ("expiring", "ada@example.org"),
                     ("expiring", "ada@example.org"), ("ended", "ada@example.org"),
                     ("failed", "bob@example.org"), ("operator", "ops@example.org")]
    assert all("password" not in str(m.context) for m in mailing.outbox.list())


def test_no_mail_without_mail_settings_or_for_a_move_that_rolled_back(
        store: Store, catalog: Catalog) -> None:
    settings: list[Any] = [None]
    triggers.install(store.sessions, lambda: settings[0])
    active_session(store)
    assert store.outbox.list() == []

    def refuse(conn: Any, moved: Any) -> None:
        raise RuntimeError("a later hook failed")

    settings[0] = catalog.mail
    s = new_session(store, email="bob@example.org", seat=2)
    store.sessions.hooks.append(refuse)
    with pytest.raises(RuntimeError):
        store.sessions.activate(s.id)
    store.sessions.hooks.remove(refuse)
    assert store.sessions.get(s.id).state is SessionState.CREATING
    assert store.outbox.list() == []


# -- what is sent ---------------------------------------------------------------------------------


def test_credentials_mail_is_multipart_with_headers_password_links_and_image(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    links.register("session", lambda req: f"{req.base_url}/s/secret-of-{req.session.id}")
    try:
        s = active_session(mailing)
        drain(sender(mailing, catalog, sink))
    finally:
        links.unregister("session")
    [msg] = sink.messages()
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["From"] == "WoD Example <wod@example.org>"
    assert msg["To"] == "ada@example.org" and msg["Delivered-To"] == "ada@example.org"
    assert msg["Reply-To"] == "support@example.org"
    mail = mailing.outbox.list()[0]
    assert msg["Message-ID"] == f"<{mail.id}.credentials.{s.id}@example.org>"
    assert msg["Date"] and msg["Subject"] == \
        "Your Python 101 - A first look at the Python language workshop is ready"
    text, html = parts(msg)
    assert "Pass-w0rd-1" in text and "Pass-w0rd-1" in html and "student1" in text
    assert f"https://portal.example.org/s/secret-of-{s.id}" in text
    assert 'src="https://wod.example.org/img/python101.png"' in html
    assert "http://hub-emea.wod.example.org:80/" in html and "Start workshop" in html
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in html  # a name is text, never markup
    assert mail.state is OutboxState.SENT and mail.attempts == 1


def test_ended_mail_has_completion_badges_replay_feedback_and_register(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    def badges(conn: Any, session: Session | None) -> dict[str, Any]:
        assert session is not None
        return {"badges": [{"name": "Python 101", "image": "https://b.example.org/p.png",
                            "url": f"https://portal.example.org/badges/{session.id}"}]}

    mail_context.register_ended_extra(badges, name="test")
    try:
        s = active_session(mailing)
        mailing.sessions.set_completion(s.id, 75.0)
        mailing.sessions.transition(s.id, SessionState.CLEANING)
        mailing.sessions.transition(s.id, SessionState.ENDED)
        drain(sender(mailing, catalog, sink))
    finally:
        mail_context.unregister_extra("ended", "test")
    ended = [m for m in sink.messages() if "Thank you" in m["Subject"]]
    text, html = parts(ended[0])
    assert "You completed 75 %" in text
    assert f"https://portal.example.org/badges/{s.id}" in text
    assert 'src="https://b.example.org/p.png"' in html
    assert "https://videos.wod.example.org/python101.mp4" in text
    assert "https://portal.example.org/feedback" in text
    assert "Register for another workshop: https://portal.example.org/" in text
    assert "Pass-w0rd-1" not in text + html


def test_credentials_of_a_session_that_ended_before_sending_are_dropped_with_the_reason(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    s = active_session(mailing)
    mailing.sessions.purge(s.id)
    drain(sender(mailing, catalog, sink))
    by_kind = {m.kind: m for m in mailing.outbox.list()}
    assert by_kind["credentials"].state is OutboxState.DROPPED
    assert "ended: its credentials are no longer valid" in (by_kind["credentials"].last_error
                                                            or "")
    assert [m["Subject"] for m in sink.messages()] == [
        "Thank you for taking Python 101 - A first look at the Python language"]


def test_a_refusing_server_is_retried_with_back_off_then_the_mail_arrives(
        mailing: Store, catalog: Catalog, tmp_path: Path) -> None:
    with Sink(tmp_path / "busy", refuse=1) as busy:
        active_session(mailing)
        s = sender(mailing, catalog, busy)
        assert s.run_once() == 1
        [mail] = mailing.outbox.list()
        assert mail.state is OutboxState.QUEUED and mail.attempts == 1
        assert (mail.last_error or "").startswith("SMTP 451")
        assert mail.next_attempt_at > mail.created_at
        until(lambda: s.run_once(), "the retry was never due")
        assert len(busy.messages()) == 1
        assert busy.handler.refused == 1
    assert mailing.outbox.list()[0].state is OutboxState.SENT


def test_a_mail_that_keeps_failing_becomes_failed_and_an_operator_retries_it(
        mailing: Store, catalog: Catalog, tmp_path: Path) -> None:
    with Sink(tmp_path / "down", refuse=3) as down:
        active_session(mailing)
        s = sender(mailing, catalog, down)

        def gave_up() -> bool:
            s.run_once()
            return mailing.outbox.list()[0].state is OutboxState.FAILED

        until(gave_up, "the mail never gave up")
        [mail] = mailing.outbox.list()
        assert mail.attempts == 3 and down.messages() == []
        assert mailing.outbox.retry() == [mail.id]
        assert s.run_once() == 1
        assert len(down.messages()) == 1
    assert mailing.outbox.get(mail.id).state is OutboxState.SENT  # type: ignore[union-attr]


def test_two_sender_loops_on_one_store_send_every_mail_exactly_once(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    sessions = [new_session(mailing, email=f"p{n}@example.org", seat=n) for n in range(1, 31)]
    senders = [sender(mailing, catalog, sink) for _ in range(2)]
    for s in senders:
        s.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda s: mailing.sessions.activate(s.id), sessions))
        until(lambda: mailing.outbox.counts()[OutboxState.SENT] == 30, "not all mails sent")
    finally:
        for s in senders:
            s.stop()
    received = [m["To"] for m in sink.messages()]
    assert sorted(received) == sorted(f"p{n}@example.org" for n in range(1, 31))
    assert all(m.attempts == 1 for m in mailing.outbox.list())


def test_the_sender_wakes_at_once_for_a_mail_queued_in_its_process(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    s = sender(mailing, catalog, sink)
    s.poll = 30.0  # only the wake-up can deliver within the test's wait
    s.start()
    try:
        time.sleep(0.2)  # the loop is waiting
        active_session(mailing)
        until(lambda: sink.messages(), "the queued mail did not wake the sender", timeout=10)
    finally:
        s.stop()


def test_the_smtp_password_comes_from_the_secrets_file_granted_to_mail(
        catalog: Catalog) -> None:
    from wodsync.mail.sender import smtp_password
    from wodsync.mail.settings import MailSettings
    from wodsync.secrets import SecretError

    settings = MailSettings.model_validate({"from": "a@example.org", "smtp": {
        "user": "wod", "password": {"secret": "SMTP_PASSWORD"}}})
    granted = Secrets(env={}, entries={"SMTP_PASSWORD": Entry("s3cret", services=frozenset(
        {"mail"}))})
    assert smtp_password(settings, granted) == "s3cret"
    other = Secrets(env={}, entries={"SMTP_PASSWORD": Entry("s3cret", hosts=frozenset(
        {"hub-emea"}))})
    with pytest.raises(SecretError, match="not granted to service mail"):
        smtp_password(settings, other)


# -- the catalog: settings, templates, validate, preview ----------------------------------------


def test_validate_locates_template_and_settings_errors(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", 'from: "nobody"\nsmtp: {prot: 25}\n')
    (root / "catalog/mail/credentials.txt.j2").write_text(
        "Subject: Hello {{ participant.name }}\n\nUser {{ session.username }}, "
        "password {{ pasword }}\n")
    (root / "catalog/mail/ended.html.j2").write_text("<p>{{ password }}</p>\n")
    (root / "catalog/mail/welcome.txt.j2").write_text("hi\n")
    result = wodsync("validate", "--root", root)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if "error[" in line]
    assert lines == [
        "catalog/mail.yaml:1:7: error[value_error]: from: 'nobody' is not an e-mail address "
        "(name@domain, or Name <name@domain>)",
        "catalog/mail.yaml:2:8: error[extra_forbidden]: unknown key 'prot' (did you mean "
        "'port'?)",
        "catalog/mail/credentials.txt.j2:3:42: error[undefined-variable]: 'pasword' is not "
        "defined",
        "catalog/mail/ended.html.j2:1:7: error[undefined-variable]: 'password' is not defined",
        "catalog/mail/welcome.txt.j2:1:1: error[unknown-mail-template]: not a mail template: "
        "expected <kind>.txt.j2 or <kind>.html.j2 with kind one of confirm, credentials, "
        "expiring, ended, failed, operator",
    ]


def test_a_repository_without_catalog_mail_uses_the_built_in_templates(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    shutil.rmtree(root / "catalog/mail")
    catalog, found = validate(root)
    assert [d for d in found if d.is_error] == []
    assert catalog.mail_templates.source("ended", "html").builtin


def test_preview_prints_a_rendered_mail_with_sample_values(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    result = wodsync("mail", "preview", "expiring", "--workshop", "WKSHP-Git101", "--root", root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Subject: Git 101")
    assert "From: WoD Example <wod@example.org>" in out and "Reply-To: support@example.org" in out
    assert "Password:  Sample-Pass1" in out and "https://portal.example.org/extend/sample" in out
    html = wodsync("mail", "preview", "ended", "--html", "--root", root).stdout
    assert "<img src=" in html and "Register for another workshop" in html


def test_mail_list_and_retry_from_the_command_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_store(state_dir=state) as store:
        ok = store.outbox.enqueue("confirm", "a@example.org")
        bad = store.outbox.enqueue("confirm", "b@example.org")
        store.outbox.claim("me", timedelta(seconds=30))
        store.outbox.mark_sent(ok, "me")
        store.outbox.mark_retry(bad, "me", "SMTP 550 no such user", timedelta(0), give_up=True)
    listed = wodsync("mail", "list", "--state", "failed", "--state-dir", state)
    assert listed.returncode == 0 and "SMTP 550 no such user" in listed.stdout
    assert f"{bad:>6}  failed" in listed.stdout and "a@example.org" not in listed.stdout
    again = wodsync("mail", "retry", str(ok), "--state-dir", state)
    assert again.returncode == 1 and "is sent, not failed" in again.stderr
    assert wodsync("mail", "retry", "--failed", "--state-dir", state).returncode == 0
    with open_store(state_dir=state) as store:
        assert store.outbox.get(bad).state is OutboxState.QUEUED  # type: ignore[union-attr]


def test_the_sink_runs_as_a_process_and_stores_what_it_receives(tmp_path: Path) -> None:
    import signal
    import smtplib
    import subprocess
    import sys

    from wodsync.mail.sink import free_port, read_maildir

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wodsync", "mail", "sink", "--maildir",
                             str(tmp_path / "box"), "--port", str(port)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE,
                            text=True)
    try:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "hi"
        msg.set_content("hello")

        def send() -> bool:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                    client.send_message(msg)
                return True
            except OSError:
                return False

        until(send, "the sink never listened", timeout=30)
        assert [m["Subject"] for m in read_maildir(tmp_path / "box")] == ["hi"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0



def test_the_daemon_metrics_count_sent_and_failed_mails_and_show_the_queue(
        mailing: Store, catalog: Catalog, tmp_path: Path) -> None:
    from wodsync.daemon.metrics import Metrics

    metrics = Metrics()
    metrics.watch_outbox(mailing)
    active_session(mailing)
    active_session(mailing, email="bob@example.org", seat=2)
    assert "wodsync_mail_queued 2.0" in metrics.exposition().decode()
    with Sink(tmp_path / "picky", refuse=1) as picky:
        s = sender(mailing, catalog, picky, on_result=metrics.mail_result)
        until(lambda: s.run_once() >= 0 and mailing.outbox.counts()[OutboxState.SENT] == 2,
              "the mails were not sent")
    shown = metrics.exposition().decode()
    assert 'wodsync_mail_sent_total{kind="credentials"} 2.0' in shown
    assert 'wodsync_mail_retried_total{kind="credentials"} 1.0' in shown
    assert 'wodsync_mail_outbox{state="sent"} 2.0' in shown
    assert "wodsync_mail_queued 0.0" in shown


def test_the_built_in_templates_pass_the_checks_validate_applies(catalog: Catalog) -> None:
    from wodsync.catalog.templates import check_template
    from wodsync.mail.compose import sample_context
    from wodsync.mail.templates import PARTS, builtin
    from wodsync.store.outbox import KINDS

    for kind in KINDS:
        for part in PARTS:
            source = builtin(kind, part)
            found = check_template(source.rel, source.text.encode(),
                                   {"": sample_context(catalog, kind)})
            assert found == [], (kind, part, found)
            assert part == "html" or source.text.startswith("Subject: ")


def test_expiring_carries_the_extend_link_and_failed_tells_participant_and_operators(
        mailing: Store, catalog: Catalog, sink: Sink) -> None:
    links.register("extend", lambda req: f"{req.base_url}/s/x-{req.session.id}#extend")
    try:
        s = active_session(mailing)
        assert s.ends_at is not None
        mailing.sessions.mark_expiring(timedelta(hours=3), s.ends_at - timedelta(minutes=30))
        failed = new_session(mailing, email="bob@example.org", seat=2)
        mailing.sessions.fail(failed.id, "create hook exited 3")
        drain(sender(mailing, catalog, sink))
    finally:
        links.unregister("extend")
    by_subject = {str(m["Subject"]): m for m in sink.messages()}
    expiring = by_subject["Python 101 - A first look at the Python language: your workshop "
                          f"ends at {s.ends_at:%Y-%m-%d %H:%M} UTC"]
    text, html = parts(expiring)
    assert f"https://portal.example.org/s/x-{s.id}#extend" in text + html
    assert "Save your work now" in text and "Pass-w0rd-1" in text
    [to_bob] = [m for m in sink.messages() if m["To"] == "bob@example.org"]
    bob_text, _ = parts(to_bob)
    assert "your registration had to be reset" in bob_text.replace("\n", " ")
    assert "create hook exited 3" not in bob_text  # internals go to the operators only
    [to_ops] = [m for m in sink.messages() if m["To"] == "ops@example.org"]
    assert "create hook exited 3" in parts(to_ops)[0] and failed.id in str(to_ops["Subject"])
