"""Benchmark: what badges add to the end of a session and to a shared assertion (prints
figures).

Why: the award is written in the transaction that moves a session to `ended`, so every CLEANUP
pays for it; the signed assertion is made on each request. Measured in the same run, on a real
store (SQLite in a temporary folder, or --db URL):

- the move to `ended` with the badges' hook (a workshop badge, and a special one every few
  sessions) beside the same move with no hook (the baseline), interleaved session by session;
- signing an assertion (RSA 3072, RS256) beside building its JSON alone.

    .venv/bin/python bench/badges.py [--sessions 200] [--db URL]
    .venv/bin/python bench/badges.py --sessions 5                   # the smoke test's size
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wodsync.badges import openbadges
from wodsync.badges.keys import new_key_pem
from wodsync.store import Participant, SessionState, Store, open_store

WORKSHOPS = 16  # distinct workshops per person: every special level is reached


def _ready(store: Store, workshop: int, seat: int, email: str) -> str:
    """A session cleaned up and counted, one move short of `ended` (not timed)."""
    session = store.sessions.allocate(
        f"WKSHP-Bench{workshop % WORKSHOPS}", Participant("Ada", email),
        [("lab", "bench", seat, f"seat{seat}")], capacity=100_000, duration_hours=1,
        revision="bench", password="pw")
    store.sessions.activate(session.id)
    store.sessions.transition(session.id, SessionState.CLEANING)
    store.sessions.set_completion(session.id, 80.0)
    return session.id


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _ended(store: Store, session_id: str) -> float:
    """Seconds of the move to `ended`, as the release makes it."""
    return _timed(lambda: store.sessions.purge(session_id, message="cleaned up"))


def moves(store: Store, sessions: int) -> tuple[list[float], list[float]]:
    """Seconds of each move to `ended`, with the badges' hook and without any hook."""
    hooks = list(store.sessions.hooks)
    awarded, bare = [], []
    for n in range(sessions):
        email = f"person{n // WORKSHOPS}@example.org"
        with_hook = _ready(store, n, 2 * n, email)
        without = _ready(store, n, 2 * n + 1, f"nobody{n}@example.org")
        awarded.append(_ended(store, with_hook))
        store.sessions.hooks.clear()
        bare.append(_ended(store, without))
        store.sessions.hooks.extend(hooks)
    return awarded, bare


def signing(store: Store, runs: int) -> tuple[list[float], list[float]]:
    from joserfc.jwk import RSAKey

    key = RSAKey.import_key(new_key_pem())
    urls = openbadges.Urls("https://wod.example.org")
    badge = store.badges.find()[0]
    signed = [_timed(lambda: openbadges.sign(openbadges.assertion(badge, urls), key))
              for _ in range(runs)]
    built = [_timed(lambda: openbadges.assertion(badge, urls)) for _ in range(runs)]
    return signed, built


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--db", help="store URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            open_store(args.db, state_dir=Path(tmp)) as store:
        awarded, bare = moves(store, args.sessions)
        specials = sum(b.kind == "special" for b in store.badges.find())
        signed, built = signing(store, max(5, args.sessions // 4))
        print(f"badges: {args.sessions} sessions ended on {store.backend}, "
              f"{len(store.badges.find()) - specials} workshop badges, {specials} special")
        rows = [("move to ended, with the award", awarded),
                ("move to ended, no hook (baseline)", bare),
                ("signed assertion (RS256, 3072)", signed),
                ("assertion JSON alone (baseline)", built)]
        for label, values in rows:
            print(f"{label:34} p50 {p50_ms(values):7.2f} ms")


if __name__ == "__main__":
    main()
