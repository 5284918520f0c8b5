"""The GitOps daemon against real git repositories (a bare origin and a clone), real accounts
on this machine as a `local` host, and a second host that does not answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from wodsync.daemon.loop import Daemon as Loops
from wodsync.daemon.loop import Settings
from wodsync.daemon.views import status_view
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.git import GitSource
from wodsync.source.revision import Current
from wodsync.store import Participant, Trigger, open_store

from gitorigin import Origin as Repo
from gitorigin import local_lab
from helpers import remove_test_accounts, until
from pg import pg_url  # noqa: F401  (a fixture)
from sshd import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")

PREFIX, UID_BASE = "wodtg", 59000
API_TOKEN, WEBHOOK_SECRET = "api-" + os.urandom(6).hex(), "hook-" + os.urandom(6).hex()
DEAD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzfOlzAboCD63XDt919hOsKiQP5cZgs8+hiyJVx3GXU"


class Daemon:
    def __init__(self, repo: Repo, state: Path, *args: str, db: str | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(Path(os.sys.executable).parent / "wodsync"), "daemon", "--repo",
                    str(repo.origin), "--state", str(state), "--listen",
                    f"127.0.0.1:{self.port}", *(["--db", db] if db else []), *args]
        self.log = state.parent / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True, webhook: bool = True) -> Daemon:
        env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN,
                   WODSYNC_WEBHOOK_SECRET=WEBHOOK_SECRET if webhook else "")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=log)
        if ready:
            until(self.ready, f"the daemon never got ready:\n{self.text()}")
        return self

    def _get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=5,
                            headers={"Authorization": f"Bearer {API_TOKEN}"})

    def ready(self) -> bool:
        try:
            return self._get("/readyz").ok
        except requests.ConnectionError:
            return False

    def metrics(self) -> str:
        return self._get("/metrics").text

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=120)
        return self.proc.returncode if self.proc else None

    def hook(self, body: dict, event: str = "push", secret: str | None = WEBHOOK_SECRET,
             delivery: str | None = None) -> requests.Response:
        raw = json.dumps(body).encode()
        headers = {"X-GitHub-Event": event, "Content-Type": "application/json"}
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        if secret is not None:
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(
                secret.encode(), raw, hashlib.sha256).hexdigest()
        return requests.post(self.base + "/hooks/git", data=raw, headers=headers, timeout=10)


def exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


@pytest.fixture
def repo(tmp_path):
    remove_test_accounts(PREFIX, UID_BASE)
    r = local_lab(tmp_path, PREFIX, UID_BASE, 5)
    yield r
    remove_test_accounts(PREFIX, UID_BASE)


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop(signal.SIGKILL)


def started(daemons: list[Daemon], d: Daemon, ready: bool = True) -> Daemon:
    """Started and remembered first, so the fixture stops it even when it never got ready."""
    daemons.append(d)
    return d.start(ready)


def status(d: Daemon) -> dict:
    return d._get("/api/v1/status").json()


def applied_revision(d: Daemon, host: str = "local") -> str | None:
    hosts = {h["host"]: h for h in status(d)["hosts"]}
    return hosts.get(host, {}).get("lastAppliedRevision")


NOTEBOOK = ('{"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["Seat {{ STDID }}"]}],'
            ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')


def add_workshop(repo: Repo, key: str, seats: str) -> None:
    repo.write(f"catalog/workshops/{key}/workshop.yaml",
               f"name: {key}\ncapacity: 2\nseats: {{{seats}}}\nlocation: lab\nduration: 1\n")
    repo.write(f"catalog/workshops/{key}/1-Intro.ipynb", NOTEBOOK)


def create_session(d: Daemon, workshop: str, email: str) -> dict:
    """A CREATE through the daemon's API; the session, credentials included."""
    created = requests.post(d.base + "/api/v1/sessions", timeout=60, headers={
        "Authorization": f"Bearer {API_TOKEN}"}, json={
        "workshop": workshop, "participant": {"email": email}})
    assert created.status_code == 201, created.text
    return created.json()


