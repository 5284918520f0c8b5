"""Badges: awarded in the transaction that ends a session, on a real store (SQLite and
PostgreSQL); their public page and signed Open Badges assertion through a real uvicorn, verified
as a third party would — with the public key fetched from the server.

Sessions are moved through the store as the release does (`Release._finished`: completion set,
then the move to ENDED, or HELD for a `reset` workshop); the hosts play no part in an award."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from joserfc.errors import BadSignatureError
from joserfc.jwk import RSAKey

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.badges import openbadges
from wodsync.badges.identity import fold_email
from wodsync.badges.keys import KEY_SECRET, new_key_pem
from wodsync.badges.links import badges_for_session
from wodsync.controller import working_tree_deployment
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.revision import Deployment
from wodsync.store import Participant, Session, SessionState, Store, open_store

from apiserver import serving
from conftest import PROJECT, REPO_PARTS
from pg import pg_url  # noqa: F401  (a fixture)

S = SessionState
SEATS = itertools.count(1)
THRESHOLD_WORKSHOP = "WKSHP-API101"     # badge_threshold: 60 in this module's catalog
DEFAULT_WORKSHOP = "WKSHP-Python101"    # no badge_threshold: WoD's default, 0
KEY_PEM = new_key_pem(2048)             # 2048 bits: the tests' key only, made once


def _deployment(root: Path, key: str | None) -> Deployment:
    entries = f"secrets:\n  {KEY_SECRET}:\n    services: [badges]\n    value: |\n" + "".join(
        f"      {line}\n" for line in key.splitlines()) if key else "secrets: {}\n"
    path = root.parent / f"secrets-{bool(key)}.yaml"
    path.write_text(entries)
    path.chmod(0o600)
    return working_tree_deployment(root, Secrets(env={}, entries=Secrets.load(path).entries,
                                                 source=path))


@pytest.fixture(scope="module")
def repo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badges") / "repo"
    for part in REPO_PARTS:
        shutil.copytree(PROJECT / part, root / part, symlinks=True)
    (root / "catalog/mail.yaml").write_text(  # mail on: ended mails are queued
        "smtp: {host: 127.0.0.1, port: 2525, security: none}\n"
        "from: Workshops <wod@example.org>\nportal_url: https://wod.example.org\n")
    ws = root / "catalog/workshops" / THRESHOLD_WORKSHOP / "workshop.yaml"
    ws.write_text(ws.read_text().replace("duration: 2\n", "duration: 2\nbadge_threshold: 60\n"))
    return root


@pytest.fixture(scope="module")
def deployment(repo_root) -> Deployment:
    return _deployment(repo_root, KEY_PEM)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, deployment) -> Iterator[Store]:
    """A real store, its badge rules from the deployed catalog (as the session service sets
    them)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    opened = open_store(url, state_dir=tmp_path / "state")
    SessionService(opened, lambda: deployment)
    yield opened
    opened.close()


def _live(store: Store, workshop: str, email: str, name: str = "Ada Lovelace") -> Session:
    seat = next(SEATS)
    session = store.sessions.allocate(
        workshop, Participant(name, email), [("emea", "lab-badges", seat, f"student{seat}")],
        capacity=10_000, duration_hours=1, revision="r1", password="pw-unused")
    return store.sessions.activate(session.id)


def _cleaned(store: Store, session: Session, completion: float | None) -> Session:
    """CLEANUP as the release runs it: CLEANING, the completion counted, then ENDED."""
    store.sessions.transition(session.id, S.CLEANING, message="cleanup")
    if completion is not None:
        store.sessions.set_completion(session.id, completion)
    return store.sessions.purge(session.id, message="cleaned up")


def _end(store: Store, workshop: str, email: str, completion: float | None = 100.0,
         name: str = "Ada Lovelace") -> Session:
    return _cleaned(store, _live(store, workshop, email, name), completion)


def _unique(tag: str) -> str:
    return f"{tag}-{next(SEATS)}@example.org"


# -- awarding --------------------------------------------------------------------------------


