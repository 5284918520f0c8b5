"""API tokens with roles, without root: several valid at once, kept as digests in the store,
every route naming the roles it accepts, a portal token refused what only an operator may do,
and the legacy WODSYNC_API_TOKEN / WODSYNC_FACTS_TOKEN still valid. A real uvicorn serves a
real store (SQLite); `test_reload.py` does the same with a real `wodsync serve` and SIGHUP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from fastapi.routing import APIRoute
from sqlalchemy import text

from wodsync.api.app import create_app, routes_for
from wodsync.api.deps import Allow, Context
from wodsync.api.routes import facts, status
from wodsync.sessions.service import SessionService
from wodsync.source.revision import Current
from wodsync.store import Store, StoreError, open_store
from wodsync.tokens import Known, Role, TokenBook, digest, match, new_value

from apiserver import serving
from helpers import wodsync

LEGACY_API, LEGACY_FACTS = "legacy-api-" + "a" * 20, "legacy-facts-" + "f" * 20
PUBLIC_API = {"/api/v1/workshops", "/api/v1/replays"}  # the portal's public feed


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    found = open_store(state_dir=tmp_path)
    yield found
    found.close()


def _made(store: Store, name: str, role: Role) -> str:
    value = new_value()
    store.tokens.add(name, role, digest(value))
    return value


def _context(store: Store, **kw) -> Context:
    return Context(store, sessions=SessionService(store, Current()),
                   tokens=TokenBook(store.tokens.known, ttl=0), **kw)


def _call(base: str, method: str, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, base + path, headers=headers, timeout=10)


def test_a_token_is_kept_as_its_digest_only_and_listed_by_name_and_role(store):
    value = _made(store, "portal-1", Role.PORTAL)
    assert value.startswith("wodsync_") and len(value) > 40
    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    assert len(rows) == 1 and not any(value in str(cell) for cell in rows[0])
    assert digest(value) in rows[0]
    assert [(t.name, t.role) for t in store.tokens.all()] == [("portal-1", Role.PORTAL)]
    with pytest.raises(StoreError, match="a token named 'portal-1' exists already"):
        store.tokens.add("portal-1", Role.OPERATOR, digest(new_value()))
    store.tokens.revoke("portal-1")
    assert store.tokens.all() == []
    with pytest.raises(StoreError, match="no token named 'portal-1'"):
        store.tokens.revoke("portal-1")


def test_matching_compares_every_digest_and_names_the_caller():
    a, b = new_value(), new_value()
    known = [Known("a", Role.PORTAL, digest(a)), Known("b", Role.FACTS, digest(b))]
    assert match(a, known).name == "a" and match(b, known).role is Role.FACTS
    assert match(a[:-1], known) is None and match("", known) is None


def test_the_book_reads_the_store_again_after_its_ttl_or_a_reload():
    now, loads = [0.0], []

    def load() -> list[Known]:
        loads.append(now[0])
        return []

    book = TokenBook(load, ttl=5.0, clock=lambda: now[0])
    book.known()
    now[0] = 4.0
    book.known()
    assert loads == [0.0], "within its ttl the book does not query the store"
    now[0] = 5.0
    book.known()
    book.reload()
    assert loads == [0.0, 5.0, 5.0]


def test_a_portal_token_may_create_read_extend_and_clean_up_but_never_reset_or_purge(store):
    portal, operator = _made(store, "portal-1", Role.PORTAL), _made(store, "ops", Role.OPERATOR)
    facts_only = _made(store, "ci", Role.FACTS)
    with serving(create_app(_context(store))) as base:
        assert _call(base, "GET", "/api/v1/sessions", portal).status_code == 200
        assert _call(base, "GET", "/api/v1/sessions/abcdef123456", portal).status_code == 404
        assert _call(base, "DELETE", "/api/v1/sessions/abcdef123456", portal).status_code == 404
        purge = _call(base, "POST", "/api/v1/sessions/abcdef123456/purge", portal)
        assert (purge.status_code, purge.json()) == (403, {"detail": (
            "token 'portal-1' has the role portal, which may not PURGE a session: that needs "
            "a token of the role operator")})
        assert _call(base, "POST", "/api/v1/sessions/abcdef123456/reset",
                     portal).status_code == 403
        assert _call(base, "POST", "/api/v1/sessions/abcdef123456/purge",
                     operator).status_code == 404, "an operator passes: the session is unknown"
        assert _call(base, "GET", "/api/v1/sessions", facts_only).status_code == 403
        assert _call(base, "GET", "/api/v1/sessions", "wodsync_guessed").status_code == 401
        forbidden_body = requests.post(base + "/api/v1/sessions", data=b"not json", timeout=10,
                                       headers={"Authorization": f"Bearer {facts_only}"})
        assert forbidden_body.status_code == 403, "the role is checked before the body is read"


def test_old_and_new_tokens_are_both_valid_until_the_old_one_is_revoked(store):
    old = _made(store, "portal-old", Role.PORTAL)
    with serving(create_app(_context(store))) as base:
        assert _call(base, "GET", "/api/v1/sessions", old).status_code == 200
        new = _made(store, "portal-new", Role.PORTAL)
        assert [_call(base, "GET", "/api/v1/sessions", t).status_code
                for t in (old, new)] == [200, 200]
        store.tokens.revoke("portal-old")
        assert [_call(base, "GET", "/api/v1/sessions", t).status_code
                for t in (old, new)] == [401, 200]


def test_the_legacy_tokens_are_an_operator_and_a_facts_token(store):
    context = _context(store, api_token=lambda: LEGACY_API, facts_token=lambda: LEGACY_FACTS)
    app = create_app(context, [*routes_for(context), status.router, facts.router])
    with serving(app) as base:
        assert _call(base, "POST", "/api/v1/sessions/abcdef123456/purge",
                     LEGACY_API).status_code == 404
        assert _call(base, "GET", "/api/v1/status", LEGACY_API).status_code == 200
        assert _call(base, "GET", "/api/v1/facts", LEGACY_FACTS).status_code == 200
        assert _call(base, "GET", "/api/v1/facts", LEGACY_API).status_code == 200
        refused = _call(base, "GET", "/api/v1/status", LEGACY_FACTS)
        assert refused.status_code == 403 and "WODSYNC_FACTS_TOKEN" in refused.json()["detail"]


def test_a_route_without_any_token_of_its_roles_is_unavailable_never_open(store):
    _made(store, "ci", Role.FACTS)
    with serving(create_app(_context(store))) as base:
        closed = _call(base, "GET", "/api/v1/sessions", None)
        assert closed.status_code == 503 and "--role portal or operator" in closed.json()["detail"]


def test_every_api_route_names_its_roles_and_an_operator_may_call_each():
    context = Context(store=None, sessions=object(), daemon=object())  # type: ignore[arg-type]
    for router in routes_for(context):
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.path.startswith("/api/v1/") \
                    or route.path in PUBLIC_API:
                continue
            roles = [d.call.roles for d in route.dependant.dependencies
                     if isinstance(d.call, Allow)]
            assert roles, f"{route.path} names no roles"
            assert all(Role.OPERATOR in r for r in roles), route.path


def test_token_commands_print_the_value_once_and_refuse_bad_names(tmp_path):
    state = tmp_path / "state"
    made = wodsync("token", "new", "portal-1", "--role", "portal", "--state", state)
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    assert value.startswith("wodsync_") and made.stdout == value + "\n"
    assert "shown this once" in made.stderr and value not in made.stderr
    listed = wodsync("token", "list", "--state", state)
    assert "portal-1  portal" in listed.stdout and value not in listed.stdout
    bad = wodsync("token", "new", "no spaces", "--role", "portal", "--state", state)
    assert bad.returncode == 64 and "token name 'no spaces' must match" in bad.stderr
    role = wodsync("token", "new", "x", "--role", "admin", "--state", state)
    assert role.returncode == 64
    assert wodsync("token", "revoke", "portal-1", "--state", state).returncode == 0
    again = wodsync("token", "revoke", "portal-1", "--state", state)
    assert again.returncode == 1 and "no token named 'portal-1'" in again.stderr