def feed(d: Daemon) -> set[str]:
    return {w["key"] for w in d._get("/api/v1/workshops").json()}


def test_a_merged_workshop_is_deployed_within_one_interval(repo, daemons, tmp_path):
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "2", "--resync", "600",
                                "--log-json"))
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    add_workshop(repo, "WKSHP-New", "first: 6, last: 7")
    repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
               .replace("last: 5", "last: 7"))
    sha = repo.commit("a new workshop and its seats")
    until(lambda: exists(f"{PREFIX}7"), "the merged change was never deployed", timeout=20)
    until(lambda: applied_revision(d) == sha, "status never showed the new revision")
    assert "WKSHP-New" in feed(d), "the API serves the merged workshop"
    history = d._get("/api/v1/status").json()["reconciliations"]
    assert history[0]["revision"] == sha and history[0]["trigger"] == "commit"
    lines = [json.loads(line) for line in d.text().splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    applied = [x for x in lines if x.get("revision") == sha[:12] and x.get("host") == "local"]
    assert applied and applied[-1]["result"] == "applied", lines


def test_a_signed_webhook_deploys_at_once_and_a_bad_one_fetches_nothing(repo, daemons,
                                                                        tmp_path):
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync", "3600"))
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    (repo.work / "templates/motd.j2").write_text("Hello from {{ host.name }}\n")
    sha = repo.commit("a new motd")
    push = {"ref": "refs/heads/main", "after": sha,
            "repository": {"clone_url": str(repo.origin)}}
    assert d.hook(push, secret="wrong").status_code == 401
    assert d.hook(push, secret=None).status_code == 401
    time.sleep(1)
    assert (tmp_path / "motd").read_text().startswith("Welcome"), "nothing fetched"
    assert d.hook({"zen": "hi"}, event="ping").status_code == 200
    assert d.hook(push).status_code == 202
    until(lambda: (tmp_path / "motd").read_text() == "Hello from local\n",
          "the signed webhook did not deploy", timeout=15)
    until(lambda: status(d)["reconciliations"][0]["trigger"] == "webhook", "trigger not recorded")


def test_an_invalid_revision_is_never_deployed_and_the_last_good_one_heals(repo, daemons,
                                                                           tmp_path):
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "1", "--resync", "5"))
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
               .replace("last: 5", "lasst: 6"))
    bad = repo.commit("a typo")
    until(lambda: status(d)["repository"]["headRevision"] == bad, "the bad head was never seen")
    s = status(d)
    assert s["repository"]["lastGoodRevision"] == repo.first
    located = {(e["path"], e["line"], e["message"]) for e in s["repository"]["errors"]}
    assert ("catalog/students.yaml", 5, "unknown key 'lasst'") in located
    source = s["repository"]  # the source is Stalled, not the hosts (issue 23)
    assert source["condition"] == "Stalled" and "catalog/students.yaml:" in source["message"]
    subprocess.run(["userdel", f"{PREFIX}2"], check=True)
    until(lambda: exists(f"{PREFIX}2"), "the last good revision did not heal", timeout=20)
    assert not exists(f"{PREFIX}6"), "the invalid revision was deployed"
    until(lambda: status(d)["hosts"][0]["condition"] == "Ready",
          "the host is not Ready on the last good revision")
    assert applied_revision(d) == repo.first
    repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
               .replace("lasst: 6", "last: 6"))
    fixed = repo.commit("fixed")
    until(lambda: applied_revision(d) == fixed and exists(f"{PREFIX}6"), "the fix never landed")
    until(lambda: status(d)["hosts"][0]["condition"] == "Ready", "not Ready after the fix")


def in_process(repo: Repo, state: Path) -> Loops:
    """The daemon's loops in this process, not started: a test drives their rounds."""
    store = open_store(state_dir=state)
    current = Current()
    return Loops(GitSource(str(repo.origin), "main", state), store, Secrets(),
                 SessionService(store, current), current, Settings())


