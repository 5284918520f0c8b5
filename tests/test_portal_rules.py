"""The portal's rules without seats: screening and folding, `catalog/portal.yaml` and its
located errors, the links' secrets, and the store's rate limits, registrations and the one
live session per folded address (SQLite here; PostgreSQL in test_portal)."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest

from wodsync.catalog.models import PortalFile
from wodsync.portal.links import Links, confirm_url, links_of, session_url
from wodsync.portal.screening import Refusal, fold, rate, screen, span
from wodsync.store import AlreadyLive, Candidate, Participant, open_store
from wodsync.store.models import utcnow
from wodsync.store.registrations import Limit, LiveElsewhere, RateLimited


def test_folding_drops_case_and_the_plus_tag_of_the_local_part_only():
    assert fold("Ann+Work@Example.ORG") == "ann@example.org"
    assert fold("ann@example.org") == fold("ANN+1@example.org") == fold("ann+2+3@EXAMPLE.org")
    assert fold("ann.b@example.org") != fold("annb@example.org")
    assert fold("ann@ex+ample.org") == "ann@ex+ample.org"


def test_spans_and_rates_are_read_as_written():
    assert span("24h") == timedelta(hours=24) and span("30m") == timedelta(minutes=30)
    assert span("2d") == timedelta(days=2)
    assert rate("3/hour") == (3, timedelta(hours=1)) and rate("20/day") == (20, timedelta(days=1))


@pytest.mark.parametrize("address, words", [
    ("someone@mailinator.com", "Addresses at mailinator.com are throw-away addresses"),
    ("someone@x.mailinator.com", "Addresses at x.mailinator.com are throw-away"),
    ("not an address", "This e-mail address cannot be used"),
    ("ann@", "This e-mail address cannot be used"),
    ("ann@denied.example.net", "Registrations with addresses at denied.example.net are not"),
    ("boss@example.com", "Registrations with addresses at example.com are not accepted"),
])
def test_screening_refuses_in_words_a_participant_understands(address, words):
    settings = PortalFile.model_validate({"deny": ["example.net", "boss@example.com"]})
    with pytest.raises(Refusal, match=re.escape(words)):
        screen(settings, address)


def test_screening_keeps_the_address_and_gives_its_folded_key():
    settings = PortalFile.model_validate({"deny": ["boss@example.com"]})
    passed = screen(settings, "  Ann+Lab@Example.com ")
    assert passed.email == "Ann+Lab@example.com" and passed.key == "ann@example.com"
    with pytest.raises(Refusal, match="not accepted"):
        screen(settings, "Boss+x@EXAMPLE.com")  # the deny list sees the folded address


def test_an_allow_list_admits_its_domains_subdomains_and_addresses_only():
    settings = PortalFile.model_validate({"allow": ["hpe.com", "guest@example.org"]})
    assert screen(settings, "a@hpe.com").key == "a@hpe.com"
    assert screen(settings, "a@emea.hpe.com").key == "a@emea.hpe.com"
    assert screen(settings, "Guest+1@example.org").key == "guest@example.org"
    with pytest.raises(Refusal, match=r"example\.org is not one of them"):
        screen(settings, "other@example.org")


def test_portal_yaml_errors_are_located(repo, cli):
    repo.write("catalog/portal.yaml", "confirm_ttl: 24 hours\nalow: [x.org]\n"
                                      "rate_limit: {per_address: 3/fortnight}\n"
                                      "deny: ['not a domain']\n")
    done = cli("validate", "--root", repo.root)
    assert done.exit_code == 1
    out = done.output
    assert "catalog/portal.yaml:1:" in out and "confirm_ttl" in out
    assert "catalog/portal.yaml:2:1:" in out and "did you mean 'allow'" in out
    assert "catalog/portal.yaml:3:" in out and "per_address" in out
    assert "catalog/portal.yaml:4:" in out


def test_the_example_portal_yaml_is_valid_and_a_missing_one_means_the_defaults(repo, cli):
    assert cli("validate", "--root", repo.root).exit_code == 0
    repo.path("catalog/portal.yaml").unlink()
    assert cli("validate", "--root", repo.root).exit_code == 0
    assert PortalFile().one_live_session and PortalFile().confirm_ttl == "24h"


def test_a_link_is_accepted_only_for_its_kind_and_id():
    links, other = Links(b"k" * 32), Links(b"j" * 32)
    token = links.token("session", "abc123")
    assert links.check("session", token) == "abc123"
    assert links.check("confirm", token) is None, "a session link is no confirmation link"
    assert other.check("session", token) is None, "another key forges nothing"
    mac = token.split(".")[1]
    assert links.check("session", f"abc124.{mac}") is None, "another session's id: refused"
    assert links.check("session", token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert links.check("session", "abc123") is None and links.check("session", ".x") is None


@pytest.fixture
def store(tmp_path):
    opened = open_store(state_dir=tmp_path / "state")
    yield opened
    opened.close()


def test_links_come_from_the_store_key_so_two_openings_of_a_store_agree(store, tmp_path):
    again = open_store(state_dir=tmp_path / "state")
    try:
        assert session_url(store, "s1", "https://p.example/") == \
            session_url(again, "s1", "https://p.example") == \
            "https://p.example" + links_of(store).session_path("s1")
        assert confirm_url(store, "r1").startswith("/confirm/r1.")
    finally:
        again.close()
    other = open_store(state_dir=tmp_path / "other")
    try:
        assert links_of(other).check("session", links_of(store).token("session", "s1")) is None
    finally:
        other.close()


def test_rate_limits_count_per_address_and_per_client_within_their_window(store):
    regs, now = store.registrations, utcnow()
    per_address, per_client = Limit(2, timedelta(hours=1)), Limit(3, timedelta(minutes=10))
    regs.attempt("a@x.org", "10.0.0.1", per_address, per_client, now)
    regs.attempt("a@x.org", "10.0.0.2", per_address, per_client, now)
    with pytest.raises(RateLimited) as refused:
        regs.attempt("a@x.org", "10.0.0.3", per_address, per_client, now)
    assert refused.value.scope == "address"
    assert refused.value.retry_at == now + timedelta(hours=1)
    regs.attempt("b@x.org", "10.0.0.1", per_address, per_client, now)
    regs.attempt("c@x.org", "10.0.0.1", per_address, per_client, now)
    with pytest.raises(RateLimited) as refused:
        regs.attempt("d@x.org", "10.0.0.1", per_address, per_client, now)
    assert refused.value.scope == "client"
    later = now + timedelta(minutes=11)
    regs.attempt("d@x.org", "10.0.0.1", per_address, per_client, later)  # the window moved
    with pytest.raises(RateLimited):  # the refused attempts counted nothing, the others do
        regs.attempt("a@x.org", "10.0.0.9", per_address, per_client, later)


def _allocate(store, workshop, email, key, seat):
    return store.sessions.allocate(workshop, Participant("Ann", email, "", key),
                                   [Candidate("lab", "h1", seat, f"u{seat}")], 5, 1.0, "r1",
                                   "pw-" + email)


def test_one_live_session_per_folded_address_across_workshops_is_the_stores(store):
    first = _allocate(store, "WKSHP-A", "Ann+1@x.org", "ann@x.org", 1)
    with pytest.raises(AlreadyLive) as refused:
        _allocate(store, "WKSHP-B", "ann@X.org", "ann@x.org", 2)
    assert refused.value.session.id == first.id
    other = _allocate(store, "WKSHP-B", "ann@x.org", None, 3)  # no key: the rule is off
    assert other.email_key is None
    store.sessions.purge(first.id)
    assert _allocate(store, "WKSHP-B", "ann+2@x.org", "ann@x.org", 2).email_key == "ann@x.org"


def test_a_seat_held_for_reset_no_longer_counts_as_the_persons_session(store):
    from wodsync.store import SessionState

    first = _allocate(store, "WKSHP-A", "eve@x.org", "eve@x.org", 1)
    store.sessions.activate(first.id)
    store.sessions.transition(first.id, SessionState.CLEANING)
    with pytest.raises(AlreadyLive):
        _allocate(store, "WKSHP-B", "eve@x.org", "eve@x.org", 2)
    store.sessions.transition(first.id, SessionState.HELD)
    assert store.sessions.get(first.id).live, "held: the seat is still the workshop's"
    assert _allocate(store, "WKSHP-B", "Eve+2@x.org", "eve@x.org", 2).email_key == "eve@x.org"
    store.registrations.register(workshop="WKSHP-C", name="Eve", email="eve@x.org",
                                 company="", email_key="eve@x.org", client="c",
                                 ttl=timedelta(hours=1), one_live=False)
    with pytest.raises(LiveElsewhere):  # the session of WKSHP-B is under way
        store.registrations.register(workshop="WKSHP-C", name="Eve", email="eve@x.org",
                                     company="", email_key="eve@x.org", client="c",
                                     ttl=timedelta(hours=1), one_live=True)


def test_concurrent_allocations_of_one_folded_address_give_one_seat(store):
    won, lost = [], []

    def allocate(n):
        try:
            won.append(_allocate(store, f"WKSHP-{n}", f"bob+{n}@x.org", "bob@x.org", n))
        except AlreadyLive as exc:
            lost.append(exc.session.id)

    threads = [threading.Thread(target=allocate, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7 and set(lost) == {won[0].id}


def test_a_registration_is_refused_while_the_person_has_a_live_session(store):
    live = _allocate(store, "WKSHP-A", "Cat@x.org", "cat@x.org", 1)
    kept = []
    with pytest.raises(LiveElsewhere) as refused:
        store.registrations.register(
            workshop="WKSHP-B", name="Cat", email="cat+b@x.org", company="", email_key="cat@x.org",
            client="c", ttl=timedelta(hours=1), one_live=True,
            enqueue=lambda conn, r: kept.append(r))
    assert refused.value.session.id == live.id and kept == []
    reg = store.registrations.register(
        workshop="WKSHP-B", name="Cat", email="cat+b@x.org", company="", email_key="cat@x.org",
        client="c", ttl=timedelta(hours=1), one_live=False,
        enqueue=lambda conn, r: kept.append(r))
    assert kept == [reg] and reg.session_id is None and not reg.expired(utcnow())
    assert reg.expired(utcnow() + timedelta(hours=2))
    assert store.registrations.confirmed(reg.id, live.id).session_id == live.id
    assert store.registrations.confirmed(reg.id, "other").session_id == live.id, \
        "the first session a registration gets is the one it keeps"
    assert store.registrations.of_session(live.id).id == reg.id


def _session(state, password="S3cret-pw"):
    from wodsync.store import Session, SessionState

    now = utcnow()
    return Session(id="0123456789ab", workshop="WKSHP-A", name="Ann", email="ann@x.org",
                   company="", location="lab", host="h1", seat=1, username="student1", slot=0,
                   state=SessionState(state), duration_hours=2.0, created_at=now,
                   started_at=now, ends_at=now + timedelta(hours=2), ended_at=None,
                   expiring_at=None, completion=75.0, revision="r", error=None,
                   password=password)


def _render(session, running, **extra):
    from wodsync.api.pages import page

    view = {"session": session, "title": "Python 101", "running": running,
            "hub_url": "http://hub.example:8000/" if running else None,
            "username": session.username if running else None,
            "password": session.password if running else None, "time_left": "2 h",
            "ends_at": session.ends_at.isoformat(), "extension_left": 2.0, "step_hours": 1.0,
            "replay": "https://video.example/1", "feedback": "https://f.example/",
            "badges": [], "refusal": "", "notice": "", "page": "/s/x.y", **extra}
    return page("session.html", 200, "tok" * 8, **view)


def test_the_running_page_has_the_start_button_the_credentials_and_its_forms():
    answer = _render(_session("active"), True)
    body = answer.body.decode()
    assert 'id="start" href="http://hub.example:8000/"' in body and "Start workshop" in body
    assert "student1" in body and "S3cret-pw" in body
    assert 'action="/s/x.y/extend"' in body and 'action="/s/x.y/unregister"' in body
    assert body.count('name="csrf" value="toktoktoktoktoktoktoktok"') == 2
    assert "wodsync_csrf=toktoktoktoktoktoktoktok" in answer.headers["set-cookie"]
    assert "SameSite=strict" in answer.headers["set-cookie"]
    assert "Register for another" not in body


def test_the_ended_page_shows_completion_badges_replay_and_feedback_and_no_form():
    from wodsync.portal.badges import BadgeLink

    body = _render(_session("ended", password=""), False, badges=[
        BadgeLink("Python 101", "https://b.example/p.png", "/badges/1")]).body.decode()
    assert "Your workshop has ended." in body and "You completed 75 % of it." in body
    assert 'href="/badges/1"' in body and "https://video.example/1" in body
    assert "https://f.example/" in body and 'href="/register"' in body
    assert "student1" not in body and "<form" not in body and "Start workshop" not in body


def test_participant_text_is_escaped_in_the_pages():
    body = _render(_session("active"), True, title="<script>alert(1)</script>").body.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)" in body


def test_the_pages_say_the_portal_is_starting_before_a_revision_is_deployed(store):
    import requests

    from wodsync.api.app import create_app
    from wodsync.api.deps import Context
    from wodsync.sessions.service import SessionService
    from wodsync.source.revision import Current

    from apiserver import serving

    service = SessionService(store, Current())  # nothing deployed yet
    with serving(create_app(Context(store, sessions=service))) as base:
        http = requests.Session()
        http.cookies.set("wodsync_csrf", "c" * 32)
        shown = http.get(base + "/register", timeout=30)
        posted = http.post(base + "/register", timeout=30, data={
            "workshop": "WKSHP-A", "name": "A", "email": "a@example.org", "terms": "yes",
            "csrf": "c" * 32})
        for answer in (shown, posted):
            assert answer.status_code == 503 and "This portal is starting" in answer.text
            assert answer.headers["content-type"].startswith("text/html")
        assert http.get(base + "/s/abc.def", timeout=30).status_code == 404, \
            "a link that is not ours is a 404 whatever the state"
        api = requests.get(base + "/api/v1/workshops", timeout=30)
        assert api.status_code == 503 and "no valid revision" in api.json()["detail"]