@pytest.mark.parametrize(("completion", "awarded"), [(59.9, False), (60.0, True), (61.0, True),
                                                       (0.0, False)])
def test_the_workshop_badge_needs_the_workshops_threshold(store, completion, awarded):
    session = _end(store, THRESHOLD_WORKSHOP, _unique("threshold"), completion)
    found = store.badges.for_session(session.id)
    assert [(b.kind, b.badge) for b in found] == \
        ([("workshop", THRESHOLD_WORKSHOP)] if awarded else [])
    if awarded:
        assert found[0].title == "API 101 - REST APIs and the value they provide"
        assert found[0].image == "badges/api101"
        assert found[0].completion == completion
        assert found[0].awarded_at == session.ended_at


def test_without_a_threshold_every_cleanup_earns_the_badge_as_in_wod(store):
    session = _end(store, DEFAULT_WORKSHOP, _unique("default"), completion=0.0)
    assert [b.badge for b in store.badges.for_session(session.id)] == [DEFAULT_WORKSHOP]


def test_a_purged_session_earns_nothing(store):
    """PURGE counts no completion: an operator's (or the abuse guard's) purge awards
    nothing, whatever the workshop's threshold."""
    session = _live(store, DEFAULT_WORKSHOP, _unique("purged"))
    ended = store.sessions.purge(session.id, message="purged by an operator")
    assert ended.state is S.ENDED
    assert store.badges.for_session(session.id) == []


def test_the_award_is_in_the_same_transaction_as_the_move(store):
    """A later hook of the same move fails: the move rolls back, and the badge with it — the
    badge and the end commit together or not at all."""
    session = _live(store, DEFAULT_WORKSHOP, _unique("tx"))
    store.sessions.transition(session.id, S.CLEANING, message="cleanup")
    store.sessions.set_completion(session.id, 100.0)

    def failing(conn, moved):
        if moved.session.id == session.id:
            assert store.badges.for_session(session.id, conn), "the award runs first"
            raise RuntimeError("a later hook failed")

    store.sessions.hooks.append(failing)
    try:
        with pytest.raises(RuntimeError, match="a later hook failed"):
            store.sessions.purge(session.id, message="cleaned up")
    finally:
        store.sessions.hooks.remove(failing)
    assert store.sessions.get(session.id).state is S.CLEANING
    assert store.badges.for_session(session.id) == []
    store.sessions.purge(session.id, message="cleaned up")
    assert len(store.badges.for_session(session.id)) == 1


def test_a_retried_release_never_awards_twice(store):
    email = _unique("retried")
    session = _live(store, DEFAULT_WORKSHOP, email)
    store.sessions.transition(session.id, S.CLEANING, message="cleanup")
    store.sessions.set_completion(session.id, 80.0)
    # the host went away in the middle of the release: retried later, then done
    store.sessions.schedule_release(session.id, "cleanup", "host unreachable",
                                    delay=timedelta(seconds=10))
    store.sessions.purge(session.id, message="cleaned up")
    # the host still recorded the seat: reopened, released again, ended again
    store.sessions.reopen(session.id, "purge", "the host still records the seat")
    store.sessions.purge(session.id, message="purged")
    assert [b.kind for b in store.badges.for_session(session.id)] == ["workshop"]
    assert len(store.badges.find(email)) == 1


def test_a_reset_workshop_awards_when_the_seat_is_held_and_not_again_at_reset(store):
    session = _live(store, DEFAULT_WORKSHOP, _unique("held"))
    store.sessions.transition(session.id, S.CLEANING, message="cleanup")
    store.sessions.set_completion(session.id, 50.0)
    store.sessions.transition(session.id, S.HELD, message="held until RESET")
    assert len(store.badges.for_session(session.id)) == 1
    store.sessions.transition(session.id, S.RESETTING, message="reset")
    store.sessions.purge(session.id, message="reset done")
    assert len(store.badges.for_session(session.id)) == 1