def close(loops: Loops) -> None:
    loops.sessions.connections.close()
    loops.source.close()
    loops.store.close()


def catalog_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folder name (the revision) of every catalog load from now on, in order."""
    import wodsync.catalog

    loaded: list[str] = []
    load = wodsync.catalog.load_catalog
    monkeypatch.setattr(wodsync.catalog, "load_catalog",
                        lambda root: loaded.append(Path(root).name) or load(root))
    return loaded


def test_each_revision_is_validated_once_and_a_bad_head_stalls_the_source_alone(
        repo, tmp_path, monkeypatch):
    """Counting the catalog loads: one per revision — the head that deploys, the bad head
    (recorded, never checked again), a restart's last good revision. Meanwhile the host stays
    Ready on the last good revision and heals; the source alone is Stalled, with the located
    error; the session service sees the very deployment the hosts converge to."""
    loaded = catalog_loads(monkeypatch)
    state = tmp_path / "state"
    loops = in_process(repo, state)
    try:
        loops.restore()
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        assert not loops.check_source(Trigger.COMMIT), "the same head is nothing new"
        assert loaded == [repo.first]
        repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
                   .replace("last: 5", "lasst: 6"))
        bad = repo.commit("a typo")
        assert not loops.check_source(Trigger.COMMIT)
        assert not loops.check_source(Trigger.COMMIT)
        assert loaded == [repo.first, bad]
        subprocess.run(["userdel", f"{PREFIX}2"], check=True)
        loops.reconcile_round(Trigger.RESYNC)
        assert exists(f"{PREFIX}2") and not exists(f"{PREFIX}6")
        s = status_view(loops.store)
        source = s["repository"]
        assert (source["condition"], source["reason"], source["lastAttemptedRevision"],
                source["lastGoodRevision"]) == ("Stalled", "InvalidRevision", bad, repo.first)
        assert source["message"].startswith(
            f"revision {bad[:12]} is invalid: catalog/students.yaml:")
        [host] = s["hosts"]
        assert (host["condition"], host["reason"], host["lastAppliedRevision"]) == (
            "Ready", "DriftRepaired", repo.first)
        assert loops.sessions.deployment() is loops.current.peek()
        assert loops.current().revision == repo.first
    finally:
        close(loops)
    loaded.clear()
    again = in_process(repo, state)
    try:
        again.restore()
        assert not again.check_source(Trigger.COMMIT), "the bad head is not checked again"
        assert loaded == [repo.first], "a restart loads the last good revision once"
        repo.write("catalog/students.yaml", (repo.work / "catalog/students.yaml").read_text()
                   .replace("lasst: 6", "last: 6"))
        fixed = repo.commit("fixed")
        assert again.check_source(Trigger.COMMIT)
        assert loaded == [repo.first, fixed]
        source = status_view(again.store)["repository"]
        assert (source["condition"], source["reason"], source["lastAttemptedRevision"],
                source["errors"]) == ("Ready", "RevisionDeployed", fixed, [])
    finally:
        close(again)


def test_a_head_held_for_live_sessions_is_loaded_once_however_often_it_is_checked(
        repo, tmp_path, monkeypatch):
    """A head removing a workshop with a live session is checked again every interval (the
    session may end) but validated once; once the session is over it deploys as it was."""
    add_workshop(repo, "WKSHP-Live", "first: 1, last: 2")
    first = repo.commit("a workshop")
    loaded = catalog_loads(monkeypatch)
    loops = in_process(repo, tmp_path / "state")
    try:
        assert loops.check_source(Trigger.COMMIT)
        loops.reconcile_round(Trigger.COMMIT)
        live = loops.sessions.create("WKSHP-Live", Participant("Ann", "ann@example.org", ""))
        subprocess.run(["git", "-C", str(repo.work), "rm", "-rq",
                        "catalog/workshops/WKSHP-Live"], check=True)
        removal = repo.commit("retire WKSHP-Live")
        for _ in range(3):
            assert not loops.check_source(Trigger.COMMIT)
        source = status_view(loops.store)["repository"]
        assert (source["condition"], source["reason"], source["lastAttemptedRevision"]) == (
            "Stalled", "LiveSessions", removal)
        assert live.session.id in source["message"]
        assert loops.sessions.purge(live.session.id).state.value == "ended"
        assert loops.check_source(Trigger.COMMIT), "deployed once its session ended"
        assert loops.current().revision == removal
        assert loaded == [first, removal]
    finally:
        close(loops)


def test_a_revision_too_large_is_refused_unwritten_and_the_next_good_one_deploys(
        repo, daemons, tmp_path):
    """5 MiB of zeros against --max-revision-bytes 1MiB: refused before anything is written,
    recorded like an invalid revision (located, hosts Stalled), the last good revision stays
    deployed and heals; the next small commit deploys. The file lies outside the catalog, so
    only its size can have stopped it."""
    state = tmp_path / "state"
    d = started(daemons, Daemon(repo, state, "--interval", "1", "--resync", "5",
                                "--max-revision-bytes", "1MiB"))
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    (repo.work / "docs").mkdir()
    (repo.work / "docs/big.bin").write_bytes(bytes(5 << 20))
    big = repo.commit("a compressible blob")
    until(lambda: status(d)["repository"]["headRevision"] == big, "the big head was never seen")
    s = status(d)
    assert s["repository"]["lastGoodRevision"] == repo.first
    [error] = s["repository"]["errors"]
    assert (error["path"], error["line"], error["code"]) == ("docs/big.bin", 1,
                                                             "revision-too-large")
    assert error["message"] == ("too large to export: 5 MiB in 8 files (limit 1 MiB); "
                                "largest: docs/big.bin (5 MiB)")
    source = s["repository"]  # the source is Stalled, not the hosts (issue 23)
    assert (source["condition"], source["reason"]) == ("Stalled", "ExportRefused")
    assert source["message"].startswith(f"revision {big[:12]} is invalid: docs/big.bin:1:1: "
                                        "error[revision-too-large]: too large to export: 5 MiB")
    assert not [p.name for p in (state / "revisions").iterdir()
                if p.name.startswith((big, "."))], "nothing of it is written"
    assert f"revision {big[:12]} is invalid" in d.text()
    subprocess.run(["userdel", f"{PREFIX}2"], check=True)
    until(lambda: exists(f"{PREFIX}2"), "the last good revision did not heal", timeout=20)
    assert applied_revision(d) == repo.first
    (repo.work / "docs/big.bin").unlink()
    repo.write("templates/motd.j2", "Smaller on {{ host.name }}\n")
    fixed = repo.commit("the blob goes")
    until(lambda: applied_revision(d) == fixed, "the next good commit never deployed")
    until(lambda: status(d)["hosts"][0]["condition"] == "Ready", "not Ready after the fix")
    assert (tmp_path / "motd").read_text() == "Smaller on local\n"
    assert status(d)["repository"]["errors"] == []


def test_a_size_refusal_is_checked_again_by_a_daemon_with_a_higher_limit(repo, daemons,
                                                                          tmp_path):
    """An invalid catalog stays refused across restarts; a size refusal depends on the limits,
    so a daemon restarted with a higher one exports and deploys the same head."""
    (repo.work / "docs").mkdir()
    (repo.work / "docs/big.bin").write_bytes(bytes(2 << 20))
    big = repo.commit("a 2 MiB blob")
    first = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600",
                                    "--max-revision-bytes", "1M"), ready=False)

    def refused() -> bool:
        try:
            return bool(status(first)["repository"]["errors"])
        except (requests.ConnectionError, KeyError, TypeError):
            return False

    until(refused, f"the big head was never refused:\n{first.text()}")
    assert not first.ready(), "nothing valid was ever deployed"
    assert first.stop() == 0
    again = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600",
                                    "--max-revision-bytes", "4MiB"))
    until(lambda: applied_revision(again) == big, "the higher limit did not let it deploy")
    assert status(again)["repository"]["errors"] == []


def test_a_replayed_or_foreign_webhook_fetches_nothing(repo, daemons, tmp_path):
    """A delivery accepted once is a 200 `duplicate` the second time, by its id or (an id is
    not signed) by its body; a signed push naming another repository is ignored."""
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync",
                                "3600"))
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    motd = tmp_path / "motd"

    def push(sha: str, **names: str) -> dict:
        return {"ref": "refs/heads/main", "after": sha,
                "repository": names or {"clone_url": str(repo.origin)}}

    repo.write("templates/motd.j2", "One on {{ host.name }}\n")
    one = repo.commit("one")
    foreign = d.hook(push(one, full_name="other/catalog",
                          clone_url="https://github.com/other/catalog.git"), delivery="d-0")
    assert foreign.status_code == 202
    assert foreign.json()["detail"] == (f"ignored: a delivery for other/catalog, not for the "
                                        f"followed repository {repo.origin}")
    ping = d.hook({"zen": "hi", "repository": {"full_name": "other/catalog"}}, event="ping")
    assert ping.status_code == 200 and ping.json()["detail"] == (
        f"pong; but this daemon follows {repo.origin}: pushes to other/catalog will be ignored")
    time.sleep(1.5)
    assert motd.read_text().startswith("Welcome"), "a foreign delivery fetched"
    first = d.hook(push(one), delivery="d-1")
    assert first.status_code == 202 and first.json()["detail"] == "fetching main"
    until(lambda: motd.read_text() == "One on local\n", "the delivery did not deploy", 15)
    repo.write("templates/motd.j2", "Two on {{ host.name }}\n")
    two = repo.commit("two")
    again = d.hook(push(one), delivery="d-1")
    assert (again.status_code, again.json()) == (200, {"detail": "duplicate delivery d-1 "
                                                                 "ignored"})
    forged = d.hook(push(one), delivery="d-forged")
    assert forged.status_code == 200 and forged.json()["detail"] == (
        "duplicate delivery d-forged ignored: the same signed body as delivery d-1")
    assert d.hook(push(one, full_name="other/catalog",
                       clone_url="https://github.com/other/catalog.git"),
                  delivery="d-0").status_code == 200
    time.sleep(1.5)
    assert motd.read_text() == "One on local\n", "a repeated delivery fetched"
    assert d.hook(push(two), delivery="d-2").status_code == 202
    until(lambda: motd.read_text() == "Two on local\n", "a new delivery did not deploy", 15)
    until(lambda: applied_revision(d) == two, "status never showed the new revision")


def _drift_total(d) -> float:
    """The local host's drift counter as the metrics say (0 before any)."""
    found = re.search(r'^wodsync_drift_total\{host="local"\} ([0-9.]+)$', d.metrics(), re.M)
    return float(found[1]) if found else 0.0


