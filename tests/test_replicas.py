"""`wodsync serve` as several processes on one PostgreSQL store: CREATEs through two real
`serve` processes at once give no seat twice and hold the workshop's capacity, and a third
process starting meanwhile leaves the others' `creating` sessions alone (recovery only takes
over the sessions of processes that are gone: `store.owners`)."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.pool import NullPool

from wodsync.sessions.service import SessionService
from wodsync.source.revision import Current
from wodsync.store import Candidate, Participant, SessionState, open_store
from wodsync.store.models import SessionRow, table_of, writing
from wodsync.store.owners import LEASE_TTL, Leases, owner_of

from apiserver import Server
from helpers import until
from helpers import wodsync as run_wodsync
from pg import pg_url  # noqa: F401  (a fixture)
from storelab import API_TOKEN, WORKSHOP, claim_accounts, env, remove_accounts, write_catalog

CAPACITY, ASKED = 8, 12
SESSIONS = table_of(SessionRow)


def _owned(store, owner: str | None, n: int) -> str:
    """A session in `creating`, owned by `owner` (None: an older wodsync's, no owner)."""
    s = store.sessions.allocate(f"W{n}", Participant(f"P{n}", f"p{n}@example.org"),
                                [Candidate("lab", "h", n, f"wodtc{n}")], 1, 1.0, "r", "pw")
    with writing(store.engine) as conn:
        conn.execute(update(SESSIONS).where(SESSIONS.c.id == s.id).values(owner=owner))
    return s.id


def test_recovery_takes_over_only_the_sessions_of_processes_gone(tmp_path):
    store = open_store(state_dir=tmp_path / "state")
    service = SessionService(store, Current())
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        live_here = owner_of(sleeper.pid)
        host, boot, pid, ticks = live_here.rsplit("/", 3)
        now = datetime.now(UTC)
        with writing(store.engine) as conn:  # two processes of other machines: one beating
            conn.execute(text("INSERT INTO process_leases VALUES (:o, :t, :t)"),
                         {"o": "far/b00t/7/1", "t": now.replace(tzinfo=None)})
            conn.execute(text("INSERT INTO process_leases VALUES (:o, :t, :t)"),
                         {"o": "far/b00t/8/1",
                          "t": (now - 2 * LEASE_TTL).replace(tzinfo=None)})
        ids = {
            "running here": _owned(store, live_here, 1),
            "a reused pid": _owned(store, f"{host}/{boot}/{pid}/{int(ticks) + 1}", 2),
            "beating elsewhere": _owned(store, "far/b00t/7/1", 3),
            "silent elsewhere": _owned(store, "far/b00t/8/1", 4),
            "an older wodsync's": _owned(store, None, 5),
        }
        taken = {s.id for s in service.take_over_dead()}
        assert taken == {ids["a reused pid"], ids["silent elsewhere"],
                         ids["an older wodsync's"]}
        assert store.sessions.get(ids["running here"]).state is SessionState.CREATING
        assert store.sessions.get(ids["beating elsewhere"]).state is SessionState.CREATING
        released = store.sessions.get(ids["a reused pid"])
        assert released.state is SessionState.RELEASING and "is gone" in released.error
        sleeper.kill()
        sleeper.wait()
        assert {s.id for s in service.take_over_dead()} == {ids["running here"]}
    finally:
        sleeper.kill()
        store.close()


def test_a_lease_is_renewed_and_dropped(tmp_path):
    store = open_store(state_dir=tmp_path / "state")
    leases = Leases(store.engine)
    leases.beat()
    far = "far/b00t/9/1"
    assert not leases.alive(far)
    with writing(store.engine) as conn:
        conn.execute(text("INSERT INTO process_leases VALUES (:o, :t, :t)"),
                     {"o": far, "t": datetime.now(UTC).replace(tzinfo=None)})
    assert leases.alive(far)
    assert not leases.alive(far, now=datetime.now(UTC) + LEASE_TTL + timedelta(seconds=1))
    leases.drop()
    store.close()


@pytest.fixture
def replicas(tmp_path, pg_url):  # noqa: F811
    """Real seats (pool wodtc, no hub) whose CREATE waits at a gate, and the store on
    PostgreSQL shared by every `serve` the test starts."""
    if os.geteuid() != 0:
        pytest.skip("real seats need root (./bootstrap test)")
    claim_accounts()
    gate = tmp_path / "gate"
    root = tmp_path / "repo"
    write_catalog(root, tmp_path, gate=gate, capacity=CAPACITY)
    applied = run_wodsync("apply", "--yes", "--root", root, "--state", tmp_path / "apply",
                          env=env())
    assert applied.returncode == 0, applied.stdout + applied.stderr
    environment = {**env(), "WODSYNC_DB": pg_url,
                   "WODSYNC_STORE_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    # (one key for every replica)
    servers: list[Server] = []
    yield {"root": root, "tmp": tmp_path, "gate": gate, "env": environment, "db": pg_url,
           "servers": servers}
    gate.touch()
    for s in servers:
        s.stop()
    remove_accounts()


def _serve(lab, name: str) -> Server:
    (lab["tmp"] / name).mkdir()
    server = Server(lab["root"], lab["tmp"] / name, lab["env"], API_TOKEN, expiry_interval=5)
    lab["servers"].append(server)
    return server.start()


def _states(db: str) -> dict[str, int]:
    engine = create_engine(db, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM sessions GROUP BY state")).all()
    engine.dispose()
    return dict(rows)


def test_two_serve_processes_creating_at_once_and_a_third_starting(replicas):
    lab = replicas
    a, b = _serve(lab, "a"), _serve(lab, "b")
    answers: list = [None] * ASKED

    def create(n: int) -> None:
        server = (a, b)[n % 2]
        answers[n] = server.call("POST", "/api/v1/sessions", json={
            "workshop": WORKSHOP, "participant": {"email": f"r{n}@example.org"}})

    threads = [threading.Thread(target=create, args=(n,)) for n in range(ASKED)]
    for t in threads:
        t.start()
    until(lambda: _states(lab["db"]).get("creating") == CAPACITY,
          f"never {CAPACITY} sessions creating at once: {_states(lab['db'])}")
    until(lambda: sum(1 for r in answers if r is not None) == ASKED - CAPACITY,
          "the CREATEs past the capacity were not refused while the others were creating")

    c = _serve(lab, "c")  # its start recovers the sessions of processes gone: none here
    time.sleep(1)         # and its expiry loop's first round has run
    assert c.call("GET", "/healthz").ok
    assert _states(lab["db"]) == {"creating": CAPACITY}, "a live replica's CREATEs stay"

    lab["gate"].touch()
    for t in threads:
        t.join(timeout=180)
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * CAPACITY + [409] * (ASKED - CAPACITY), [r.text for r in answers]
    made = [r.json() for r in answers if r.status_code == 201]
    seats = [s["seat"] for s in made]
    assert len(set(seats)) == CAPACITY, f"a seat given twice: {sorted(seats)}"
    assert _states(lab["db"]) == {"active": CAPACITY}
    records = sorted(p.stem for p in (lab["tmp"] / "hoststate/seats").glob("*.json"))
    assert records == sorted(s["credentials"]["username"] for s in made)
    for s in made:
        done = c.call("POST", f"/api/v1/sessions/{s['id']}/purge")
        assert done.status_code == 200, done.text
