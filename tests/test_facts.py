"""Published facts, previews without SSH, and the status / history / facts commands.

Facts are really observed on the loopback sshd lab (real accounts of the `wodt` test pool, real
files), stored as the daemon stores them, exported, then planned from; the daemon's endpoints
are the real routers served by uvicorn over a store the test fills.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.api.routes import facts as facts_route
from wodsync.api.routes import status as status_route
from wodsync.authoring.facts import FactsDocument, FactsError, Malformed, sanitise
from wodsync.authoring.preview import preview_host
from wodsync.authoring.scrub import find_leaks, pseudonym, scrub
from wodsync.catalog import validate
from wodsync.engine.desired import LiveSeat, desired_state
from wodsync.engine.plan import plan_host
from wodsync.engine.reconcile import host_job
from wodsync.secrets import Secrets
from wodsync.store import Condition, Reason, Reconciliation, Result, Trigger, open_store

from apiserver import serving
from enginelab import NEEDS, run
from facts import converged
from helpers import wodsync

REVISION = "0123456789abcdef0123456789abcdef01234567"
OBSERVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "Br4nd-v4lue-only-the-host-may-see"
FACTS_TOKEN, API_TOKEN = "facts-t0ken-for-ci", "api-t0ken-for-operators"
HUB_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"
ACCOUNT_FIELDS = {"uid", "gid", "home", "shell", "locked", "home_facts"}
FILE_FIELDS = {"sha256", "mode", "owner", "group", "regular"}
HEX64 = re.compile(r"[0-9a-f]{64}")


# -- helpers -------------------------------------------------------------------------------------

def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`wodsync ARGS` as an operator or CI runs it (in this process: tests/helpers.py)."""
    return wodsync(*args, env={**os.environ, **(env or {})})


def observe_into_store(root: Path, state: Path, secrets: Secrets | None = None) -> Any:
    """Observe the lab host as the daemon does and store what the daemon stores."""
    catalog, _ = validate(root)
    result = host_job(desired_state(catalog, "lab1", secrets or Secrets(env={})), apply=False)
    assert result.error is None and result.facts is not None, result.error
    with open_store(state_dir=state) as store:
        store.status.put_facts("lab1", {"facts": result.facts, "digests": result.plan.digests},
                               revision=REVISION, observed_at=OBSERVED)
    return result