def test_drift_is_fixed_within_one_resync_and_counted(repo, daemons, tmp_path):
    d = Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync", "5")
    daemons.append(d)  # remembered first, as started() does
    d.start(webhook=False)
    until(lambda: exists(f"{PREFIX}5"), "the first revision was never applied")
    manual = requests.post(d.base + "/api/v1/reconcile", timeout=10,
                           headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert manual.status_code == 202
    until(lambda: any(r["trigger"] == "manual" for r in status(d)["reconciliations"]),
          "a manual reconcile was not recorded")
    subprocess.run(["userdel", f"{PREFIX}3"], check=True)
    (tmp_path / "motd").write_text("edited by hand\n")
    until(lambda: exists(f"{PREFIX}3") and (tmp_path / "motd").read_text().startswith(
        "Welcome"), "drift was not repaired", timeout=20)
    # The two edits are two moments: a resync may fall between them and count drift twice.
    until(lambda: _drift_total(d) >= 1, "drift was not counted")
    counted = status(d)["hosts"][0]["driftCount"]
    assert counted in (1, 2) and _drift_total(d) == counted
    assert "trigger=resync" in d.text() and "drift=True" in d.text()
    assert "no WODSYNC_WEBHOOK_SECRET is set: the git webhook answers 503" in d.text()
    assert "WODSYNC_API_TOKEN" not in d.text()  # that one is set: nothing to say


def test_one_host_down_is_stalled_and_backs_off_while_the_other_converges(repo, daemons,
                                                                          tmp_path):
    repo.write("hosts/down.yaml", f"address: 127.0.0.1\nport: {free_port()}\n"
               f"host_key: {DEAD_KEY}\nlocation: lab\npool: test\n")
    repo.commit("a host that does not answer")
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync", "3600"))
    until(lambda: exists(f"{PREFIX}5"), "the reachable host did not converge")
    until(lambda: {h["host"]: h["condition"] for h in status(d)["hosts"]}.get("down")
          == "Stalled", "the unreachable host is not Stalled")
    down = next(h for h in status(d)["hosts"] if h["host"] == "down")
    assert "cannot connect" in down["lastError"] and down["nextAttempt"]
    until(lambda: len([r for r in status(d)["reconciliations"] if r["host"] == "down"]) >= 2,
          "the unreachable host was never retried", timeout=30)
    retries = [r for r in status(d)["reconciliations"] if r["host"] == "down"]
    gap = abs(_t(retries[0]["startedAt"]) - _t(retries[1]["startedAt"]))
    assert gap >= 9, "the retry came before its back-off"
    assert 'wodsync_host_ready{host="local"} 1.0' in d.metrics()


def test_sigterm_lets_the_batch_in_flight_finish(repo, daemons, tmp_path):
    gate = tmp_path / "gate"
    hook = tmp_path / "hold.sh"
    hook.write_text(f"touch {tmp_path}/holding\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n")
    repo.write("catalog/system.yaml", f"files:\n  - template: motd.j2\n    path: {tmp_path}/motd\n"
               f"    on_change: [sh, {hook}]\n")
    repo.commit("a slow command")
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync",
                                "3600"), ready=False)
    until(lambda: (tmp_path / "holding").exists(), "the apply never reached its command")
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert d.proc.poll() is None, "the daemon left before its batch finished"
    gate.touch()
    assert d.proc.wait(timeout=120) == 0
    assert exists(f"{PREFIX}5"), "the batch in flight finished: accounts made after the file"


