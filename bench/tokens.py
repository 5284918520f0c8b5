"""Benchmark: what checking a token with roles costs a request (prints figures).

Why: every API request is now authenticated against the store's tokens (hashed, compared in
constant time with each) instead of one string from the environment. Measured in the same run,
on a real store (SQLite in a temporary folder, or --db URL), the route's check itself (the
`Allow` dependency on a request, no HTTP around it):

- the check before the roles, as it was: the bearer header read from the request and compared
  in constant time with the environment's token (the baseline);
- a stored token through the book's cache (read from the store every 5 s), with --stored
  tokens in the store;
- the same with no cache (one read of the store per request): why the book caches.

    .venv/bin/python bench/tokens.py [--calls 2000] [--stored 20] [--db URL]
    .venv/bin/python bench/tokens.py --calls 20 --stored 3        # the smoke test's size
"""

from __future__ import annotations

import argparse
import hmac
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from starlette.requests import Request

from wodsync.api.deps import Allow, Context
from wodsync.store import open_store
from wodsync.tokens import Role, TokenBook, digest, new_value


def _request(app: SimpleNamespace, token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/api/v1/sessions",
                    "headers": [(b"authorization", f"Bearer {token}".encode())], "app": app})


def _before(request: Request, expected: str) -> bool:
    """The check before the roles (one token from the environment), as it was written."""
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected.encode())


def _p50_us(calls: int, step: Callable[[], object]) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stored", type=int, default=20)
    parser.add_argument("--db", help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.db, state_dir=Path(tmp))
        values = [new_value() for _ in range(args.stored)]
        for n, value in enumerate(values):
            store.tokens.add(f"bench-{n}", Role.PORTAL, digest(value))
        legacy = new_value()
        allow = Allow(Role.PORTAL, Role.OPERATOR, what="list sessions")
        cached = SimpleNamespace(state=SimpleNamespace(context=Context(
            store, api_token=lambda: legacy, tokens=TokenBook(store.tokens.known))))
        uncached = SimpleNamespace(state=SimpleNamespace(context=Context(
            store, api_token=lambda: legacy, tokens=TokenBook(store.tokens.known, ttl=0))))
        last = values[-1]  # the last one compared: the whole list is walked anyway
        figures = [
            ("the environment's token, the check before roles (baseline)",
             _p50_us(args.calls, lambda: _before(_request(cached, legacy), legacy))),
            ("the environment's token through Allow, cached book",
             _p50_us(args.calls, lambda: allow(_request(cached, legacy)))),
            ("a stored token through Allow, cached book",
             _p50_us(args.calls, lambda: allow(_request(cached, last)))),
            ("a stored token through Allow, store read per request",
             _p50_us(args.calls, lambda: allow(_request(uncached, last)))),
        ]
        print(f"tokens: {args.stored} stored on {store.backend}, {args.calls} calls each")
        for label, us in figures:
            print(f"  {label:<60} p50 {us:9.1f} µs")
        store.close()


if __name__ == "__main__":
    main()