def test_special_badges_at_exactly_3_5_7_10_15_distinct_workshops_and_once_each(store):
    """Per person: case and +tags folded; a workshop taken twice counts once; each level is
    awarded by the session that reaches it, once."""
    base = _unique("special").split("@")[0]
    spellings = [f"{base}@example.org", f"{base.upper()}@Example.ORG",
                 f"{base}+wod@example.org"]
    levels = {3: "apprentice", 5: "expert", 7: "hero", 10: "superhero", 15: "legend"}
    for n in range(1, 17):
        email = spellings[n % len(spellings)]
        session = _end(store, f"WKSHP-Count{n}", email, completion=10.0)
        specials = [b.badge for b in store.badges.for_session(session.id)
                    if b.kind == "special"]
        assert specials == ([levels[n]] if n in levels else []), f"workshop {n}"
        if n == 4:  # the same workshop again: a badge of its own, no new count
            again = _end(store, "WKSHP-Count4", spellings[0], completion=10.0)
            assert [b.kind for b in store.badges.for_session(again.id)] == ["workshop"]
    awarded = [b.badge for b in store.badges.find(spellings[2]) if b.kind == "special"]
    assert awarded == list(levels.values())
    assert all(b.email_key == fold_email(spellings[1]) for b in store.badges.find(spellings[1]))


def test_badge_links_for_the_ended_mail_and_the_session_page(store):
    session = _end(store, THRESHOLD_WORKSHOP, _unique("links"), completion=75.0)
    [link] = badges_for_session(store, session.id, "https://wod.example.org/")
    [badge] = store.badges.for_session(session.id)
    assert link.name == "API 101 - REST APIs and the value they provide"
    assert link.url == f"https://wod.example.org/badges/{badge.id}"
    assert link.image == "https://wod.example.org/img/badges/badges/api101"
    assert badges_for_session(store, session.id)[0].url == f"/badges/{badge.id}"


def test_the_ended_mail_and_the_session_page_show_the_badges_the_move_awarded(store,
                                                                            deployment):
    """The ended mail, queued in the move's transaction, is composed with the badges that
    move awarded, linked under the mails' portal URL; the session page's hook lists them."""
    from wodsync.mail.compose import compose
    from wodsync.portal.badges import badge_links

    session = _end(store, THRESHOLD_WORKSHOP, _unique("mailed"), completion=70.0)
    [badge] = store.badges.for_session(session.id)
    [mail] = store.outbox.list(session_id=session.id, kind="ended")
    catalog = deployment.catalog
    message = compose(store, catalog, catalog.mail, mail)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    url = f"https://wod.example.org/badges/{badge.id}"
    assert "API 101 - REST APIs and the value they provide" in text and url in text
    assert f'href="{url}"' in html
    assert [(b.name, b.url) for b in badge_links(store, store.sessions.get(session.id))] == \
        [("API 101 - REST APIs and the value they provide", f"/badges/{badge.id}")]


def test_fold_email_folds_case_and_plus_addressing():
    assert fold_email(" Ada+wod@Example.ORG ") == "ada@example.org"
    assert fold_email("a+b+c@x.org") == "a@x.org"
    assert fold_email("not-an-address") == "not-an-address"


# -- the public page and the signed assertion, through a real server ----------------------------


@pytest.fixture
def site(tmp_path, deployment) -> Iterator[tuple[str, Store]]:
    opened = open_store(state_dir=tmp_path / "state")
    app = create_app(Context(opened, sessions=SessionService(opened, lambda: deployment)))
    with serving(app) as base:
        yield base, opened
    opened.close()


def _award(store: Store, email: str, name: str = "Ada Lovelace") -> str:
    session = _end(store, THRESHOLD_WORKSHOP, email, completion=90.0, name=name)
    return store.badges.for_session(session.id)[0].id


