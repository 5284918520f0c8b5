"""A seat changes hands as a new identity on the hub — tested as the attack, with a real hub.

A participant logs in (PAM, the session's password), opens the lab and keeps what a browser
holds: the hub login cookie, the `jupyterhub-user-<seat>` cookie of their server, and the OAuth
token inside that cookie (a tornado signed cookie is signed, not encrypted: the student can read
it in the browser and use it as an API token). Students cannot make tokens
(`POST /hub/api/users/<seat>/tokens` is refused: the hub config redefines the `user` role), so
that token is the one a student walks away with. Then CLEANUP, then the next participant's
CREATE on the same seat (a one-seat workshop): none of it opens the seat any more — neither
after CLEANUP alone nor once the next occupant's server runs — and the next occupant logs in.

Accounts `wodtk1`-`wodtk20` (uids 59501-59520), pool group `wodtkgrp` (gid 59500).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers import remove_test_accounts, wodsync
from hubs import (
    HUB_PREFIX,
    PROXY,
    HubApi,
    hub_ports,
    hub_prefix_lock,
    login,
    needs_hub,
    read_contents,
    start_server,
    stop_hub,
    write_lab,
)

pytestmark = needs_hub

PREFIX, UID_BASE, GROUP = "wodtk", 59500, "wodtkgrp"
SEATS = range(UID_BASE + 1, UID_BASE + 21)
TOKEN = "wodsync-handover-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-handover-hub")
ONE_SEAT = 3  # WKSHP-One has this seat only: every CREATE of it lands there
# Each seat's notebook carries its occupant's password: what the previous one must never read.
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {},
                       "source": ["{{ STUDENT }} at seat {{ STDID }}, password {{ PASSSTU }}"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
    shutil.rmtree(HOMES, ignore_errors=True)


def _taken_elsewhere() -> str | None:
    """Our uids or names held by accounts a test of ours did not make."""
    for entry in pwd.getpwall():
        ours = entry.pw_name.startswith(PREFIX)
        if (entry.pw_uid in SEATS or entry.pw_uid == UID_BASE) and not ours:
            return f"uid {entry.pw_uid} is taken by {entry.pw_name}"
    return None


def _wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return wodsync(*args, "--root", root, env=dict(os.environ, WODT_HUB_TOKEN=TOKEN))


@pytest.fixture(scope="module")
def handover_hub(tmp_path_factory):
    """One local host with a managed hub, a 20-seat pool, WKSHP-Lab (seats 1-2) and WKSHP-One
    (seat 3 alone)."""
    taken = _taken_elsewhere()
    if taken:
        pytest.skip(f"the accounts of this test are taken: {taken}")
    _cleanup_accounts()
    HOMES.mkdir(mode=0o755, exist_ok=True)
    tmp = tmp_path_factory.mktemp("handover")
    root = tmp / "repo"
    ports = hub_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 1\n    last: 20\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n    group: {GROUP}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n")
    for key, first, last in (("WKSHP-Lab", 1, 2), ("WKSHP-One", ONE_SEAT, ONE_SEAT)):
        folder = root / "catalog/workshops" / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "workshop.yaml").write_text(
            f"name: {key}\ncapacity: {last - first + 1}\nseats: {{first: {first}, last: {last}}}"
            "\nlocation: lab\nduration: 1\nvarpass: true\n")
        (folder / "1-Intro.ipynb").write_text(json.dumps(NOTEBOOK))
    with hub_prefix_lock():
        applied = _wodsync(root, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    from wodsync.controller import open_controller
    from wodsync.secrets import Secrets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WODT_HUB_TOKEN", TOKEN)
        ctl = open_controller(root, tmp / "ctl", None, Secrets())
        try:
            yield {"root": root, "tmp": tmp, "ctl": ctl, "api": HubApi(ports["hub_port"], TOKEN),
                   "base": f"http://127.0.0.1:{ports['port']}"}
        finally:
            ctl.close()
            stop_hub(tmp / "hubdata", range(UID_BASE, UID_BASE + 21))
            _cleanup_accounts()


# ---- what a participant walks away with ----------------------------------------------------

class Kept:
    """A participant's browser (hub login cookie, `jupyterhub-session-id`, the server's
    `jupyterhub-user-<seat>` cookie, `_xsrf`), the OAuth token inside that server cookie, and
    an API token of the seat's hub user made in the hub's database the way `jupyterhub token`
    does (scopes `inherit`, no expiry: what `POST /hub/api/users/<seat>/tokens` made under
    JupyterHub's default `user` role, which students no longer have)."""

    def __init__(self, browser: requests.Session, seat: str, data_dir: Path) -> None:
        self.browser, self.seat = browser, seat
        self.cookies = {c.name: c.value for c in browser.cookies}
        self.oauth_token = _signed_cookie_value(self.cookies[f"jupyterhub-user-{seat}"])
        self.api_token = _mint_token(data_dir, seat)

    def tokens(self) -> dict[str, str]:
        return {"oauth token of the server cookie": self.oauth_token,
                "API token": self.api_token}


def _signed_cookie_value(cookie: str) -> str:
    """The value of a tornado signed cookie (`2|1:0|10:<time>|<n>:<name>|<n>:<base64>|<sig>`):
    signed, not encrypted — whoever holds the cookie reads it."""
    return base64.b64decode(cookie.split("|")[4].split(":", 1)[1]).decode()


def _mint_token(data_dir: Path, user: str) -> str:
    code = ("import sys\nfrom jupyterhub import orm\n"
            "db = orm.new_session_factory(sys.argv[1])()\n"
            "print(orm.User.find(db, sys.argv[2]).new_api_token(note='kept'))\n")
    done = subprocess.run([f"{HUB_PREFIX}/bin/python", "-c", code,
                           f"sqlite:///{data_dir}/jupyterhub.sqlite", user],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def _hub_whoami(base: str, token: str) -> int:
    return requests.get(f"{base}/hub/api/user", timeout=30,
                        headers={"Authorization": f"token {token}"}).status_code


def _contents(base: str, seat: str, path: str = "", **kw: Any) -> requests.Response:
    method = kw.pop("method", "GET")
    return requests.request(method, f"{base}/user/{seat}/api/contents/{path}", timeout=30,
                            allow_redirects=False, **kw)


def _xsrf_for_server(s: requests.Session, seat: str) -> str:
    return s.cookies.get("_xsrf", path=f"/user/{seat}/") or ""


def _lab_works(s: requests.Session, base: str, seat: str, xsrf: str, workshop: str) -> str:
    """The student's own lab, as a browser uses it: the hub page's start button, the
    notebook through the contents API, a terminal; and no token for them. The notebook's
    first cell."""
    start_server(s, base, seat, xsrf)
    nb = read_contents(s, base, seat, f"{workshop}/1-Intro.ipynb")
    headers = {"X-XSRFToken": _xsrf_for_server(s, seat)}
    terminal = s.post(f"{base}/user/{seat}/api/terminals", headers=headers, timeout=30)
    assert terminal.status_code == 200 and terminal.json()["name"], terminal.text
    kernel = s.post(f"{base}/user/{seat}/api/kernels", headers=headers, json={}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    assert s.get(f"{base}/hub/home", timeout=30).status_code == 200  # the control panel
    made = s.post(f"{base}/hub/api/users/{seat}/tokens", headers={"X-XSRFToken": xsrf},
                  json={"note": "mine"}, timeout=30)
    assert made.status_code == 403, f"a student made a token: {made.status_code} {made.text}"
    shared = s.post(f"{base}/hub/api/shares/{seat}/", headers={"X-XSRFToken": xsrf},
                    json={"group": GROUP}, timeout=30)
    assert shared.status_code == 403, f"a student shared their server: {shared.text}"
    return nb["content"]["cells"][0]["source"]


def _assert_locked_out(kept: Kept, base: str, secret: str) -> None:
    """Nothing the previous occupant kept opens the seat: not their tokens (hub API, the
    server's contents, a write into the home, a terminal) nor their browser's cookies."""
    seat = kept.seat
    for what, token in kept.tokens().items():
        auth = {"Authorization": f"token {token}"}
        assert _hub_whoami(base, token) == 403, f"{what}: the hub still knows it"
        for method, path, body in (("GET", "?content=1", None),
                                   ("PUT", "planted.txt", {"type": "file", "format": "text",
                                                           "content": "x"})):
            got = _contents(base, seat, path, method=method, headers=auth, json=body)
            assert got.status_code in (302, 401, 403, 404, 503), (what, method, got.status_code)
            assert secret not in got.text
        term = requests.post(f"{base}/user/{seat}/api/terminals", headers=auth, timeout=30,
                             allow_redirects=False)
        assert term.status_code in (302, 401, 403, 404, 503), (what, term.status_code)
    assert not (HOMES / seat / "planted.txt").exists()
    b = kept.browser
    hub_home = b.get(f"{base}/hub/home", timeout=30, allow_redirects=False)
    assert hub_home.status_code == 302 and "/hub/login" in hub_home.headers["Location"]
    page = b.get(f"{base}/user/{seat}/lab", timeout=60)
    assert secret not in page.text
    assert page.url.split("?")[0].endswith("/hub/login") or page.status_code == 403, page.url
    api = b.get(f"{base}/user/{seat}/api/contents/?content=1",
                timeout=60, headers={"X-XSRFToken": _xsrf_for_server(b, seat)})
    assert secret not in api.text
    assert api.status_code in (401, 403) or api.url.split("?")[0].endswith("/hub/login"), \
        (api.status_code, api.url)
    for name, value in kept.cookies.items():  # each cookie alone, replayed by hand
        alone = requests.get(f"{base}/user/{seat}/lab", cookies={name: value}, timeout=60)
        assert secret not in alone.text and (alone.url.split("?")[0].endswith("/hub/login")
                                             or alone.status_code == 403), (name, alone.url)


def _participant(n: int) -> Any:
    from wodsync.store import Participant

    return Participant(f"P{n}", f"p{n}-{os.urandom(3).hex()}@example.org", "ACME")


def _server_ready(api: HubApi, seat: str) -> bool:
    server = (api.call("GET", f"/users/{seat}").json().get("servers") or {}).get("")
    return bool(server and server.get("ready"))


def _wait_ready(api: HubApi, seat: str) -> None:
    deadline = time.monotonic() + 120
    while not _server_ready(api, seat):
        assert time.monotonic() < deadline, f"the server of {seat} did not start"
        time.sleep(0.5)


def _identity(api: HubApi, seat: str) -> dict[str, Any]:
    return api.call("GET", f"/users/{seat}").json()


# ---- the attack ------------------------------------------------------------------------------

def test_after_cleanup_the_previous_occupants_cookies_and_tokens_are_dead(handover_hub):
    """CLEANUP alone (no next CREATE yet): the student's lab worked, they could make no token,
    and afterwards nothing they kept opens anything."""
    ctl, base, api = handover_hub["ctl"], handover_hub["base"], handover_hub["api"]
    s = ctl.sessions.create("WKSHP-Lab", _participant(1)).session
    try:
        browser, xsrf = login(base, s.username, s.password)
        assert s.password in _lab_works(browser, base, s.username, xsrf, "WKSHP-Lab")
        kept = Kept(browser, s.username, handover_hub["tmp"] / "hubdata")
        for what, token in kept.tokens().items():
            assert _hub_whoami(base, token) == 200, f"{what} works during the session"
        before = _identity(api, s.username)["created"]
    except BaseException:
        ctl.sessions.purge(s.id, "test failed")  # the other tests find the seat free
        raise
    ctl.sessions.cleanup(s.id)
    _assert_locked_out(kept, base, s.password)
    after = _identity(api, s.username)
    assert after["created"] != before and after["last_activity"] is None
    assert after["admin"] is False and after["roles"] == ["user"]
    assert after["groups"] == [GROUP], "back in the pool's group, out of the workshop's"


def test_the_next_occupant_of_the_seat_is_out_of_reach_of_the_previous_one(handover_hub):
    """The issue's attack: Ann keeps her cookies and tokens; after her CLEANUP, Bob gets the
    same seat (WKSHP-One has one). Nothing of Ann's reads Bob's notebook (it holds his
    password), writes into his home or opens a terminal in his server; Bob logs in and works."""
    ctl, base, api = handover_hub["ctl"], handover_hub["base"], handover_hub["api"]
    ann = ctl.sessions.create("WKSHP-One", _participant(2)).session
    browser, xsrf = login(base, ann.username, ann.password)
    assert ann.password in _lab_works(browser, base, ann.username, xsrf, "WKSHP-One")
    kept = Kept(browser, ann.username, handover_hub["tmp"] / "hubdata")
    ctl.sessions.cleanup(ann.id)
    _assert_locked_out(kept, base, ann.password)

    bob = ctl.sessions.create("WKSHP-One", _participant(3)).session
    try:
        assert (bob.username, bob.seat) == (ann.username, ONE_SEAT)
        _wait_ready(api, bob.username)  # the CREATE asked for Bob's server
        _assert_locked_out(kept, base, bob.password)
        ann_again = ann.password
        with pytest.raises(AssertionError, match="login of"):
            login(base, ann.username, ann_again)
        b2, xsrf2 = login(base, bob.username, bob.password)
        assert f"password {bob.password}" in _lab_works(b2, base, bob.username, xsrf2,
                                                        "WKSHP-One")
        _assert_locked_out(kept, base, bob.password)  # Bob's own login opened nothing to Ann
    finally:
        ctl.sessions.purge(bob.id, "test teardown")


def test_a_rotation_keeps_the_seat_in_the_pools_group_and_the_plan_converged(handover_hub):
    """After a CLEANUP (a rotation) the seat is back in the pool's hub group only, and the plan
    of the host wants no hub user or hub group change."""
    ctl, api = handover_hub["ctl"], handover_hub["api"]
    s = ctl.sessions.create("WKSHP-Lab", _participant(4)).session
    assert sorted(_identity(api, s.username)["groups"]) == sorted([GROUP, "WKSHP-Lab"])
    ctl.sessions.cleanup(s.id)
    assert _identity(api, s.username)["groups"] == [GROUP]
    assert s.username in api.groups()[GROUP]
    done = _wodsync(handover_hub["root"], "plan", "--json")
    assert done.returncode in (0, 2), done.stdout + done.stderr
    changes = [(c["action"], c["address"]) for c in json.loads(done.stdout)[0]["plan"]["changes"]]
    hub = [c for c in changes if c[1].startswith(("hub_user:", "hub_group:"))]
    assert hub == [], hub


def test_a_create_hands_out_the_identity_its_release_made_unless_it_was_used(handover_hub):
    """The release made a new identity; the next CREATE hands that one out without deleting it
    again (it checks the model its stop read: made by the release, never active) — unless it
    was used meanwhile: a token made for it (as an admin could) and used is rotated away."""
    ctl, api = handover_hub["ctl"], handover_hub["api"]
    first = ctl.sessions.create("WKSHP-One", _participant(5)).session
    ctl.sessions.cleanup(first.id)
    made = _identity(api, first.username)["created"]
    second = ctl.sessions.create("WKSHP-One", _participant(6))
    assert _identity(api, first.username)["created"] == made
    ctl.sessions.cleanup(second.session.id)

    made = _identity(api, first.username)["created"]
    token = _mint_token(handover_hub["tmp"] / "hubdata", first.username)
    # its use records the identity's activity
    assert _hub_whoami(handover_hub["base"], token) == 200
    third = ctl.sessions.create("WKSHP-One", _participant(7)).session
    try:
        assert _identity(api, first.username)["created"] != made
        assert _hub_whoami(handover_hub["base"], token) == 403
    finally:
        ctl.sessions.purge(third.id, "test teardown")


def test_a_seat_rotates_while_its_server_starts_or_runs(handover_hub):
    """The hub refuses to delete a user whose server is starting (500) and answers 400 while a
    stop is pending: the rotation stops what runs and waits, and the seat ends a new identity
    with no server."""
    from wodsync.agent import hubseat

    api = handover_hub["api"]
    seat = f"{PREFIX}10"
    payload = {"user": seat, "hub": {"api": api.base, "token": TOKEN, "pool_group": GROUP},
               "state_dir": str(handover_hub["tmp"] / "state")}
    for phase in ("starting", "running"):
        before = _identity(api, seat)["created"]
        assert api.call("POST", f"/users/{seat}/server").status_code in (201, 202)
        if phase == "running":
            _wait_ready(api, seat)
        hubseat.rotate(payload)
        after = _identity(api, seat)
        assert after["created"] != before and not after["servers"], (phase, after)
        assert after["groups"] == [GROUP]
