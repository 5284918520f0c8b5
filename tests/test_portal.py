"""The participant's pages through a real uvicorn against real seats (the session lab's
accounts, sessionlab.py): register → confirmation (outbox) → link → session page with the
credentials → extend → unregister → the end without credentials; every refusal; two
concurrent confirmations of one folded address give one seat; and the store's rule on
PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from datetime import timedelta
from html import unescape

import pytest
import requests
from sqlalchemy import select, update

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.controller import open_controller
from wodsync.mail import links as mail_links
from wodsync.portal.links import confirm_url, links_of
from wodsync.secrets import Secrets
from wodsync.store import AlreadyLive, Candidate, Participant, SessionState, open_store
from wodsync.store.models import utcnow
from wodsync.store.outbox import OUTBOX
from wodsync.store.registrations import REGISTRATIONS

import apiserver
from pg import pg_url  # noqa: F401  (a fixture)
from sessionlab import cleanup_accounts, wodsync, write_catalog

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("shc") is None,
                                reason="needs root and shc (./bootstrap test)")

PORTAL_YAML = ("terms: {text: I accept the lab's terms., url: https://lab.example/terms}\n"
               "deny: [denied.example]\n"
               "rate_limit: {per_address: 4/hour, per_client: 200/hour}\n"
               "confirm_ttl: 2h\nextend: {step_hours: 1, max_hours: 2}\n"
)
MAIL_YAML = ("smtp: {host: localhost, port: 1}\nfrom: lab@example.org\n"
             "feedback_url: https://lab.example/feedback\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The session lab converged once, served by an in-process API on a loopback port."""
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("portal")
    root = tmp / "repo"
    write_catalog(root, tmp)
    (root / "catalog/portal.yaml").write_text(PORTAL_YAML)
    (root / "catalog/mail.yaml").write_text(MAIL_YAML)  # no sender runs: mails stay queued
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    ctl = open_controller(root, tmp / "state", None, Secrets())
    app = create_app(Context(ctl.store, sessions=ctl.sessions, api_token=lambda: "t" * 32))
    with apiserver.serving(app) as base:
        yield {"base": base, "ctl": ctl, "store": ctl.store}
    for s in ctl.store.sessions.find(live=True):
        ctl.sessions.purge(s.id, "test teardown")
    ctl.close()
    cleanup_accounts()


class Browser:
    """A participant's browser: cookies kept, redirects shown, forms filled from the page."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()

    def get(self, path: str) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        return self.http.get(url, allow_redirects=False, timeout=60)

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        return self.http.post(self.base + path, data=data, allow_redirects=False, timeout=120)

    def csrf(self, html: str) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', html)[1]

    def register(self, email: str, workshop: str = "WKSHP-Sess", name: str = "Ann Lee",
                 terms: str = "yes") -> requests.Response:
        page = self.get("/register")
        return self.post("/register", {"workshop": workshop, "name": name, "email": email,
                                       "company": "ACME", "terms": terms,
                                       "csrf": self.csrf(page.text)})


def _registration(store, email: str):
    with store.engine.connect() as conn:
        row = conn.execute(select(REGISTRATIONS).where(REGISTRATIONS.c.email == email)
                           .order_by(REGISTRATIONS.c.created_at.desc())).first()
    assert row is not None, f"no registration of {email}"
    return row


def _confirm_link(lab, email: str) -> str:
    """The link the confirmation mail carries: its outbox row names the registration (never
    the secret), and the mail renderer builds the link with the portal's builder."""
    reg = _registration(lab["store"], email)
    with lab["store"].engine.connect() as conn:
        mail = conn.execute(select(OUTBOX).where(OUTBOX.c.dedup_key == f"confirm:{reg.id}")
                            ).one()
    assert mail.kind == "confirm" and mail.recipient == email and mail.state == "queued"
    assert mail.context["registration"] == reg.id
    assert "confirm/" not in json.dumps(mail.context), "no secret in the outbox"
    built = mail_links.build(mail_links.LinkRequest("confirm", lab["store"], None,
                                                    mail.context, lab["base"]))
    assert built == confirm_url(lab["store"], reg.id, lab["base"])
    return built


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def _end(lab, *emails: str) -> None:
    for s in lab["store"].sessions.find(live=True):
        if s.email.lower() in emails:
            lab["ctl"].sessions.cleanup(s.id)


