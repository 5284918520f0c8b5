"""Alerts: a host or the source Stalled past the threshold is told once per episode — an
`operator` mail through the outbox to a real SMTP sink (aiosmtpd) and a signed JSON POST to a
real HTTP receiver — and once more when it is Ready again; a receiver that fails is retried
with back-off without ever holding the check. Last, a real daemon whose remote moves away and
back tells both."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from wodsync.catalog.loader import Catalog, load_catalog
from wodsync.daemon.alerts import SIGNATURE_HEADER, Alerts, Webhook
from wodsync.mail.sender import Sender
from wodsync.mail.sink import Sink
from wodsync.secrets import Secrets
from wodsync.source.webhook import verify_signature
from wodsync.store import Store

from helpers import until
from pg import store_on
from sourcelab import lab_repo, running

MAIL_YAML = """\
from: "WoD Lab <wod@example.org>"
operators: [ops@example.org, oncall@example.org]
sending: {backoff_seconds: 0.05, max_backoff_seconds: 0.2, max_attempts: 3}
"""
SECRET = "alert-signing-secret"
LEAKY = "cannot connect to https://root:hunter2@lab.example.org:22: refused"


class Receiver:
    """A real HTTP server in a thread that keeps every POST; it answers `codes` in turn
    (then 200), each after `hold` is set when `hold` is given."""

    def __init__(self, codes: tuple[int, ...] = (), hold: threading.Event | None = None) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.codes, self.hold = list(codes), hold
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((dict(self.headers), body))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def notices(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    repo = lab_repo(tmp_path / "repo", "wodtbq", 56800, mail=MAIL_YAML)
    return load_catalog(repo.work)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The alerts' episodes and the conditions they read, on both databases."""
    with store_on(request.param, tmp_path, monkeypatch) as opened:
        yield opened


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    with Sink(tmp_path / "maildir") as running_sink:
        yield running_sink


def alerts(store: Store, catalog: Catalog, url: str | None, after: float = 60) -> Alerts:
    return Alerts(store, ("repo", "main"), lambda: catalog.mail,
                  Webhook(lambda: (url, SECRET), backoff=0.05), after=after)


def sent(store: Store, catalog: Catalog, sink: Sink) -> list[tuple[str, str, str]]:
    """Every mail the outbox holds, sent to the sink: (to, subject, body) of each arrived."""
    sender = Sender(store, lambda: catalog, Secrets(env={}), smtp=("127.0.0.1", sink.port))
    while sender.run_once():
        pass
    return sorted((m["Delivered-To"], m["Subject"], m.get_body(("plain",)).get_content())
                  for m in sink.messages())


def test_a_stalled_host_is_told_once_per_episode_then_resolved_by_mail_and_webhook(
        store, catalog, sink):
    with Receiver() as hook:
        watch = alerts(store, catalog, hook.url)
        watch.webhook.start()
        try:
            failed = store.status.update_host("lab", condition="Stalled",
                                              reason="ReconcileFailed", message=LEAKY,
                                              last_error=LEAKY)
            since = failed.stalled_since
            assert watch.check(now=since + timedelta(seconds=30)) == [], "not yet past 60 s"
            [fired] = watch.check(now=since + timedelta(seconds=61))
            assert (fired.status, fired.subject) == ("firing", "host:lab")
            store.status.update_host("lab", condition="Reconciling")  # its retry …
            store.status.update_host("lab", condition="Stalled", last_error=LEAKY)  # … fails
            for later in (62, 600):
                assert watch.check(now=since + timedelta(seconds=later)) == [], "told once"
            until(lambda: len(hook.posts) == 1, "the webhook never got the alert")

            mails = sent(store, catalog, sink)
            assert [m[0] for m in mails] == ["oncall@example.org", "ops@example.org"]
            assert mails[0][1] == "[wodsync] host lab Stalled for 1 min (ReconcileFailed)"
            assert "refused" in mails[0][2] and "hunter2" not in mails[0][2]
            headers, body = hook.posts[0]
            assert verify_signature(SECRET.encode(), body, headers[SIGNATURE_HEADER])
            notice = json.loads(body)
            assert {k: notice[k] for k in ("status", "subject", "kind", "name", "reason")} == {
                "status": "firing", "subject": "host:lab", "kind": "host", "name": "lab",
                "reason": "ReconcileFailed"}
            assert "hunter2" not in body.decode() and notice["stalledSeconds"] == 61

            store.status.update_host("lab", condition="Ready", reason="Applied", message="ok")
            [resolved] = watch.check()
            assert (resolved.status, resolved.since) == ("resolved", since)
            assert watch.check() == [], "resolved once"
            until(lambda: len(hook.posts) == 2, "the webhook never got the resolution")
            assert hook.notices()[1]["status"] == "resolved"
            subjects = [m[1] for m in sent(store, catalog, sink)]
            assert subjects.count("[wodsync] resolved: host lab is Ready again (Stalled "
                                  f"{(resolved.at - since).total_seconds() / 60:.0f} min)") == 2

            again = store.status.update_host("lab", condition="Stalled", last_error="down")
            assert again.stalled_since > since, "a new episode"
            [second] = watch.check(now=again.stalled_since + timedelta(seconds=61))
            assert second.status == "firing" and len(sent(store, catalog, sink)) == 6
        finally:
            watch.webhook.stop(5)
    assert [a.subject for a in store.status.alerts()] == ["host:lab"]


