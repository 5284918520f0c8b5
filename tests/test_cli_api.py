"""`wodsync session … --api URL` against a real `wodsync serve` process with real seats on this
machine (accounts wodti1-3, uids 54601-54603, group gid 54600): no catalog checkout, the token
from the environment or a file, and the same text and JSON as the same command run on the
store. A portal token asking PURGE through the CLI gets the API's 403, word for word."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import remove_test_accounts, until, wodsync, wodsync_argv
from sshd import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates seats")

PREFIX, UID_BASE = "wodti", 54600
HOMES = Path("/home/wodsync-test-cli-api")
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("WODSYNC_") and not k.endswith("_TOKEN")}
NOTEBOOK = json.dumps({"cells": [{"cell_type": "markdown", "metadata": {},
                                  "source": ["Seat {{ STDID }}"]}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _catalog(root: Path, tmp: Path) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  ti:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: 3\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/workshops/WKSHP-Cli/workshop.yaml":
            "name: Cli\ncapacity: 2\nseats: {first: 1, last: 2}\nlocation: lab\nduration: 2\n"
            "hooks: {create: scripts/create.sh}\n",
        "catalog/workshops/WKSHP-Cli/1-Intro.ipynb": NOTEBOOK,
        "catalog/workshops/WKSHP-Cli/scripts/create.sh": "#!/bin/bash\necho made $STUDENT\n",
        "catalog/workshops/WKSHP-Held/workshop.yaml":
            "name: Held\ncapacity: 1\nseats: {first: 3, last: 3}\nlocation: lab\nduration: 1\n"
            "reset: true\nhooks: {reset: scripts/reset.sh}\n",
        "catalog/workshops/WKSHP-Held/1-Intro.ipynb": NOTEBOOK,
        "catalog/workshops/WKSHP-Held/scripts/reset.sh": "#!/bin/bash\necho reset $STUDENT\n",
        "hosts/lab1.yaml": "address: localhost\ntransport: local\nlocation: lab\npool: ti\n"
                           f"state_dir: {tmp}/state-lab1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _cleanup()
    HOMES.mkdir(mode=0o755)
    tmp = tmp_path_factory.mktemp("cliapi")
    root, state = tmp / "repo", tmp / "state"
    _catalog(root, tmp)
    applied = wodsync("apply", "--yes", "--root", root, env=CLEAN_ENV, timeout=600)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    tokens = {}
    for name, role in (("ops", "operator"), ("portal", "portal")):
        made = wodsync("token", "new", name, "--role", role, "--state", state, env=CLEAN_ENV)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip()
    port = free_port()
    log = tmp / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(wodsync_argv("serve", "--root", root, "--state", state,
                                             "--listen", f"127.0.0.1:{port}"),
                                env=CLEAN_ENV, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(base + "/healthz", timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        until(up, f"serve never answered:\n{log.read_text()}", timeout=60)
        token_file = tmp / "ops.token"
        token_file.write_text(tokens["ops"] + "\n")
        token_file.chmod(0o600)
        yield {"root": root, "state": state, "api": base, "tokens": tokens,
               "token_file": token_file, "elsewhere": tmp / "elsewhere"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _cleanup()


def remote(lab: dict[str, Any], *args: object, token: str = "ops") -> subprocess.CompletedProcess:
    """`wodsync session ARGS --api URL` from a folder with no catalog, the token from the
    environment (`token` names one of the lab's) or, for `ops`, from the token file."""
    lab["elsewhere"].mkdir(exist_ok=True)
    extra: tuple[object, ...] = ("--api", lab["api"])
    env = dict(CLEAN_ENV)
    if token == "ops":
        extra += ("--token-file", lab["token_file"])
    else:
        env["WODSYNC_API_TOKEN"] = lab["tokens"][token]
    return wodsync("session", *args, *extra, "--root", lab["elsewhere"], env=env)


def local(lab: dict[str, Any], *args: object) -> subprocess.CompletedProcess:
    return wodsync("session", *args, "--root", lab["root"], "--state-dir", lab["state"],
                   env=CLEAN_ENV)


def test_the_session_commands_over_the_api_print_what_they_print_on_the_store(lab):
    made = remote(lab, "create", "WKSHP-Cli", "--email", "Ann@Example.org", "--name", "Ann",
                  "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["state"] == "active" and created["credentials"]["username"] == f"{PREFIX}1"
    sid = created["id"]
    for args in (("show", sid), ("show", sid, "--json"), ("list",), ("list", "--json"),
                 ("list", "--workshop", "WKSHP-Cli", "--email", "ann@example.org")):
        over_api, on_store = remote(lab, *args), local(lab, *args)
        assert over_api.returncode == on_store.returncode == 0, over_api.stderr
        assert over_api.stdout == on_store.stdout, args
    shown = remote(lab, "show", sid).stdout
    assert f"password:    {created['credentials']['password']}" in shown
    assert f"      | made {PREFIX}1" in shown, "the hook's output, as the local command shows it"
    listed = json.loads(remote(lab, "list", "--json", "--state", "active").stdout)
    assert [s["id"] for s in listed] == [sid] and listed[0]["credentials"] is None
    assert json.loads(remote(lab, "list", "--json", "--host", "nowhere").stdout) == []
    longer = json.loads(remote(lab, "extend", sid, "--hours", "1", "--json").stdout)
    assert longer["ends_at"] > created["ends_at"]
    refused = remote(lab, "purge", sid, token="portal")
    assert refused.returncode == 1
    assert ("token 'portal' has the role portal, which may not PURGE a session: that needs a "
            "token of the role operator") in refused.stderr
    assert lab["tokens"]["portal"] not in refused.stderr
    cleaned = remote(lab, "cleanup", sid, token="portal")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "state:       ended" in cleaned.stdout


def test_reset_and_purge_over_the_api_and_refusals_in_the_apis_words(lab):
    held = json.loads(remote(lab, "create", "WKSHP-Held", "--email", "bo@example.org",
                             "--json", token="portal").stdout)
    assert remote(lab, "cleanup", held["id"]).stdout.count("state:       held") == 1
    reset = remote(lab, "reset", held["id"], "--json")
    assert reset.returncode == 0 and json.loads(reset.stdout)["state"] == "ended"
    live = json.loads(remote(lab, "create", "WKSHP-Cli", "--email", "cy@example.org",
                             "--json").stdout)
    purged = remote(lab, "purge", live["id"])
    assert purged.returncode == 0 and "state:       ended" in purged.stdout
    unknown = remote(lab, "show", "abcdef123456")
    assert unknown.returncode == 1 and "no session 'abcdef123456'" in unknown.stderr
    again = remote(lab, "reset", live["id"])
    local_again = local(lab, "reset", live["id"])
    assert again.returncode == local_again.returncode == 1
    assert again.stderr == local_again.stderr, "the same refusal over the API and on the store"
    no_token = wodsync("session", "list", "--api", lab["api"], env=CLEAN_ENV)
    assert no_token.returncode == 64 and "set WODSYNC_API_TOKEN or give --token-file" in \
        no_token.stderr
    gone = wodsync("session", "list", "--api", f"http://127.0.0.1:{free_port()}",
                   "--token-file", lab["token_file"], env=CLEAN_ENV)
    assert gone.returncode == 1 and "cannot reach http://127.0.0.1:" in gone.stderr
