"""The seat hand-over made airtight, written as the attacks and faults that broke it: a hostile
notebook and a running process at CLEANUP, a host down at expiry, a store restored from a
backup, a workshop removed with live sessions, a stale seat record, a purge that could not
reach its host — and the API's refusals that must not leak (issue 17).

Real accounts (`wodtr*`), homes, hooks, a real sshd, real SQLite files and PostgreSQL; the hub
side of a hand-over is `test_handover_hub.py`'s.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from wodsync.agent.completion import count
from wodsync.controller import open_controller
from wodsync.daemon.metrics import Metrics
from wodsync.daemon.views import status_view
from wodsync.secrets import Secrets
from wodsync.store import Participant, SessionState
from wodsync.store.models import writing

import apiserver
from handoverlab import (
    HOMES,
    PREFIX,
    as_student,
    cleanup_accounts,
    locked,
    over_ssh,
    password_field,
    processes_of,
    restart_sshd,
    taken,
    write_catalog,
)
from helpers import until
from pg import pg_url  # noqa: F401  (a fixture)
from sessionlab import wodsync
from sshd import kill_sessions, start_sshd

S = SessionState
API_TOKEN = "wodsync-api-" + os.urandom(8).hex()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")


def _records(catalog: dict[str, Path]) -> Path:
    return catalog["tmp"] / "state-lab1/seats"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Iterator[dict[str, Path]]:
    why = taken()
    if why:
        pytest.skip(why)
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("handover")
    root = tmp / "repo"
    write_catalog(root, tmp)
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "tmp": tmp}
    cleanup_accounts()


def _purge_all(controller) -> None:
    for s in controller.store.sessions.find(state=list(S)):
        if s.holds_seat:
            controller.sessions.purge(s.id, "test teardown")


@pytest.fixture
def ctl(catalog, tmp_path, request):
    db = request.getfixturevalue("pg_url") if getattr(request, "param", "") == "pg" else None
    controller = open_controller(catalog["root"], tmp_path / "state", db, Secrets())
    yield controller
    _purge_all(controller)
    controller.close()
    for stale in _records(catalog).glob("*.json"):  # what a test left on purpose
        wodsync(catalog["root"], tmp_path, "seat", "release", "lab1", stale.stem, "--yes",
                "--state", str(tmp_path / "state"))


def ann(n: int = 0) -> Participant:
    return Participant(f"Ann {n}", f"ann{n}@example.org", "ACME")


# ---- a student cannot keep a seat --------------------------------------------------------------

def _hostile_home(user: str, folder: Path, root_file: Path) -> None:
    """What a student leaves behind to break CLEANUP, or to have root read a file of its."""
    as_student(user, "tee", str(folder / "1-Intro.ipynb"), data=b'{"cells": 5}')
    as_student(user, "tee", str(folder / "2-Deep.ipynb"), data=b"[" * 200_000 + b"]" * 200_000)
    as_student(user, "tee", str(folder / "3-Big.ipynb"),
               data=b'{"cells": [' + b"{}," * 2_700_000 + b"{}]}")
    good = json.loads((folder / "4-Good.ipynb").read_text())
    good["cells"][1]["execution_count"] = 1
    as_student(user, "tee", str(folder / "4-Good.ipynb"), data=json.dumps(good).encode())
    as_student(user, "rm", str(folder / "5-Linked.ipynb"))
    as_student(user, "ln", "-s", str(root_file), str(folder / "5-Linked.ipynb"))


def test_a_hostile_notebook_and_a_running_process_cannot_keep_the_seat(ctl, catalog, tmp_path):
    s = ctl.sessions.create("WKSHP-Hand", ann()).session
    user, uid = s.username, 58500 + s.seat
    root_file = tmp_path / "root-notebook.ipynb"  # 3 code cells never run: 25 % if followed
    root_file.write_text(json.dumps({"cells": [{"cell_type": "code"}] * 3}))
    tmp_path.chmod(0o755)
    _hostile_home(user, HOMES / user / "WKSHP-Hand", root_file)
    sleeper = subprocess.Popen(["runuser", "-u", user, "--", "setsid", "sleep", "1000"])
    leftovers = [Path(f"/tmp/{user}-left"), Path(f"/dev/shm/{user}-left"),
                 Path(f"/var/tmp/{user}-left")]
    for path in leftovers:
        as_student(user, "touch", str(path))
    crontab = Path("/var/spool/cron/crontabs") / user
    crontab.parent.mkdir(parents=True, exist_ok=True)
    crontab.write_text("* * * * * sleep 1\n")
    os.chown(crontab, uid, uid)
    try:
        ended = ctl.sessions.cleanup(s.id)
        assert ended.state is S.ENDED, ended.error
        assert locked(user)
        assert processes_of(uid) == [], "the student's processes are gone"
        assert list((HOMES / user).iterdir()) == []
        assert not any(p.exists() for p in [*leftovers, crontab]), "nothing of the uid is left"
        assert ended.completion == 100.0, \
            "the one notebook that could be counted counts; a link is never followed"
        assert json.loads(root_file.read_text())["cells"][0] == {"cell_type": "code"}
        last = ctl.store.sessions.events(s.id)[-1]
        assert "not counted: 1-Intro.ipynb: ValueError: no list of cells" in last.message
        assert "2-Deep.ipynb: ValueError: nested too deeply" in last.message
        assert not (_records(catalog) / f"{user}.json").exists()
        again = ctl.sessions.create("WKSHP-Hand", ann(1)).session
        assert again.username == user, "the seat is free again"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_counting_an_8_mb_notebook_of_empty_cells_costs_little_memory():
    """8 MB of `{}` cells took an API process from 123 MB to 893 MB when the controller read
    them; the host now counts with two values per cell."""
    raw = b'{"cells": [' + b"{}," * 2_700_000 + b"{}]}"
    tracemalloc.start()
    try:
        assert count(raw) == (0, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"counting took {peak >> 20} MiB"


# ---- a release that could not finish is finished later ----------------------------------------

@pytest.fixture
def ssh_lab(catalog, tmp_path) -> Iterator[dict[str, object]]:
    sshd = start_sshd(tmp_path / "sshd")
    root = tmp_path / "repo"
    over_ssh(catalog["root"], root, sshd)
    box: dict[str, object] = {"root": root, "sshd": sshd, "workdir": tmp_path / "sshd"}
    yield box
    process = box.get("restarted") or sshd.process
    process.terminate()  # type: ignore[attr-defined]
    process.wait(timeout=10)  # type: ignore[attr-defined]


def _host_down(box: dict[str, object]) -> None:
    sshd = box["sshd"]
    kill_sessions(sshd)  # type: ignore[arg-type]
    sshd.stop()  # type: ignore[attr-defined]


def _host_back(box: dict[str, object]) -> None:
    box["restarted"] = restart_sshd(box["workdir"])  # type: ignore[arg-type]
    time.sleep(0.5)


def test_a_host_down_at_expiry_is_released_when_it_comes_back_without_a_hand(ssh_lab, tmp_path):
    """Through `wodsync serve` and its expiry loop: a session expiring and another one deleted
    while their host is down are pending (202 for the DELETE), and nobody touches anything
    after the host comes back."""
    env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN)
    server = apiserver.Server(ssh_lab["root"], tmp_path / "state", env, API_TOKEN,
                              expiry_interval=1).start()

    def create(workshop: str, email: str) -> tuple[str, str]:
        created = server.call("POST", "/api/v1/sessions", json={
            "workshop": workshop, "participant": {"email": email}})
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["credentials"]["username"]

    def state(sid: str) -> str:
        return server.call("GET", f"/api/v1/sessions/{sid}").json()["state"]

    try:
        expiring, expiring_user = create("WKSHP-Short", "ann@example.org")
        deleted, deleted_user = create("WKSHP-Hand", "bob@example.org")
        _host_down(ssh_lab)
        answer = server.call("DELETE", f"/api/v1/sessions/{deleted}")
        assert answer.status_code == 202 and answer.json()["state"] == "releasing", answer.text
        until(lambda: state(expiring) == "releasing",
               "the expiry of a session on a host that is down is not pending")
        pending = server.call("GET", f"/api/v1/sessions/{expiring}").json()
        assert pending["credentials"] is None and pending["release"]["operation"] == "cleanup"
        assert not locked(expiring_user), "the host could not be reached: nothing done yet"
        _host_back(ssh_lab)
        until(lambda: state(expiring) == state(deleted) == "ended",
               "the pending releases were not finished once the host came back")
        for user in (expiring_user, deleted_user):
            assert locked(user) and list((HOMES / user).iterdir()) == []
    finally:
        server.stop()


def test_purge_says_ended_only_once_the_host_did_it(ssh_lab, tmp_path):
    state = tmp_path / "state"
    created = wodsync(ssh_lab["root"], state, "session", "create", "WKSHP-Hand", "--email",
                      "bob@example.org", "--json")
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    _host_down(ssh_lab)
    purged = wodsync(ssh_lab["root"], state, "session", "purge", data["id"])
    assert purged.returncode == 1 and "state:       releasing" in purged.stdout, purged.stdout
    assert "release did not finish" in purged.stderr
    again = wodsync(ssh_lab["root"], state, "session", "create", "WKSHP-Hand", "--email",
                    "bob@example.org", "--json")
    assert again.returncode == 1, "the host is still down"
    _host_back(ssh_lab)
    purged = wodsync(ssh_lab["root"], state, "session", "purge", data["id"])
    assert purged.returncode == 0 and "state:       ended" in purged.stdout, purged.stderr
    user = data["credentials"]["username"]
    assert locked(user) and list((HOMES / user).iterdir()) == []


# ---- the host's seat records are the last word --------------------------------------------------

def _sqlite_copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_a_store_restored_from_a_backup_never_gives_a_seat_in_use(catalog, tmp_path):
    """Backup, CREATE (seat 2), restore, CREATE: seat 2 is not given; its session comes back.
    The session the backup remembers as live (seat 1) ended since: the host's word wins."""
    state = tmp_path / "state"
    first = open_controller(catalog["root"], state, None, Secrets())
    try:
        earlier = first.sessions.create("WKSHP-Hand", ann(9)).session
        _sqlite_copy(state / "wodsync.db", tmp_path / "backup.db")
        kept = first.sessions.create("WKSHP-Hand", ann()).session
        first.sessions.purge(earlier.id)
        before = password_field(kept.username)
    finally:
        first.close()
    assert (earlier.username, kept.username) == (f"{PREFIX}1", f"{PREFIX}2")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}/wodsync.db{suffix}").unlink(missing_ok=True)
    _sqlite_copy(tmp_path / "backup.db", state / "wodsync.db")
    restored = open_controller(catalog["root"], state, None, Secrets())
    try:
        assert [s.id for s in restored.store.sessions.find(live=True)] == [earlier.id]
        other = restored.sessions.create("WKSHP-Hand", Participant("Bob", "bob@example.org"))
        assert other.session.username == f"{PREFIX}3", "neither the seat in use nor seat 1"
        assert password_field(kept.username) == before, "the first participant still logs in"
        adopted = restored.store.sessions.get(kept.id)
        assert (adopted.state, adopted.email, adopted.password) == \
            (S.ACTIVE, "ann0@example.org", "")
        conflict = [s for s in restored.store.sessions.find(state=S.FAILED)
                    if s.username == kept.username]
        assert len(conflict) == 1 and f"held by session {kept.id}" in conflict[0].error
        report = restored.sessions.sync_records(["lab1"])[0]
        assert report.released == [f"{earlier.id} on seat {earlier.username}"]
        restored.sessions.retry_releases()
        assert restored.store.sessions.get(earlier.id).state is S.ENDED
        assert restored.store.sessions.get(kept.id).state is S.ACTIVE
    finally:
        _purge_all(restored)
        restored.close()