def test_a_host_that_left_the_catalog_while_stalled_is_resolved_once(store, catalog):
    """Its status forgotten (the daemon does it at the deploy that drops it), its open
    episode is over: one "resolved", reason Removed, and never again."""
    watch = alerts(store, catalog, None)
    failed = store.status.update_host("gone", condition="Stalled", last_error="down")
    [fired] = watch.check(now=failed.stalled_since + timedelta(seconds=61))
    assert fired.subject == "host:gone"
    assert store.status.forget_host("gone") and not store.status.forget_host("gone")
    [over] = watch.check()
    assert (over.status, over.subject, over.reason) == ("resolved", "host:gone", "Removed")
    assert watch.check() == []
    assert store.status.hosts() == []


def test_a_failing_receiver_is_retried_with_back_off_and_never_holds_the_check(
        store, catalog, caplog):
    hold = threading.Event()
    with Receiver(codes=(500, 503), hold=hold) as hook:
        watch = alerts(store, catalog, hook.url, after=0)
        watch.webhook.start()
        try:
            store.status.record_source("repo", "main", "Stalled", "FetchFailed",
                                       "cannot fetch branch main from /srv/repo.git")
            [fired] = watch.check()
            until(lambda: len(hook.posts) == 1, "the webhook was never called")
            assert fired.subject == "source" and not hold.is_set(), \
                "the check returned while the receiver still held the first delivery"
            hold.set()
            until(lambda: len(hook.posts) == 3, "the failed deliveries were not retried")
            assert len({body for _, body in hook.posts}) == 1, "the same notice each time"
            retried = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
            assert any("attempt 1 failed: HTTP 500; next in" in m for m in retried), retried
            assert any("attempt 2 failed: HTTP 503" in m for m in retried), retried
            assert all(hook.url not in m for m in retried)
        finally:
            watch.webhook.stop(5)


def test_a_daemon_tells_its_source_stalled_and_back_by_mail_and_webhook(tmp_path, sink):
    repo = lab_repo(tmp_path / "repo", "wodtbq", 56800, mail=MAIL_YAML)
    with Receiver() as hook, running(
            repo, tmp_path / "state", "--interval", "1", "--alert-after", "1",
            "--smtp", f"127.0.0.1:{sink.port}",
            env={"WODSYNC_ALERT_WEBHOOK_URL": hook.url,
                 "WODSYNC_ALERT_WEBHOOK_SECRET": SECRET}) as d:
        until(lambda: d.get("/readyz").ok, f"never ready:\n{d.text()}")
        moved = repo.origin.with_name("moved.git")
        repo.origin.rename(moved)
        until(lambda: hook.posts, f"no alert reached the webhook:\n{d.text()}")
        [firing] = hook.notices()
        assert (firing["status"], firing["subject"], firing["reason"]) == (
            "firing", "source", "FetchFailed")
        until(lambda: len(sink.messages()) == 2, "the operators' mails never came")
        moved.rename(repo.origin)
        assert d.poke(repo.first).status_code == 202  # fetched now, not after the back-off
        until(lambda: len(hook.posts) == 2, f"no resolution:\n{d.text()}")
        assert [n["status"] for n in hook.notices()] == ["firing", "resolved"]
        until(lambda: len(sink.messages()) == 4, "the resolution mails never came")
        subjects = sorted(m["Subject"] for m in sink.messages())
        assert subjects[0].startswith("[wodsync] resolved: source is Ready again")
        assert subjects[2].startswith("[wodsync] source Stalled for")
        assert [a["subject"] for a in d.status()["alerts"]] == ["source"]