def export(state: Path, folder: Path, *extra: str) -> dict[str, Any]:
    done = cli("facts", "export", str(folder), "--state", str(state), *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((folder / "lab1.json").read_text())


def plans(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert done.returncode in (0, 2), done.stdout + done.stderr
    return {item["host"]: item["plan"] for item in json.loads(done.stdout)}


def same_plan(live: dict[str, Any], preview: dict[str, Any]) -> None:
    for key in ("changes", "summary", "notes", "errors", "refused", "digests"):
        assert preview[key] == live[key], key


def with_secret_branding(root: Path, tmp_path: Path) -> Path:
    """The lab's template now prints a secret granted to the host: its file embeds it."""
    (root / "catalog/variables.yaml").write_text("BRANDING: {secret: LAB_BRANDING}\n")
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"secrets:\n  LAB_BRANDING:\n    value: \"{SECRET}\"\n"
                       "    hosts: [lab1]\n")
    return secrets



def daemon_app(state: Path) -> tuple[FastAPI, Any]:
    store = open_store(state_dir=state)
    app = create_app(Context(store, api_token=lambda: API_TOKEN, facts_token=lambda: FACTS_TOKEN),
                     [status_route.router, facts_route.router])
    return app, store


# -- export: nothing secret, field by field ------------------------------------------------------

@NEEDS
def test_export_of_a_really_observed_host_holds_no_secret_field_by_field(lab, tmp_path):
    secrets = with_secret_branding(lab, tmp_path)
    applied = run(lab, "apply", "--yes", "--secrets", str(secrets))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert SECRET in (tmp_path / "etc/wodsync-test.conf").read_text()
    subprocess.run(["chpasswd"], input="wodt1:Pa55-word-of-a-student\n", text=True, check=True)
    shadow_hash = next(line.split(":")[1] for line in Path("/etc/shadow").read_text()
                       .splitlines() if line.startswith("wodt1:"))
    assert shadow_hash.startswith("$")
    state = tmp_path / "ctl"
    observe_into_store(lab, state, Secrets.load(secrets))

    doc = export(state, tmp_path / "facts", "--secrets", str(secrets))
    text = json.dumps(doc)
    assert SECRET not in text and shadow_hash not in text and "Pa55-word" not in text
    assert set(doc) == {"host", "observed_at", "revision", "facts", "digests", "live_seats"}
    assert (doc["host"], doc["observed_at"], doc["revision"]) == \
        ("lab1", "2026-01-02T03:04:05Z", REVISION)
    assert set(doc["facts"]) == {"file", "sysctl", "account", "group", "seat"}
    assert all(HEX64.fullmatch(d) for d in doc["digests"].values())
    accounts = doc["facts"]["account"]["accounts"]
    assert len(accounts) == 20
    for name, account in accounts.items():
        assert set(account) == ACCOUNT_FIELDS, name
        assert account["locked"] is (name != "wodt1")
        assert set(account["home_facts"]) == {"mode", "uid", "gid", "acl", "entries"}
        assert all(isinstance(v, int) for v in (account["uid"], account["gid"]))
    assert set(doc["facts"]["account"]) == {"accounts", "groups", "managed", "acl_uid"}
    files = doc["facts"]["file"]
    assert set(files) == {"files", "managed", "pending"}
    conf = files["files"][str(tmp_path / "etc/wodsync-test.conf")]
    assert set(conf) == FILE_FIELDS and HEX64.fullmatch(conf["sha256"])
    assert doc["facts"]["sysctl"] == {"values": {"net.ipv4.tcp_keepalive_time": Path(
        "/proc/sys/net/ipv4/tcp_keepalive_time").read_text().strip()}}
    assert doc["facts"]["seat"] == {"occupied": {}}
    assert find_leaks(doc, [SECRET, shadow_hash]) == []


def test_free_text_is_scrubbed_unknown_fields_dropped_and_wrong_types_refused():
    down = {"ok": False, "down": False,
            "error": f"GET /users: HTTP 403 http://admin:pw0rd@127.0.0.1:8081/hub/api "
                     f"token {HUB_TOKEN} password=hunter22 {HUB_TOKEN}"}
    facts = {"hub_user": {"api": down, "users": None, "managed": [], "token": HUB_TOKEN},
             "service": {"running": True, "pid": 7, "fingerprint": "ab" * 32,
                         "config": {"token": HUB_TOKEN}},
             "seat": {"occupied": {"wodt1": {"session": "ABCDEF", "state": "active",
                                             "password": "x"}}},
             "newer_kind": {"anything": HUB_TOKEN}}
    clean = sanitise(facts, "hub-emea")
    assert HUB_TOKEN not in json.dumps(clean)
    error = clean["hub_user"]["api"]["error"]
    assert error == "GET /users: HTTP 403 http://***@127.0.0.1:8081/hub/api token *** " \
                    "password=*** ***"
    assert set(clean) == {"hub_user", "service", "seat"}
    assert set(clean["hub_user"]) == {"api", "users", "managed"}
    assert set(clean["service"]) == {"running", "pid", "fingerprint"}
    assert clean["seat"]["occupied"]["wodt1"] == {"session": pseudonym("abcdef"),
                                                   "state": "active"}
    with pytest.raises(Malformed, match=r"host hub-emea: account\.accounts\.wodt1\.uid: "
                                        r"expected an integer"):
        sanitise({"account": {"accounts": {"wodt1": {
            "uid": "0", "gid": 1, "home": "/h", "shell": "/bin/sh", "locked": True,
            "home_facts": None}}, "groups": {}, "managed": [], "acl_uid": None}}, "hub-emea")
    assert scrub("URLError: [Errno 111] Connection refused") == \
        "URLError: [Errno 111] Connection refused"


# -- previews equal the live plan ----------------------------------------------------------------

@NEEDS
def test_a_preview_from_exported_facts_equals_the_live_plan(lab, tmp_path):
    state, folder = tmp_path / "ctl", tmp_path / "facts"
    live = plans(run(lab, "plan", "--json", "--state", str(state)))["lab1"]
    assert live["summary"] == {"create": 22, "update": 0, "delete": 0}
    observe_into_store(lab, state)
    export(state, folder)
    preview = run(lab, "plan", "--facts", str(folder), "--json")
    assert preview.returncode == 2, preview.stderr
    same_plan(live, plans(preview)["lab1"])
    assert json.loads(preview.stdout)[0]["preview"] == \
        f"preview against facts observed at 2026-01-02T03:04:05Z, revision {REVISION}"

    assert run(lab, "apply", "--yes").returncode == 0
    subprocess.run(["userdel", "wodt3"], check=True)
    conf = tmp_path / "etc/wodsync-test.conf"
    conf.chmod(0o600)
    conf.write_text("edited behind wodsync's back\n")
    live = plans(run(lab, "plan", "--json", "--state", str(state)))["lab1"]
    assert {(c["action"], c["address"]) for c in live["changes"]} == {
        ("create", "account:wodt3"), ("update", "group:wodtgrp"),
        ("update", "file:" + str(conf))}
    observe_into_store(lab, state)
    export(state, folder)
    preview = run(lab, "plan", "--facts", str(folder), "--json")
    same_plan(live, plans(preview)["lab1"])


@NEEDS
def test_a_file_embedding_a_secret_is_compared_with_placeholders_only_for_what_they_allow(
        lab, tmp_path):
    secrets = with_secret_branding(lab, tmp_path)
    state, folder = tmp_path / "ctl", tmp_path / "facts"
    assert run(lab, "apply", "--yes", "--secrets", str(secrets)).returncode == 0
    conf = str(tmp_path / "etc/wodsync-test.conf")
    live = run(lab, "plan", "--secrets", str(secrets), "--state", str(state))
    assert live.returncode == 0, live.stdout + live.stderr
    observe_into_store(lab, state, Secrets.load(secrets))
    export(state, folder)
    preview = run(lab, "plan", "--facts", str(folder))
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "host lab1: no changes" in preview.stdout
    assert f"! {conf} embeds secrets: compared with placeholders" in preview.stdout

    Path(conf).chmod(0o644)
    live = plans(run(lab, "plan", "--json", "--secrets", str(secrets), "--state", str(state)))
    observe_into_store(lab, state, Secrets.load(secrets))
    export(state, folder)
    seen = plans(run(lab, "plan", "--facts", str(folder), "--json"))
    (change,) = live["lab1"]["changes"]
    (previewed,) = seen["lab1"]["changes"]
    assert (previewed["action"], previewed["address"]) == ("update", f"file:{conf}")
    assert (change["action"], change["address"], change["detail"]) == \
        ("update", f"file:{conf}", "mode 0644 → 0640")
    assert previewed["detail"] == "mode 0644 → 0640; content may differ: secrets not known"


def hub_secrets() -> Secrets:
    return Secrets(env={"HUB_EMEA_TOKEN": HUB_TOKEN, "HUB_AMER_TOKEN": HUB_TOKEN})


def test_each_kind_publishes_exactly_the_facts_its_host_half_declares(repo):
    """The whitelist is the registry's: every kind's `FACTS` beside its `observe`, naming the
    fields of its `Facts` type, and the converged facts tests build pass it unchanged."""
    from wodsync.agent import kinds as host_halves
    from wodsync.authoring.facts import SCHEMA, check
    from wodsync.engine.kinds import KINDS

    from facts import CONVERGED

    assert set(SCHEMA) == set(host_halves.KINDS) == set(KINDS) == set(CONVERGED)
    for kind, module in host_halves.KINDS.items():
        assert SCHEMA[kind] is module.FACTS
        assert (set(module.FACTS.required), set(module.FACTS.optional)) == \
            (module.Facts.__required_keys__, module.Facts.__optional_keys__), kind
    catalog, _ = validate(repo.root)
    seat = LiveSeat("student3", "5EC7-0123", "WKSHP-Python101")
    desired = desired_state(catalog, "hub-emea", hub_secrets(), [seat])
    assert set(desired.want) == set(KINDS), "the hub host has a part of every kind"
    for kind, facts in converged(desired).items():
        published = check(SCHEMA[kind], facts, kind)
        if kind == "seat":  # session ids are published as pseudonyms
            published["occupied"]["student3"]["session"] = "5EC7-0123"
        assert published == facts, kind


def test_the_hub_config_and_fingerprint_are_not_compared_but_a_version_change_shows(repo):
    catalog, _ = validate(repo.root)
    real = desired_state(catalog, "hub-emea", hub_secrets())
    facts = converged(real)
    assert plan_host(real, facts).changes == []
    doc = FactsDocument("hub-emea", sanitise(facts, "hub-emea"))
    quiet = preview_host(catalog, doc)
    assert quiet.plan.changes == [] and quiet.blind == ["/etc/jupyterhub/jupyterhub_config.py"]
    assert any("jupyterhub_config.py embeds secrets" in n for n in quiet.plan.notes)

    repo.replace("hosts/hub-emea.yaml", 'version: "6.1.1"', 'version: "6.2.0"')
    catalog, _ = validate(repo.root)
    live = plan_host(desired_state(catalog, "hub-emea", hub_secrets()), facts)
    seen = preview_host(catalog, doc).plan
    assert [c.to_json() for c in seen.changes] == [c.to_json() for c in live.changes]
    assert {str(c.address) for c in seen.changes} == {"package:pip/jupyterhub",
                                                      "service:jupyterhub"}


def test_a_change_to_the_hub_unit_shows_with_its_restart_as_live(repo):
    catalog, _ = validate(repo.root)
    facts = converged(desired_state(catalog, "hub-emea", hub_secrets()))
    doc = FactsDocument("hub-emea", sanitise(facts, "hub-emea"))
    unit = repo.read("templates/hub/jupyterhub.service.j2")
    repo.write("templates/hub/jupyterhub.service.j2", unit + "# reviewed\n")
    catalog, _ = validate(repo.root)
    live = plan_host(desired_state(catalog, "hub-emea", hub_secrets()), facts)
    seen = preview_host(catalog, doc).plan
    assert [c.to_json() for c in seen.changes] == [c.to_json() for c in live.changes]
    assert {str(c.address) for c in seen.changes} == {
        "file:/etc/systemd/system/jupyterhub.service", "service:jupyterhub"}


def test_live_seats_published_with_the_facts_plan_as_the_store_does(repo):
    catalog, _ = validate(repo.root)
    seat = LiveSeat("student3", "5EC7-0123", "WKSHP-Python101")
    real = desired_state(catalog, "hub-emea", hub_secrets(), [seat])
    facts = converged(real)
    live = plan_host(real, facts)
    record = {"facts": facts, "live_seats": [{"username": seat.username,
                                              "session": seat.session,
                                              "workshop": seat.workshop}]}
    doc = FactsDocument.from_json(record, "hub-emea")
    assert doc.live_seats[0]["session"] == pseudonym("5EC7-0123") != "5EC7-0123"
    seen = preview_host(catalog, doc).plan
    assert [c.to_json() for c in seen.changes] == [c.to_json() for c in live.changes]
    assert not any("unknown to the store" in n for n in seen.notes)


# -- the markdown summary ------------------------------------------------------------------------

@NEEDS
def test_the_markdown_preview_heads_with_where_the_facts_come_from(lab, tmp_path):
    state, folder = tmp_path / "ctl", tmp_path / "facts"
    observe_into_store(lab, state)
    export(state, folder)
    done = run(lab, "plan", "--facts", str(folder), "--format", "markdown")
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"> lab1: preview against facts observed at 2026-01-02T03:04:05Z, "
                        f"revision {REVISION}  ")
    assert "| `lab1` | 22 | 0 | 0 | changes |" in lines
    assert "```diff" in lines and "+ account:wodt1  (uid 50001, home " \
        f"{tmp_path}/homes/wodt1)" in lines