def test_the_verification_page_shows_who_what_when_and_never_the_email(site):
    base, store = site
    email = "Grace.Hopper+wod@Example.org"
    badge_id = _award(store, email, name='Grace <b>"Amazing"</b> Hopper')
    page = requests.get(f"{base}/badges/{badge_id}", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "Grace &lt;b&gt;&#34;Amazing&#34;&lt;/b&gt; Hopper" in html  # text, never markup
    assert "API 101 - REST APIs and the value they provide" in html
    assert "WKSHP-API101" in html and "90 %" in html
    badge = store.badges.get(badge_id)
    assert badge.awarded_at is not None and badge.awarded_at.strftime("%d %B %Y") in html
    assert f'src="{base}/img/badges/badges/api101"' in html
    assert "Verified" in html and f"{base}/badges/key" in html and "no signing key" not in html
    assert f"{base}/badges/{badge_id}/assertion" in html
    for shown in (email, email.lower(), fold_email(email), "grace.hopper", "example.org"):
        assert shown.lower() not in html.lower(), f"{shown} is on the public page"


def test_the_signed_assertion_verifies_with_the_key_fetched_from_the_server(site):
    base, store = site
    email = "ada@example.org"
    badge_id = _award(store, email)
    answer = requests.get(f"{base}/badges/{badge_id}/assertion", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/jose")
    signed = answer.text
    # a third party: read the unverified payload to find the key, then check everything
    unverified = json.loads(_b64(signed.split(".")[1]))
    creator = unverified["verification"]["creator"]
    key = requests.get(creator, timeout=30).json()
    assert key["type"] == "CryptographicKey" and key["id"] == creator
    issuer = requests.get(key["owner"], timeout=30).json()
    assert issuer["type"] == "Issuer" and issuer["publicKey"] == creator
    assert issuer["name"] == "Workshops-on-Demand"
    document = openbadges.verify(signed, key["publicKeyPem"])
    assert document == unverified
    assert document["@context"] == "https://w3id.org/openbadges/v2"
    recipient = document["recipient"]
    assert recipient["hashed"] is True and recipient["type"] == "email"
    assert recipient["identity"] == "sha256$" + hashlib.sha256(
        (email + recipient["salt"]).encode()).hexdigest()
    assert email not in signed and email not in json.dumps(document)
    badge_class = requests.get(document["badge"], timeout=30).json()
    assert badge_class["type"] == "BadgeClass" and badge_class["issuer"] == issuer["id"]
    assert badge_class["name"] == "API 101 - REST APIs and the value they provide"
    assert "60 %" in badge_class["criteria"]["narrative"]
    assert document["evidence"]["id"] == f"{base}/badges/{badge_id}"
    readable = requests.get(f"{base}/badges/{badge_id}/assertion.json", timeout=30).json()
    assert readable == document


def test_a_tampered_assertion_is_refused(site):
    base, store = site
    signed = requests.get(f"{base}/badges/{_award(store, 'ada@example.org')}/assertion",
                          timeout=30).text
    public = requests.get(f"{base}/badges/key", timeout=30).json()["publicKeyPem"]
    header, payload, signature = signed.split(".")
    document = json.loads(_b64(payload))
    document["recipient"]["identity"] = "sha256$" + hashlib.sha256(
        ("mallory@example.org" + document["recipient"]["salt"]).encode()).hexdigest()
    forged = ".".join((header, _unb64(json.dumps(document).encode()), signature))
    with pytest.raises(BadSignatureError):
        openbadges.verify(forged, public)
    other = openbadges.sign(document, RSAKey.import_key(new_key_pem(2048)))
    with pytest.raises(BadSignatureError):
        openbadges.verify(other, public)
    assert openbadges.verify(signed, public)["recipient"] != document["recipient"]


def test_badges_verify_checks_a_shared_assertion_as_a_third_party(site, cli, tmp_path):
    """`wodsync badges verify` fetches the key the assertion names, checks its owner, the
    issuer's publicKey and the signature, then the recipient; a tampered copy, another
    address or another key's signature are refused."""
    base, store = site
    url = f"{base}/badges/{_award(store, 'ada@example.org')}/assertion"
    ok = cli("badges", "verify", url, "--email", "ada@example.org")
    assert ok.exit_code == 0, ok.output
    assert "verified: API 101 - REST APIs and the value they provide issued by " \
           f"Workshops-on-Demand ({base}/badges/issuer)" in ok.output
    assert "to ada@example.org" in ok.output
    someone_else = cli("badges", "verify", url, "--email", "mallory@example.org")
    assert someone_else.exit_code == 1
    assert "not awarded to mallory@example.org" in someone_else.output
    signed = requests.get(url, timeout=30).text
    header, payload, signature = signed.split(".")
    document = json.loads(_b64(payload))
    document["issuedOn"] = "2020-01-01T00:00:00+00:00"
    tampered = tmp_path / "tampered.jws"
    tampered.write_text(".".join((header, _unb64(json.dumps(document).encode()), signature)))
    refused = cli("badges", "verify", tampered)
    assert refused.exit_code == 1 and "the signature does not hold" in refused.output
    forged = tmp_path / "forged.jws"
    forged.write_text(openbadges.sign(document, RSAKey.import_key(new_key_pem(2048))))
    assert cli("badges", "verify", forged).exit_code == 1
    genuine = tmp_path / "genuine.jws"
    genuine.write_text(signed)
    assert cli("badges", "verify", genuine).exit_code == 0


def test_an_unknown_badge_is_a_404(site):
    base, _ = site
    for path in ("/badges/0123456789abcdef0123456789abcdef", "/badges/nope/assertion",
                 "/badges/nope/assertion.json", "/badges/class/workshop/WKSHP-None"):
        answer = requests.get(base + path, timeout=30)
        assert answer.status_code == 404, path
        assert "no badge" in answer.json()["detail"]


def test_without_a_signing_key_the_assertion_is_unavailable_and_says_why(tmp_path, repo_root):
    opened = open_store(state_dir=tmp_path / "state")
    keyless = _deployment(repo_root, None)
    app = create_app(Context(opened, sessions=SessionService(opened, lambda: keyless)))
    badge_id = _award(opened, "ada@example.org")
    with serving(app) as base:
        page = requests.get(f"{base}/badges/{badge_id}", timeout=30)
        assert page.status_code == 200 and "no signing key yet" in page.text
        assert "/assertion" not in page.text
        for path in (f"/badges/{badge_id}/assertion", "/badges/key"):
            answer = requests.get(base + path, timeout=30)
            assert answer.status_code == 503
            assert KEY_SECRET in answer.json()["detail"]
    opened.close()


# -- the operator's commands --------------------------------------------------------------------


def test_badges_list_and_key_new(cli, tmp_path, deployment):
    state = tmp_path / "state"
    with open_store(state_dir=state) as opened:
        SessionService(opened, lambda: deployment)
        _end(opened, DEFAULT_WORKSHOP, "Ada+x@Example.org", completion=5.0)
        _end(opened, DEFAULT_WORKSHOP, "bob@example.org", completion=5.0)
    listed = cli("badges", "list", "--state", state, "--email", "ada@example.org", "--json")
    assert listed.exit_code == 0, listed.output
    [only] = json.loads(listed.output)
    assert only["email"] == "Ada+x@Example.org" and only["badge"] == DEFAULT_WORKSHOP
    assert "salt" not in only
    key_file = tmp_path / "badges.pem"
    made = cli("badges", "key", "new", key_file)
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert key_file.read_text() not in made.output
    again = cli("badges", "key", "new", key_file)
    assert again.exit_code != 0


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _unb64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_the_demo_secrets_carry_a_badges_key_kept_between_runs(tmp_path, deployment):
    """`wodsync demo` signs its badges: the key is granted to the badges service and a rerun
    keeps it (a new key would leave the earlier badges unverifiable)."""
    from wodsync.badges.keys import signing_key
    from wodsync.demo.repo import write_secrets

    path = write_secrets(tmp_path, deployment.catalog)
    first = Secrets(env={}, entries=Secrets.load(path).entries)
    assert signing_key(first).is_private
    again = Secrets.load(write_secrets(tmp_path, deployment.catalog))
    assert again.entries[KEY_SECRET].value == first.entries[KEY_SECRET].value
    assert again.entries[KEY_SECRET].services == frozenset({"badges"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