def _t(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_a_second_daemon_on_one_sqlite_state_refuses(repo, daemons, tmp_path):
    started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600"))
    second = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600"),
                     ready=False)
    assert second.proc.wait(timeout=60) == 1
    assert "another wodsync daemon" in second.text()
    applied = subprocess.run([str(Path(os.sys.executable).parent / "wodsync"), "apply", "--yes",
                              "--root", str(repo.work), "--state", str(tmp_path / "state")],
                             capture_output=True, text=True)
    assert applied.returncode == 1 and "a wodsync daemon" in applied.stderr


def test_a_standby_daemon_on_postgresql_takes_over(repo, daemons, tmp_path, pg_url):  # noqa: F811
    first = started(daemons, Daemon(repo, tmp_path / "state1", "--interval", "3600", db=pg_url))
    until(lambda: exists(f"{PREFIX}5"), "the first daemon did not converge")
    standby = started(daemons, Daemon(repo, tmp_path / "state2", "--interval", "3600",
                                      "--resync", "3600", db=pg_url), ready=False)
    until(lambda: "this daemon is a standby, waiting for the writer lock: another wodsync "
          "daemon (pid" in standby.text(), "the standby never said whom it waits for")
    assert not standby.ready(), "a standby does not serve"
    first.stop(signal.SIGKILL)
    subprocess.run(["userdel", f"{PREFIX}4"], check=True)
    until(standby.ready, "the standby never took over", timeout=60)
    until(lambda: exists(f"{PREFIX}4"), "the standby does not reconcile")