@pytest.mark.parametrize("ctl", ["sqlite", "pg"], indirect=True)
def test_seat_sync_adopts_the_sessions_the_store_lost(ctl, catalog, tmp_path):
    s = ctl.sessions.create("WKSHP-Hand", ann()).session
    with writing(ctl.store.engine) as conn:  # as a restore from an older backup would
        conn.exec_driver_sql("DELETE FROM session_events")
        conn.exec_driver_sql("DELETE FROM sessions")
    db = [] if ctl.store.backend == "sqlite" else ["--db", ctl.store.engine.url
                                                   .render_as_string(hide_password=False)]
    synced = wodsync(catalog["root"], ctl.state, "seat", "sync", "--state", str(ctl.state), *db)
    assert synced.returncode == 0, synced.stderr
    assert f"lab1: adopted {s.id} on seat {s.username} (active)" in synced.stdout
    back = ctl.store.sessions.get(s.id)
    assert (back.state, back.workshop, back.ends_at is not None) == (S.ACTIVE, "WKSHP-Hand", True)
    assert ctl.sessions.create("WKSHP-Hand", ann(1)).session.username != s.username


# ---- removing a workshop with live sessions is a decision ----------------------------------------

def test_a_workshop_removed_with_live_sessions_needs_the_allowance_and_ends_them(ctl, catalog,
                                                                                 tmp_path):
    s = ctl.sessions.create("WKSHP-Gone", ann()).session
    root = tmp_path / "repo"
    shutil.copytree(catalog["root"], root)
    shutil.rmtree(root / "catalog/workshops/WKSHP-Gone")
    state = ["--state", str(ctl.state)]
    plan = wodsync(root, tmp_path, "plan", *state)
    assert plan.returncode == 1 and "REFUSED" in plan.stdout and s.id in plan.stdout, plan.stdout
    refused = wodsync(root, tmp_path, "apply", "--yes", *state)
    assert refused.returncode == 1 and ctl.store.sessions.get(s.id).state is S.ACTIVE
    assert not locked(s.username)
    applied = wodsync(root, tmp_path, "apply", "--yes", "--allow-deletions", "1", *state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"session {s.id} (WKSHP-Gone, {s.username} on lab1) ended first" in applied.stderr
    assert ctl.store.sessions.get(s.id).state is S.ENDED
    assert locked(s.username) and list((HOMES / s.username).iterdir()) == []
    assert not (_records(catalog) / f"{s.username}.json").exists(), "no seat left holding it"


def test_a_stale_seat_record_is_cleared_by_a_command_never_by_hand(ctl, catalog, tmp_path):
    record = _records(catalog) / f"{PREFIX}8.json"
    record.write_text(json.dumps({"session": "deadbeef0000", "workshop": "WKSHP-Old",
                                  "state": "active"}))
    plan = wodsync(catalog["root"], tmp_path, "plan")
    assert plan.returncode == 1 and "deadbeef0000 (WKSHP-Old, seat wodtr8)" in plan.stdout
    released = wodsync(catalog["root"], tmp_path, "seat", "release", "lab1", "8", "--yes",
                       "--state", str(ctl.state))
    assert released.returncode == 0, released.stderr
    assert not record.exists() and locked(f"{PREFIX}8")
    assert wodsync(catalog["root"], tmp_path, "plan").returncode in (0, 2)


def test_a_record_of_a_removed_workshop_is_adopted_and_released(ctl, catalog):
    record = _records(catalog) / f"{PREFIX}8.json"
    record.write_text(json.dumps({"session": "deadbeef0001", "workshop": "WKSHP-Old",
                                  "state": "active", "email": "old@example.org"}))
    report = ctl.sessions.sync_records(["lab1"])[0]
    assert report.adopted == ["deadbeef0001 on seat wodtr8 (releasing)"]
    ctl.sessions.retry_releases()
    assert ctl.store.sessions.get("deadbeef0001").state is S.ENDED
    assert not record.exists()


# ---- the API refuses without leaking ------------------------------------------------------------

@pytest.fixture
def server(catalog, tmp_path) -> Iterator[apiserver.Server]:
    env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN)
    running = apiserver.Server(catalog["root"], tmp_path / "state", env, API_TOKEN).start()
    yield running
    running.stop()
    controller = open_controller(catalog["root"], tmp_path / "state", None, Secrets())
    _purge_all(controller)
    controller.close()


