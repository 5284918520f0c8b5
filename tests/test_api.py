"""The HTTP package on its own, without root: one table turns domain errors into answers, the
token is checked before the body is read, and only `wodsync.api` speaks HTTP.

The session lifecycle through the API, with a real hub, is `test_sessions_api.py`'s; the
daemon's endpoints are `test_daemon.py`'s. Here a real uvicorn serves a real store."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import wodsync
from wodsync.api.app import create_app, routes_for
from wodsync.api.deps import Context
from wodsync.api.errors import ANSWERS, BadSignature, NotConfigured, NotReady, Unauthorized, answer
from wodsync.sessions.service import (
    BadLocation,
    CreateFailed,
    Duplicate,
    NoSeat,
    SessionError,
    SessionService,
    UnknownWorkshop,
)
from wodsync.source.revision import Current, NotDeployed
from wodsync.source.webhook import WebhookError
from wodsync.store import (
    ExtensionRefused,
    InvalidTransition,
    KeyUnavailable,
    PasswordUnreadable,
    SessionNotFound,
    SessionState,
    StoreError,
    open_store,
)

from apiserver import serving

TOKEN = "api-t0ken-for-tests"
PACKAGE = Path(wodsync.__file__).parent



@pytest.fixture
def service(tmp_path) -> Iterator[SessionService]:
    """A session service whose daemon has deployed nothing yet."""
    store = open_store(state_dir=tmp_path)
    yield SessionService(store, Current())
    store.close()


@pytest.mark.parametrize(("error", "status"), [
    (UnknownWorkshop("unknown workshop 'W'"), 404),
    (BadLocation("location 'x' does not serve W"), 422),
    (NoSeat("W is at its capacity"), 409),
    (Duplicate("a@b.org already has a live session of W"), 409),
    (CreateFailed("CREATE of W failed"), 502),
    (SessionError("seat student1 on lab1 was not fully released"), 400),
    (NotDeployed("no valid revision is deployed yet"), 503),
    (SessionNotFound("abc"), 404),
    (InvalidTransition("abc", SessionState.ENDED, SessionState.CLEANING), 409),
    (ExtensionRefused("at most 24 hours more"), 409),
    (KeyUnavailable("no key"), 500),
    (PasswordUnreadable("sealed with another key"), 500),
    (StoreError("anything else the store refuses"), 409),
    (Unauthorized("a valid bearer token is needed"), 401),
    (NotConfigured("no API token is configured (WODSYNC_API_TOKEN)"), 503),
    (BadSignature("missing or bad X-Hub-Signature-256"), 401),
    (WebhookError("not JSON"), 400),
    (NotReady("no valid revision deployed yet"), 503),
])
def test_each_domain_error_has_its_answer_in_one_table(error, status):
    assert answer(error).status_code == status


def test_no_domain_error_carries_an_http_status():
    """The session service, the store and the source say what went wrong; which status that
    is, is `wodsync.api.errors`' decision alone."""
    for cls in ANSWERS:
        if not cls.__module__.startswith("wodsync.api."):
            assert "status" not in vars(cls), f"{cls.__qualname__} carries an HTTP status"
    for sub in _subclasses(SessionError) | _subclasses(StoreError):
        assert "status" not in vars(sub), f"{sub.__qualname__} carries an HTTP status"


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_only_the_api_package_speaks_http():
    """Routes live in `wodsync/api/routes/`; nothing else in wodsync imports FastAPI or
    Starlette, and every route mounted comes from there."""
    speaking = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("fastapi", "starlette") for n in names):
                speaking.append(path.relative_to(PACKAGE).as_posix())
    assert speaking and all(p.startswith("api/") for p in speaking), speaking
    context = Context(store=None, sessions=object(), daemon=object())  # type: ignore[arg-type]
    for router in routes_for(context):
        for route in router.routes:
            assert route.endpoint.__module__.startswith("wodsync.api.routes."), route.path