# -- the daemon's endpoints ----------------------------------------------------------------------

def fill_with_converged_facts(repo, state: Path) -> None:
    catalog, _ = validate(repo.root)
    with open_store(state_dir=state) as store:
        for name in catalog.hosts:
            facts = converged(desired_state(catalog, name, hub_secrets()))
            store.status.put_facts(name, {"facts": facts, "digests": {"file": "ab" * 32}},
                                   revision=REVISION, observed_at=OBSERVED)


def test_plan_facts_from_the_daemon_url_needs_the_facts_token(repo, tmp_path):
    state = tmp_path / "ctl"
    fill_with_converged_facts(repo, state)
    repo.replace("hosts/hub-emea.yaml", "tcp_keepalive_time: 1800", "tcp_keepalive_time: 1900")
    app, store = daemon_app(state)
    with serving(app) as base:
        url = base + "/api/v1/facts"
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"},
                            timeout=10).status_code == 200, "an operator may read them too"
        assert requests.get(base + "/api/v1/status", timeout=10, headers={
            "Authorization": f"Bearer {FACTS_TOKEN}"}).status_code == 403, "facts only"
        got = requests.get(url, headers={"Authorization": f"Bearer {FACTS_TOKEN}"}, timeout=10)
        assert got.status_code == 200
        assert HUB_TOKEN not in got.text
        assert [d["host"] for d in got.json()["hosts"]] == ["hub-amer", "hub-emea"]

        env = {"WODSYNC_FACTS_TOKEN": FACTS_TOKEN}
        done = cli("plan", "--root", str(repo.root), "--facts", base, "--host", "hub-emea",
                   env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout.startswith(f"hub-emea: preview against facts observed at "
                                      f"2026-01-02T03:04:05Z, revision {REVISION}\n")
        assert "~ sysctl:net.ipv4.tcp_keepalive_time  (1800 → 1900)" in done.stdout

        refused = cli("plan", "--root", str(repo.root), "--facts", url,
                      env={"WODSYNC_FACTS_TOKEN": "wrong"})
        assert refused.returncode == 1
        assert f"{url} answered HTTP 401 (check WODSYNC_FACTS_TOKEN)" in refused.stderr
        assert "wrong" not in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr

        exported = cli("facts", "export", str(tmp_path / "out"), "--daemon", base, env=env)
        assert exported.returncode == 0, exported.stderr
        assert json.loads((tmp_path / "out/hub-amer.json").read_text())["revision"] == REVISION
    store.close()


def test_facts_without_a_configured_token_are_unavailable_not_open(tmp_path):
    store = open_store(state_dir=tmp_path)
    app = create_app(Context(store, facts_token=lambda: None), [facts_route.router])
    with serving(app) as base:
        got = requests.get(base + "/api/v1/facts", headers={"Authorization": "Bearer "},
                           timeout=10)
        assert got.status_code == 503 and "WODSYNC_FACTS_TOKEN" in got.json()["detail"]
    store.close()


# -- status and history --------------------------------------------------------------------------

def fill_status(state: Path, stalled: bool = True) -> None:
    with open_store(state_dir=state) as store:
        status = store.status
        status.update_repository("https://bot:ghp_s3cretT0ken@example.org/ops/wod.git", "main",
                                 head_revision="b" * 40, last_good_revision="a" * 40,
                                 errors=[{"path": "catalog/workshops/W/workshop.yaml",
                                          "line": 3, "col": 5, "code": "schema",
                                          "message": "capacity must be a number"}])
        status.update_host("lab1", condition="Ready", reason="Applied", message="converged",
                           last_attempted_revision="a" * 40, last_applied_revision="a" * 40,
                           last_success_at=OBSERVED)
        status.update_host("lab2", condition="Stalled" if stalled else "Ready",
                           reason="HostUnreachable",
                           message="ssh to lab2 failed", last_attempted_revision="a" * 40,
                           last_error="cannot reach https://root:hunter2@lab2.example:22",
                           next_attempt_at=OBSERVED + timedelta(minutes=5))
        for minute, (host, result) in enumerate([("lab1", Result.APPLIED),
                                                 ("lab2", Result.FAILED),
                                                 ("lab1", Result.NOOP)]):
            status.record_reconciliation(Reconciliation(
                host, "a" * 40, Trigger.RESYNC if minute else Trigger.COMMIT,
                OBSERVED + timedelta(minutes=minute), 1.25, result, created=minute, changed=1,
                deleted=0, message=f"round {minute}"))


def test_status_prints_hosts_and_the_repository_and_fails_unless_all_are_ready(tmp_path):
    state = tmp_path / "ctl"
    fill_status(state)
    done = cli("status", "--state", str(state))
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert re.search(r"lab1\s*│\s*Ready\s*│\s*Applied\s*│\s*aaaaaaaaaaaa", out), out
    assert re.search(r"lab2\s*│\s*Stalled\s*│\s*HostUnreachable", out), out
    assert "hunter2" not in out and "ghp_s3cretT0ken" not in out
    assert "https://***@lab2.example:22" in out
    assert ("repository https://***@example.org/ops/wod.git (main): head bbbbbbbbbbbb, last "
            "good aaaaaaaaaaaa — the head is invalid (1 errors), not deployed:") in out
    assert "  catalog/workshops/W/workshop.yaml:3:5: schema: capacity must be a number" in out

    data = json.loads(cli("status", "--state", str(state), "--json").stdout)
    assert data["ready"] is False
    lab2 = data["hosts"][1]
    assert (lab2["condition"], lab2["nextAttempt"], lab2["lastAppliedRevision"]) == \
        ("Stalled", "2026-01-02T03:09:05Z", None)

    # every host Ready on the last good revision, but the source Stalled (here: its head does
    # not validate; then its remote moved away): still a failure for a monitoring check
    fill_status(state, stalled=False)
    assert cli("status", "--state", str(state)).returncode == 1
    url = "https://bot:ghp_s3cretT0ken@example.org/ops/wod.git"
    with open_store(state_dir=state) as store:
        store.status.update_repository(url, "main", head_revision="a" * 40, errors=[])
        store.status.record_source(url, "main", Condition.READY, Reason.REVISION_DEPLOYED,
                                   "revision aaaaaaaaaaaa is deployed")
    assert cli("status", "--state", str(state)).returncode == 0
    with open_store(state_dir=state) as store:
        store.status.record_source(url, "main", Condition.STALLED, Reason.FETCH_FAILED,
                                   "cannot fetch branch main")
    stalled = cli("status", "--state", str(state))
    assert stalled.returncode == 1 and "source: Stalled (FetchFailed)" in stalled.stdout


def test_history_lists_the_last_reconciliations_newest_first(tmp_path):
    state = tmp_path / "ctl"
    fill_status(state)
    rows = json.loads(cli("history", "--state", str(state), "--json").stdout)
    assert [(r["host"], r["result"], r["trigger"]) for r in rows] == [
        ("lab1", "no-op", "resync"), ("lab2", "failed", "resync"), ("lab1", "applied", "commit")]
    only = json.loads(cli("history", "--state", str(state), "--host", "lab1", "--limit", "1",
                          "--json").stdout)
    assert [r["message"] for r in only] == ["round 2"]
    table = cli("history", "--state", str(state)).stdout
    assert re.search(r"2026-01-02 03:06:05Z\s*│\s*lab1\s*│\s*aaaaaaaaaaaa\s*│\s*resync\s*│"
                     r"\s*1\.2s\s*│\s*2\s*│\s*1\s*│\s*0\s*│\s*no-op", table), table


def test_status_through_the_daemon_equals_status_from_the_store(tmp_path):
    state = tmp_path / "ctl"
    fill_status(state)
    local = json.loads(cli("status", "--state", str(state), "--json").stdout)
    app, store = daemon_app(state)
    with serving(app) as base:
        assert requests.get(base + "/api/v1/status", timeout=10).status_code == 401
        remote = cli("status", "--daemon", base, "--json", env={"WODSYNC_API_TOKEN": API_TOKEN})
        assert remote.returncode == 1, remote.stderr
        assert json.loads(remote.stdout) == local
        history = cli("history", "--daemon", base, "--host", "lab2", "--json",
                      env={"WODSYNC_API_TOKEN": API_TOKEN})
        assert [r["host"] for r in json.loads(history.stdout)] == ["lab2"]
    store.close()


def test_reading_commands_never_create_a_store_and_say_what_is_missing(tmp_path):
    for args in (("status",), ("history",), ("facts", "export", str(tmp_path / "out"))):
        done = cli(*args, "--state", str(tmp_path / "none"))
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"no store at {tmp_path / 'none/wodsync.db'}" in done.stderr
    assert not (tmp_path / "none").exists()


def test_a_preview_without_facts_for_a_new_host_names_it_and_plans_the_others(repo, tmp_path):
    folder = tmp_path / "facts"
    folder.mkdir()
    catalog, _ = validate(repo.root)
    facts = converged(desired_state(catalog, "hub-emea", hub_secrets()))
    (folder / "hub-emea.json").write_text(json.dumps({"host": "hub-emea", "facts": facts}))
    done = cli("plan", "--root", str(repo.root), "--facts", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "! host hub-amer: no facts" in done.stderr
    assert "host hub-emea: no changes" in done.stdout
    with pytest.raises(FactsError, match="the document is of host 'hub-emea'"):
        FactsDocument.from_json({"host": "hub-emea", "facts": facts}, "hub-amer")