def test_a_duplicate_registration_never_returns_the_first_one_s_credentials(server):
    body = {"workshop": "WKSHP-Hand", "participant": {"email": "eve@example.org"}}
    first = server.call("POST", "/api/v1/sessions", json=body)
    assert first.status_code == 201
    password = first.json()["credentials"]["password"]
    again = server.call("POST", "/api/v1/sessions", json={
        "workshop": "WKSHP-Hand", "participant": {"email": "EVE@example.org"}})
    assert again.status_code == 409
    assert again.json()["session"] == {"id": first.json()["id"], "state": "active"}
    assert password not in again.text and "credentials" not in again.text


def test_bad_bodies_are_a_clean_422_and_strangers_a_401_first(server):
    sid = server.call("POST", "/api/v1/sessions", json={
        "workshop": "WKSHP-Hand", "participant": {"email": "nan@example.org"}}).json()["id"]
    for value in ("NaN", "Infinity", "-Infinity"):
        r = server.call("POST", f"/api/v1/sessions/{sid}/extend",
                        data=f'{{"hours": {value}}}',
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "hours"]
    stranger = server.call("POST", "/api/v1/sessions", token=None, data="{not json",
                           headers={"Content-Type": "application/json"})
    assert stranger.status_code == 401
    known = server.call("POST", "/api/v1/sessions", data="{not json",
                        headers={"Content-Type": "application/json"})
    assert known.status_code == 422