def test_the_journey_register_confirm_credentials_extend_unregister(lab):
    browser = Browser(lab["base"])
    assert browser.get("/").headers["location"] == "/register"
    page = browser.get("/register")
    assert page.status_code == 200
    assert "Sessions" in page.text and "I accept the lab&#39;s terms." in page.text
    assert "https://lab.example/terms" in page.text and "Reset" in page.text
    assert "WKSHP-Off" not in page.text, "inactive workshops are not shown"
    assert "20 seats left" in _text(page.text)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"

    sent = browser.register("Ann.Lee@Example.org")
    assert sent.status_code == 200 and "We sent a link to Ann.Lee@example.org" in sent.text
    assert lab["store"].sessions.find(email="ann.lee@example.org") == [], \
        "no seat before the address is confirmed"
    link = _confirm_link(lab, "Ann.Lee@example.org")

    clicked = browser.get(link)
    assert clicked.status_code == 303
    page_path = clicked.headers["location"]
    [session] = lab["store"].sessions.find(email="ann.lee@example.org")
    assert session.state is SessionState.ACTIVE and session.email_key == "ann.lee@example.org"
    assert page_path == links_of(lab["store"]).session_path(session.id)
    mailed = mail_links.build(mail_links.LinkRequest("session", lab["store"], session, {},
                                                     lab["base"]))
    assert mailed == lab["base"] + page_path, "the mails link to this very page"

    shown = browser.get(page_path)
    assert shown.status_code == 200
    assert session.username in shown.text and session.password in shown.text
    assert re.search(r"1 h 59 min|2 h", _text(shown.text)), _text(shown.text)
    assert shown.headers["cache-control"] == "no-store"
    nonce = re.search(r"script-src 'nonce-([^']+)'", shown.headers["content-security-policy"])[1]
    assert f'<script nonce="{nonce}">' in shown.text

    again = Browser(lab["base"]).get(link)
    assert again.headers["location"] == page_path, "a link used twice: the same session"

    extended = browser.post(page_path + "/extend", {"csrf": browser.csrf(shown.text)})
    assert extended.status_code == 303
    after = lab["store"].sessions.get(session.id)
    assert after.ends_at - session.ends_at == timedelta(hours=1)
    shown = browser.get(page_path)
    assert "Extend by 1 h" in shown.text
    assert browser.post(page_path + "/extend", {"csrf": browser.csrf(shown.text)}) \
        .status_code == 303
    shown = browser.get(page_path)
    assert "Extend by 1 h" not in shown.text, "the self-service cap (2 h) is reached"
    refused = browser.post(page_path + "/extend", {"csrf": browser.csrf(shown.text)})
    assert refused.status_code == 409 and "2 h of extra time in all" in refused.text
    assert lab["store"].sessions.get(session.id).ends_at - session.ends_at == timedelta(hours=2)

    forged = browser.post(page_path + "/unregister", {"csrf": "x" * 32})
    assert forged.status_code == 403 and lab["store"].sessions.get(session.id).live
    ended = browser.post(page_path + "/unregister", {"csrf": browser.csrf(shown.text)})
    assert ended.status_code == 303
    assert lab["store"].sessions.get(session.id).state is SessionState.ENDED
    final = browser.get(page_path)
    assert final.status_code == 200 and "Your workshop has ended." in final.text
    assert session.password not in final.text and session.username not in final.text
    assert "https://lab.example/feedback" in final.text and 'href="/register"' in final.text
    assert "/extend" not in final.text and "/unregister" not in final.text
    assert Browser(lab["base"]).get(link).headers["location"] == page_path


@pytest.mark.parametrize("email, status, words", [
    ("joe@mailinator.com", 422, "Addresses at mailinator.com are throw-away addresses"),
    ("joe@denied.example", 422, "Registrations with addresses at denied.example are not"),
    ("joe@", 422, "This e-mail address cannot be used"),
])
def test_screening_refusals_say_why_and_register_nothing(lab, email, status, words):
    answer = Browser(lab["base"]).register(email)
    assert answer.status_code == status and words in unescape(answer.text)
    assert 'role="alert"' in answer.text and email in unescape(answer.text), "the form is kept"
    with lab["store"].engine.connect() as conn:
        assert conn.execute(select(REGISTRATIONS).where(REGISTRATIONS.c.email == email)
                            ).first() is None


def test_the_terms_a_name_and_the_form_token_are_needed(lab):
    browser = Browser(lab["base"])
    assert "Please accept the terms" in browser.register("t1@example.org", terms="").text
    assert "Please give your name" in browser.register("t2@example.org", name=" \t").text
    page = browser.get("/register")
    forged = browser.post("/register", {"workshop": "WKSHP-Sess", "name": "T", "terms": "yes",
                                        "email": "t3@example.org", "csrf": "y" * 32})
    assert forged.status_code == 403 and "This form had expired" in forged.text
    unknown = browser.post("/register", {"workshop": "WKSHP-Off", "name": "T", "terms": "yes",
                                         "email": "t4@example.org",
                                         "csrf": browser.csrf(page.text)})
    assert unknown.status_code == 404 and "not open for registration" in unknown.text


def test_one_live_workshop_per_person_with_case_and_plus_tags_folded(lab):
    browser = Browser(lab["base"])
    browser.register("bo@example.org")
    assert browser.get(_confirm_link(lab, "bo@example.org")).status_code == 303
    for variant in ("Bo+second@example.org", "BO@EXAMPLE.ORG"):
        refused = Browser(lab["base"]).register(variant, workshop="WKSHP-Reset")
        text = _text(refused.text)
        assert refused.status_code == 409, text
        assert "You already have a live workshop, Sessions; it ends in 1 h 59 min" in text \
            or "You already have a live workshop, Sessions; it ends in 2 h" in text
        assert "unregister from it on its page" in text
    _end(lab, "bo@example.org")
    assert Browser(lab["base"]).register("Bo+second@example.org", "WKSHP-Reset") \
        .status_code == 200, "once it ended, the person may register again"