def test_the_token_is_checked_before_the_body_and_refusals_come_from_the_table(service):
    context = Context(service.store, sessions=service, api_token=lambda: TOKEN)
    with serving(create_app(context)) as base:
        sessions = base + "/api/v1/sessions"
        stranger = requests.post(sessions, data=b"not even json", timeout=10)
        assert stranger.status_code == 401
        assert stranger.json() == {"detail": "a valid bearer token is needed"}
        assert stranger.headers["WWW-Authenticate"] == "Bearer"
        assert stranger.headers["Cache-Control"] == "no-store"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        malformed = requests.post(sessions, data=b"not even json", headers=auth, timeout=10)
        assert malformed.status_code == 422 and "not even json" not in malformed.text
        missing = requests.get(sessions + "/abcdef123456", headers=auth, timeout=10)
        assert (missing.status_code, missing.json()) == (
            404, {"detail": "no session 'abcdef123456'", "session": None})
        early = requests.post(sessions, headers=auth, timeout=10, json={
            "workshop": "WKSHP-X", "participant": {"email": "ann@example.org"}})
        assert (early.status_code, early.json()) == (
            503, {"detail": "no valid revision is deployed yet", "session": None})
        feed = requests.get(base + "/api/v1/workshops", timeout=10)
        assert feed.status_code == 503, "a feed before any revision is unavailable, not a 500"
        assert requests.get(base + "/healthz", timeout=10).json() == {"status": "alive"}
        assert requests.get(base + "/api/v1/status", headers=auth,
                            timeout=10).status_code == 404, "serve mounts no daemon route"
    context = Context(service.store, sessions=service, api_token=lambda: None)
    with serving(create_app(context)) as base:
        closed = requests.get(base + "/api/v1/sessions/abc", timeout=10)
        assert (closed.status_code, closed.json()) == (
            503, {"detail": "no token may read a session here: make one with `wodsync token "
                            "new NAME --role portal or operator` (or set WODSYNC_API_TOKEN)"})


def test_sessions_are_listed_filtered_and_paged_without_credentials(service):
    from wodsync.store import Candidate, Participant

    for n, (workshop, email) in enumerate([("WKSHP-A", "ann@example.org"),
                                           ("WKSHP-A", "bob@example.org"),
                                           ("WKSHP-B", "Ann@Example.org")], start=1):
        service.store.sessions.allocate(workshop, Participant("P", email, ""),
                                        [Candidate("lab", f"h{n % 2}", n, f"s{n}")], 5, 1.0,
                                        "rev", "pw-" + "x" * 9)
    context = Context(service.store, sessions=service, api_token=lambda: TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(create_app(context)) as base:
        def page(**params: object) -> dict:
            answer = requests.get(base + "/api/v1/sessions", params=params, headers=auth,
                                  timeout=10)
            assert answer.status_code == 200, answer.text
            return answer.json()

        everything = page()
        assert (everything["total"], everything["offset"], everything["limit"]) == (3, 0, 100)
        assert [s["workshop"] for s in everything["items"]] == ["WKSHP-A", "WKSHP-A", "WKSHP-B"]
        assert all(s["credentials"] is None for s in everything["items"])
        assert "pw-" not in str(everything)
        assert page(workshop="WKSHP-A")["total"] == 2
        assert [s["host"] for s in page(email="ANN@example.org")["items"]] == ["h1", "h1"]
        assert page(host="h0")["items"][0]["participant"]["email"] == "bob@example.org"
        assert page(state="creating")["total"] == 3 and page(state="ended")["items"] == []
        second = page(offset=1, limit=1)
        assert second["total"] == 3 and [s["participant"]["email"] for s in second["items"]] \
            == ["bob@example.org"]
        refused = requests.get(base + "/api/v1/sessions", params={"limit": 0}, headers=auth,
                               timeout=10)
        assert refused.status_code == 422
        assert requests.get(base + "/api/v1/sessions", timeout=10).status_code == 401