def test_a_create_may_only_name_the_workshop_s_own_locations(server):
    r = server.call("POST", "/api/v1/sessions", json={
        "workshop": "WKSHP-Hand", "participant": {"email": "far@example.org"},
        "location": "far"})
    assert r.status_code == 422 and "does not serve WKSHP-Hand" in r.json()["detail"]


def test_pending_releases_are_retried_with_back_off(ctl, monkeypatch):
    """The wait between tries of a release whose host stays down: 10 s, doubling."""
    from wodsync.engine.transport import TransportError

    s = ctl.sessions.create("WKSHP-Hand", ann()).session

    def down(*args, **kwargs):
        raise TransportError("connection refused")

    monkeypatch.setattr(ctl.sessions.connections, "call", down)
    waits = []
    current = ctl.sessions.cleanup(s.id)
    for _ in range(4):
        assert current.state is S.RELEASING and not current.live
        tried = ctl.store.sessions.events(s.id)[-1].at
        waits.append(round((current.next_release_at - tried).total_seconds()))
        current = ctl.sessions.retry_releases(current.next_release_at)[0]
    assert waits == [10, 20, 40, 80]
    assert current.release_attempts == 5 and current.release_op == "cleanup"
    shown = status_view(ctl.store)["releasesPending"]
    assert [(r["session"], r["seat"], r["attempts"]) for r in shown] == \
        [(s.id, s.username, 5)] and "connection refused" in shown[0]["error"]
    metrics = Metrics()
    metrics.watch_sessions(ctl.store, dict)
    exposition = metrics.exposition().decode()
    assert 'wodsync_sessions{state="releasing"} 1.0' in exposition
    assert "wodsync_release_pending_attempts_max 5.0" in exposition
    monkeypatch.undo()
    ended = ctl.sessions.retry_releases(current.next_release_at)
    assert [(e.id, e.state) for e in ended] == [(s.id, S.ENDED)]


def test_a_saved_plan_that_would_end_live_sessions_is_refused_before_anything_changes(
        ctl, catalog, tmp_path):
    """A saved plan applies exactly what was reviewed; ending sessions changes the hosts. So
    `apply PLAN.json` naming live sessions changes nothing and says how to go on."""
    s = ctl.sessions.create("WKSHP-Gone", ann(2)).session
    root = tmp_path / "repo"
    shutil.copytree(catalog["root"], root)
    shutil.rmtree(root / "catalog/workshops/WKSHP-Gone")
    state = ["--state", str(ctl.state)]
    planned = wodsync(root, tmp_path, "plan", "--allow-deletions", "1", "--out",
                      str(tmp_path / "plan.json"), *state)
    assert planned.returncode in (0, 2), planned.stdout + planned.stderr
    saved = json.loads((tmp_path / "plan.json").read_text())["hosts"]
    assert [h["ending"] for h in saved if h["host"] == "lab1"] == [[s.id]]
    applied = wodsync(root, tmp_path, "apply", str(tmp_path / "plan.json"), *state)
    assert applied.returncode == 1 and f"ends live sessions ({s.id})" in applied.stderr
    assert ctl.store.sessions.get(s.id).state is S.ACTIVE and not locked(s.username)