def test_a_daemon_killed_mid_apply_converges_after_a_restart(repo, daemons, tmp_path):
    """With a live session: after the restart it is still active, its seat unlocked and
    recorded, and the next CREATE never gets that seat."""
    add_workshop(repo, "WKSHP-Live", "first: 1, last: 2")
    repo.commit("a workshop")
    first = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600",
                                    "--resync", "3600"))
    # A CREATE is made from the revision its host applied: once the host's job has ended.
    until(lambda: applied_revision(first), "the first revision was never applied")
    live = create_session(first, "WKSHP-Live", "live@example.org")
    first.stop()
    gate = tmp_path / "gate"
    hook = tmp_path / "hold.sh"
    hook.write_text(f"touch {tmp_path}/holding\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n")
    repo.write("catalog/system.yaml", f"files:\n  - template: motd.j2\n    path: {tmp_path}/motd\n"
               f"    on_change: [sh, {hook}]\n")
    repo.write("templates/motd.j2", "Slowly on {{ host.name }}\n")
    repo.commit("a slow command")
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600", "--resync",
                                "5"), ready=False)
    until(lambda: (tmp_path / "holding").exists(), "the apply never reached its command")
    d.stop(signal.SIGKILL)
    gate.touch()
    again = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "3600",
                                    "--resync", "5"))
    until(lambda: exists(f"{PREFIX}5") and status(again)["hosts"][0]["condition"] == "Ready",
          "the restarted daemon did not converge", timeout=60)
    assert (tmp_path / "motd").read_text() == "Slowly on local\n"
    user = live["credentials"]["username"]
    shadow = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                  if ln.startswith(user + ":"))
    assert not shadow.split(":")[1].startswith("!"), "the live seat kept its password"
    shown = again._get(f"/api/v1/sessions/{live['id']}").json()
    assert shown["state"] == "active"
    other = create_session(again, "WKSHP-Live", "other@example.org")
    assert other["seat"] != live["seat"], "a seat is never given twice"