def test_a_confirmation_checks_the_rule_again_and_concurrent_ones_give_one_seat(lab):
    for email in ("cy@example.org", "Cy+2@example.org", "cy+3@Example.org"):
        assert Browser(lab["base"]).register(email).status_code == 200
    links = [_confirm_link(lab, e) for e in ("cy@example.org", "Cy+2@example.org")]
    links.append(_confirm_link(lab, "cy+3@example.org"))
    answers: list[requests.Response] = []
    threads = [threading.Thread(target=lambda u=u: answers.append(Browser(lab["base"]).get(u)))
               for u in links]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = [s for s in lab["store"].sessions.find(live=True) if s.email_key == "cy@example.org"]
    assert len(live) == 1, "one folded address, one seat"
    codes = sorted(a.status_code for a in answers)
    # the same workshop: every click leads to the one session (the person's own)
    assert codes == [303, 303, 303], [a.text[-300:] for a in answers]
    assert {a.headers["location"] for a in answers} == \
        {links_of(lab["store"]).session_path(live[0].id)}
    _end(lab, "cy@example.org", "cy+2@example.org", "cy+3@example.org")


def test_a_confirmation_for_another_workshop_is_refused_while_one_is_live(lab):
    assert Browser(lab["base"]).register("di@example.org", "WKSHP-Reset").status_code == 200
    assert Browser(lab["base"]).register("di+b@example.org").status_code == 200
    first = Browser(lab["base"]).get(_confirm_link(lab, "di+b@example.org"))
    assert first.status_code == 303
    second = Browser(lab["base"]).get(_confirm_link(lab, "di@example.org"))
    assert second.status_code == 409
    assert "You already have a live workshop, Sessions" in _text(second.text)
    assert [s.workshop for s in lab["store"].sessions.find(live=True)
            if s.email_key == "di@example.org"] == ["WKSHP-Sess"]
    _end(lab, "di+b@example.org")


def test_the_rate_limit_per_address_counts_every_variant_of_it(lab):
    for variant in ("ed@example.org", "ed+1@example.org", "ED+2@example.org", "Ed@example.org"):
        assert Browser(lab["base"]).register(variant).status_code == 200
    refused = Browser(lab["base"]).register("ed+3@example.org")
    assert refused.status_code == 429
    assert "too many registrations from this e-mail address" in _text(refused.text)
    assert "try again in 59 min" in _text(refused.text) \
        or "try again in 1 h" in _text(refused.text)


def test_expired_tampered_and_foreign_links(lab):
    browser = Browser(lab["base"])
    browser.register("fay@example.org")
    link = _confirm_link(lab, "fay@example.org")
    reg = _registration(lab["store"], "fay@example.org")
    with lab["store"].engine.begin() as conn:
        conn.execute(update(REGISTRATIONS).where(REGISTRATIONS.c.id == reg.id)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = browser.get(link)
    assert expired.status_code == 410 and "has expired" in expired.text
    assert "register again" in expired.text
    assert lab["store"].sessions.find(email="fay@example.org") == []

    mac = link.rsplit(".", 1)[1]
    tampered = [link[:-1] + ("A" if link[-1] != "A" else "B"),
                link.replace(reg.id, "0" * len(reg.id)), f"{lab['base']}/confirm/{reg.id}",
                f"{lab['base']}/s/{reg.id}.{mac}"]
    for url in tampered:
        answer = browser.get(url)
        assert answer.status_code == 404 and "There is no such page" in answer.text, url

    browser.register("gus@example.org")
    assert browser.get(_confirm_link(lab, "gus@example.org")).status_code == 303
    [gus] = lab["store"].sessions.find(email="gus@example.org", live=True)
    own = links_of(lab["store"]).session_path(gus.id)
    assert browser.get(own).status_code == 200
    foreign = own.replace(gus.id, "0" * len(gus.id))
    answer = browser.get(foreign)
    assert answer.status_code == 404 and gus.password not in answer.text
    for path in (foreign + "/extend", foreign + "/unregister"):
        assert browser.post(path, {"csrf": "z" * 32}).status_code == 404
    assert lab["store"].sessions.get(gus.id).live
    _end(lab, "gus@example.org")


def test_one_live_session_per_folded_address_holds_on_postgresql(pg_url, tmp_path):  # noqa: F811
    store = open_store(pg_url, state_dir=tmp_path / "state")
    won, lost = [], []

    def allocate(n: int) -> None:
        try:
            won.append(store.sessions.allocate(
                f"WKSHP-{n}", Participant("Hal", f"hal+{n}@x.org", "", "hal@x.org"),
                [Candidate("lab", "h1", n, f"u{n}")], 5, 1.0, "r1", f"pw{n}"))
        except AlreadyLive as exc:
            lost.append(exc.session.id)

    try:
        threads = [threading.Thread(target=allocate, args=(n,)) for n in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 7 and set(lost) == {won[0].id}
    finally:
        store.close()
