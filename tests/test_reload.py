"""Secrets and tokens rotated without a restart: SIGHUP (`systemctl reload`) re-reads the
secrets file and the store's tokens.

A real `wodsync serve` (no root) is sent SIGHUP after its secrets file and its tokens changed:
the new ones work at once, the old ones are a 401, and the process is the same. A real daemon
(root: a `local` host with seats wodti1-2, uids 54601-54602) uses a rotated catalog secret in
the reconcile SIGHUP starts, without a restart. The plan of a hub whose token was rotated is
checked as a pure function: the running hub refuses the new token, and the batch that installs
it must not fail on that (it did: the first reconcile after a rotation was a 403).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from wodsync.catalog import validate
from wodsync.daemon.unit import render_unit
from wodsync.engine.desired import desired_state
from wodsync.engine.plan import plan_host
from wodsync.reload import Reloader
from wodsync.secrets import Secrets
from wodsync.tokens import TokenBook

from facts import converged
from gitorigin import Origin
from helpers import remove_test_accounts, until, wodsync, wodsync_argv
from sshd import free_port

PREFIX, UID_BASE = "wodti", 54600
HUB_HOST = "hub-emea"
# The controller's own secrets come from the environment first: these tests use the file.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("WODSYNC_") and not k.endswith("_TOKEN")}


def _secrets_file(path: Path, api: str, **granted: tuple[str, str]) -> Path:
    """A secrets file with WODSYNC_API_TOKEN = `api` and NAME = (value, host granted)."""
    lines = ["secrets:", f"  WODSYNC_API_TOKEN: {{value: \"{api}\"}}"]
    lines += [f"  {name}: {{value: \"{value}\", hosts: [{host}]}}"
              for name, (value, host) in granted.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


# -- pure --------------------------------------------------------------------------------------


def test_a_rotated_hub_token_restarts_the_hub_with_it_and_defers_its_users(repo, tmp_path):
    """The running hub knows the old token only: reading its users with the new one is a 403.
    The same plan writes the new configuration and restarts the hub, so the users are read
    after the restart — deferred, not an error that failed the reconcile."""
    catalog, _ = validate(repo.root)
    file = _secrets_file(tmp_path / "secrets.yaml", "x" * 20,
                         HUB_EMEA_TOKEN=("old-hub-token-" + "o" * 20, HUB_HOST))
    secrets = _loaded(file)
    before = desired_state(catalog, HUB_HOST, secrets)
    facts = converged(before)
    assert plan_host(before, facts).changes == []
    _secrets_file(file, "x" * 20, HUB_EMEA_TOKEN=("new-hub-token-" + "n" * 20, HUB_HOST))
    assert secrets.reload() == 2
    after = desired_state(catalog, HUB_HOST, secrets)
    assert after.want["hub_user"].token.startswith("new-hub-token-")
    refused = copy.deepcopy(facts)
    for kind in ("hub_user", "hub_group"):
        refused[kind]["api"] = {"ok": False, "down": False, "error": "GET /users: HTTP 403"}
    plan = plan_host(after, refused)
    assert plan.errors == []
    changed = {str(c.address): c.detail for c in plan.changes}
    assert changed["service:jupyterhub"].startswith("configuration or version changed")
    assert changed["hub_user:*"] == ("the running hub refused the token (a rotated one?) and "
                                     "restarts with it: users are checked after it starts")
    assert "hub_group:*" in changed
    assert any(a.startswith("file:") and a.endswith("jupyterhub_config.py") for a in changed)


def test_a_hub_refusing_its_token_with_no_restart_planned_is_still_an_error(repo, tmp_path):
    catalog, _ = validate(repo.root)
    file = _secrets_file(tmp_path / "secrets.yaml", "x" * 20,
                         HUB_EMEA_TOKEN=("hub-token-" + "h" * 20, HUB_HOST))
    wish = desired_state(catalog, HUB_HOST, _loaded(file))
    facts = converged(wish)
    facts["hub_user"]["api"] = {"ok": False, "down": False, "error": "GET /users: HTTP 403"}
    plan = plan_host(wish, facts)
    assert plan.errors and "HTTP 403" in plan.errors[0]


def _loaded(file: Path) -> Secrets:
    found = Secrets(env={}, entries={}, source=file)
    found.reload()
    return found


def test_a_broken_secrets_file_on_reload_changes_nothing(tmp_path, caplog):
    file = _secrets_file(tmp_path / "secrets.yaml", "first-api-token-" + "a" * 20)
    secrets = _loaded(file)
    reloads: list[str] = []
    reloader = Reloader(secrets, TokenBook(list), then=lambda: reloads.append("reconcile"))
    file.write_text("secrets:\n  WODSYNC_API_TOKEN: {value: 42}\n")
    assert reloader.reload() is False
    assert secrets.controller("WODSYNC_API_TOKEN") == "first-api-token-" + "a" * 20
    assert reloads == [] and "did not load, nothing changed" in caplog.text
    assert "line 2" in caplog.text, "the error is located"
    _secrets_file(file, "second-api-token-" + "b" * 20)
    assert reloader.reload() is True and reloads == ["reconcile"]
    assert secrets.controller("WODSYNC_API_TOKEN") == "second-api-token-" + "b" * 20
    assert "second-api-token" not in caplog.text and "first-api-token" not in caplog.text


def test_the_unit_reloads_with_sighup():
    argv = ["/usr/bin/wodsync", "daemon", "--repo", "https://git.example.org/catalog.git"]
    unit = render_unit(argv, "/var/lib/wodsync").splitlines()
    n = unit.index("ExecReload=/bin/kill -HUP $MAINPID")
    assert unit[n - 1].startswith("#"), "explained by a comment"


# -- a real `wodsync serve` --------------------------------------------------------------------


class Serve:
    def __init__(self, root: Path, state: Path, secrets: Path) -> None:
        self.port, self.state = free_port(), state
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / "serve.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(wodsync_argv(
                "serve", "--root", root, "--state", state, "--secrets", secrets,
                "--listen", f"127.0.0.1:{self.port}", "--expiry-interval", "3600"),
                env=CLEAN_ENV, stdout=log, stderr=log)
        until(self.up, f"serve never answered:\n{self.text()}", timeout=60)

    def up(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=2).ok
        except requests.ConnectionError:
            return self.proc.poll() is None and False

    def status(self, token: str) -> int:
        return requests.get(self.base + "/api/v1/sessions", timeout=10,
                            headers={"Authorization": f"Bearer {token}"}).status_code

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(repo, tmp_path) -> Iterator[tuple[Serve, Path]]:
    secrets = _secrets_file(tmp_path / "secrets.yaml", "old-legacy-token-" + "o" * 20)
    server = Serve(repo.root, tmp_path / "state", secrets)
    yield server, secrets
    server.proc.kill()
    server.proc.wait(timeout=30)


def _token(state: Path, name: str, role: str) -> str:
    made = wodsync("token", "new", name, "--role", role, "--state", state, env=CLEAN_ENV)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_serve_takes_new_tokens_and_drops_old_ones_on_sighup_without_a_restart(serve):
    server, secrets = serve
    pid = server.proc.pid
    old_portal = _token(server.state, "portal-old", "portal")
    until(lambda: server.status(old_portal) == 200, "a new token is taken within its ttl",
          timeout=15)
    old_legacy, new_legacy = "old-legacy-token-" + "o" * 20, "new-legacy-token-" + "n" * 20
    assert server.status(old_legacy) == 200
    new_portal = _token(server.state, "portal-new", "portal")
    _secrets_file(secrets, new_legacy)
    server.proc.send_signal(signal.SIGHUP)
    until(lambda: server.status(new_legacy) == 200, f"SIGHUP never took:\n{server.text()}",
          timeout=15)
    assert [server.status(t) for t in (old_legacy, old_portal, new_portal)] == [401, 200, 200], \
        "the portal's old and new tokens are both valid until the old one is revoked"
    revoked = wodsync("token", "revoke", "portal-old", "--state", server.state, env=CLEAN_ENV)
    assert revoked.returncode == 0, revoked.stderr
    server.proc.send_signal(signal.SIGHUP)
    until(lambda: server.status(old_portal) == 401, "the revoked token still worked", timeout=15)
    assert server.status(new_portal) == 200
    assert server.proc.poll() is None and server.proc.pid == pid, "the same process"
    log = server.text()
    assert log.count("reload: 1 secrets from") == 2, log
    assert not any(t in log for t in (old_legacy, new_legacy, old_portal, new_portal))


# -- a real daemon -----------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the daemon applies a local host")
def test_the_daemon_uses_a_rotated_catalog_secret_in_the_reconcile_sighup_starts(tmp_path):
    remove_test_accounts(PREFIX, UID_BASE)
    tmp_path.chmod(0o755)
    (tmp_path / "homes").mkdir()
    origin = Origin(tmp_path)
    origin.write("catalog/locations.yaml", "locations:\n  - name: lab\n")
    origin.write("catalog/students.yaml", f"pools:\n  ti:\n    prefix: {PREFIX}\n    first: 1\n"
                 f"    last: 2\n    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n"
                 f"    home_root: {tmp_path}/homes\n")
    origin.write("catalog/system.yaml", f"files:\n  - template: key.j2\n"
                 f"    path: {tmp_path}/key\n    mode: \"0600\"\n")
    origin.write("templates/key.j2", "{{ KEY }}\n")
    origin.write("catalog/workshops/README.md", "none yet\n")
    origin.write("hosts/local.yaml", "address: localhost\ntransport: local\nlocation: lab\n"
                 f"pool: ti\nstate_dir: {tmp_path}/hoststate\n"
                 "variables:\n  KEY: {secret: LOCAL_KEY}\n")
    origin.commit("a lab whose host file holds a secret")
    api = "daemon-api-token-" + "d" * 20
    secrets = _secrets_file(tmp_path / "secrets.yaml", api, LOCAL_KEY=("first-key", "local"))
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(wodsync_argv(
            "daemon", "--repo", origin.origin, "--state", tmp_path / "state", "--secrets",
            secrets, "--listen", f"127.0.0.1:{port}", "--interval", "3600", "--resync", "3600"),
            env=CLEAN_ENV, stdout=out, stderr=out)
    key = tmp_path / "key"
    try:
        until(lambda: key.exists() and key.read_text() == "first-key\n",
              f"the first revision was never applied:\n{log.read_text()}", timeout=120)
        _secrets_file(secrets, api, LOCAL_KEY=("second-key", "local"))
        proc.send_signal(signal.SIGHUP)
        until(lambda: key.read_text() == "second-key\n",
              f"the rotated secret never reached the host:\n{log.read_text()}", timeout=60)

        def last() -> dict[str, str]:
            return dict(requests.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=10,
                                     headers={"Authorization": f"Bearer {api}"},
                                     ).json()["reconciliations"][0])

        until(lambda: last()["trigger"] == "reload", "no reconciliation of trigger reload")
        assert last()["result"] == "applied"
        assert proc.poll() is None, "no restart"
        assert "second-key" not in log.read_text() and "first-key" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        remove_test_accounts(PREFIX, UID_BASE)