def test_a_workshop_removed_with_a_live_session_is_held_until_allowed_then_ended_first(
        repo, daemons, tmp_path):
    """Removing a workshop (its hub group, its catalog entry) with a live session is a
    decision: the commit is held, naming the session; with the trailer the session is ended
    first (CLEANUP: password locked, home emptied, no seat record left), then it deploys."""
    add_workshop(repo, "WKSHP-Live", "first: 1, last: 2")
    repo.commit("a workshop")
    d = started(daemons, Daemon(repo, tmp_path / "state", "--interval", "1"))
    until(lambda: applied_revision(d), "the first revision was never applied")
    live = create_session(d, "WKSHP-Live", "live@example.org")
    subprocess.run(["git", "-C", str(repo.work), "rm", "-rq", "catalog/workshops/WKSHP-Live"],
                   check=True)
    removal = repo.commit("retire WKSHP-Live")
    until(lambda: (status(d)["repository"] or {}).get("headRevision") == removal,
          "the removal was never fetched")
    errors = status(d)["repository"]["errors"]
    assert errors[0]["code"] == "live-sessions" and live["id"] in errors[0]["message"]
    assert status(d)["repository"]["reason"] == "LiveSessions"  # the source's, not the hosts
    assert d._get(f"/api/v1/sessions/{live['id']}").json()["state"] == "active"
    user = live["credentials"]["username"]
    record = tmp_path / "hoststate/seats" / f"{user}.json"
    assert record.exists()
    repo.write("catalog/workshops/README.md", "retired\n")
    allowed = repo.commit("retire WKSHP-Live\n\nWodsync-Allow-Deletions: 1")
    until(lambda: applied_revision(d) == allowed, f"never deployed:\n{d.text()[-3000:]}")
    shown = d._get(f"/api/v1/sessions/{live['id']}").json()
    assert shown["state"] == "ended" and "cleaned up" in shown["history"][-1]["message"]
    shadow = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                  if ln.startswith(user + ":"))
    assert shadow.split(":")[1].startswith("!"), "no seat left holding a password"
    assert not record.exists()
