"""A hot seat on a host with a real JupyterHub (issue 22): its JupyterLab server runs before the
event's first CREATE, and nobody reaches it until a CREATE gives the seat its password.

The lab (`stormlab`): one local host with a hub managed by wodsync, pool `wodqf` seats 1-10
(uids 43001-43010), WKSHP-Lab, and the event `storm` (2 expected, all kept hot) starting in 30
minutes, so it is warm now. Attempts to get in: the hub's login form with no password, with the
password the seat was rendered with (the store keeps it sealed for the take), with guesses; the
server's own URLs through the proxy without a cookie.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from wodsync.store import Participant, SessionState

from helpers import until, wodsync
from hubs import HubApi, hub_ports, hub_prefix_lock, needs_hub, stop_hub
from stormlab import (
    PREFIX,
    TOKEN_ENV,
    UID_BASE,
    WORKSHOP,
    event_yaml,
    lab_answers,
    login_form,
    remove_accounts,
    server_of,
    taken_by_others,
    write_catalog,
)

pytestmark = needs_hub

SEATS = range(1, 11)
TOKEN = "wodsync-storm-" + os.urandom(8).hex()
START = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)


@pytest.fixture(scope="module")
def hub_lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    taken = taken_by_others(SEATS)
    if taken:
        pytest.skip(f"the lab's uids 43001-43010 are used by others: {taken[:3]}")
    remove_accounts(SEATS)
    tmp = tmp_path_factory.mktemp("hotseats-hub")
    root, ports = tmp / "repo", hub_ports()
    write_catalog(root, tmp, ports, SEATS, event_yaml(START, expected=2))
    from wodsync.controller import open_controller
    from wodsync.secrets import Secrets

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TOKEN_ENV, TOKEN)
        try:
            with hub_prefix_lock():
                applied = wodsync("apply", "--yes", "--root", root)
            assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
            ctl = open_controller(root, tmp / "ctl", None, Secrets())
            try:
                yield {"ctl": ctl, "api": HubApi(ports["hub_port"], TOKEN),
                       "base": f"http://127.0.0.1:{ports['port']}", "root": root, "tmp": tmp}
            finally:
                for s in ctl.store.sessions.find(live=True):
                    ctl.sessions.purge(s.id, "test teardown")
                ctl.close()
        finally:
            stop_hub(tmp / "hubdata", range(UID_BASE + SEATS.start, UID_BASE + SEATS.stop))
            remove_accounts(SEATS)


@pytest.fixture(scope="module")
def hot(hub_lab) -> list[Any]:
    """The event's two hot seats, prepared by one round, their servers ready at the hub."""
    ctl, api = hub_lab["ctl"], hub_lab["api"]
    kept = ctl.sessions.hot.keep()
    assert kept.prepared == {"storm": 2}, kept
    seats = [s for s in ctl.store.hot.waiting("storm") if s.state is SessionState.HOT]
    assert len(seats) == 2
    users = [s.username for s in seats]
    until(lambda: all((server_of(api, u) or {}).get("ready") for u in users),
          f"the hot seats' servers {users} did not become ready", timeout=120)
    return seats


def test_a_hot_seats_lab_server_is_running_at_the_hub_before_any_create(hub_lab, hot):
    for s in hot:
        assert s.username.startswith(PREFIX)
        server = server_of(hub_lab["api"], s.username)
        assert server is not None and server["ready"] and not server["pending"], server
    assert hub_lab["ctl"].store.sessions.find(state=SessionState.ACTIVE) == []


@pytest.mark.parametrize("guess", ["", "rendered", "password", "seat-name"])
def test_no_password_logs_in_to_a_hot_seat_before_a_create(hub_lab, hot, guess):
    s = hot[0]
    password = {"rendered": s.password, "seat-name": s.username}.get(guess, guess)
    browser = requests.Session()
    answer = login_form(browser, hub_lab["base"], s.username, password)
    assert answer.status_code != 302, answer.headers.get("Location")
    assert "jupyterhub-hub-login" not in browser.cookies
    # ... and with that refused login the lab stays closed too.
    assert not lab_answers(browser, hub_lab["base"], s.username)


def test_a_hot_seats_server_without_a_cookie_sends_to_the_login_and_never_answers(hub_lab,
                                                                                 hot):
    base, user = hub_lab["base"], hot[0].username
    page = requests.get(f"{base}/user/{user}/lab", allow_redirects=False, timeout=30)
    assert page.status_code == 302, page.status_code
    followed = requests.get(f"{base}/user/{user}/lab", timeout=30)
    assert followed.url.split("?")[0] == f"{base}/hub/login", followed.url
    for path in ("api/contents", "api/status", "api/kernels", "api/terminals"):
        got = requests.get(f"{base}/user/{user}/{path}", allow_redirects=False, timeout=30)
        assert got.status_code == 403, (path, got.status_code)
    assert requests.get(f"{base}/hub/api/users/{user}", timeout=30).status_code == 403


def test_a_create_takes_a_hot_seat_and_its_lab_answers_at_once_with_the_same_server(
        hub_lab, hot):
    ctl, api = hub_lab["ctl"], hub_lab["api"]
    before = {s.username: server_of(api, s.username) for s in hot}
    created = ctl.sessions.create(WORKSHOP, Participant("Ann", "ann@example.org", "ACME"))
    s = created.session
    assert s.state is SessionState.ACTIVE and s.username in before
    browser = requests.Session()
    answer = login_form(browser, hub_lab["base"], s.username, s.password)
    assert answer.status_code == 302, answer.status_code
    # The first look answers: no spawn to wait for, the server is the one started before.
    assert lab_answers(browser, hub_lab["base"], s.username)
    after = server_of(api, s.username)
    assert after is not None and before[s.username] is not None
    assert after["started"] == before[s.username]["started"]
    assert api.groups().get(WORKSHOP) == [s.username]
    # The other hot seat is still closed, even to this participant's password.
    other = next(h for h in hot if h.username != s.username)
    assert login_form(requests.Session(), hub_lab["base"], other.username,
                      s.password).status_code != 302


def test_the_seat_guards_idle_rule_leaves_a_hot_seats_server_running(hub_lab, hot):
    """A hot seat's server is idle by design until a CREATE gives it: the guard's idle rule
    (timeout 2 s here, far shorter than the wait) never stops it. The taken seat's server,
    idle as well, is stopped by the same rounds: the rule itself works."""
    from wodsync.controller import open_controller
    from wodsync.guard.actions import Sentinel
    from wodsync.secrets import Secrets

    ctl, api = hub_lab["ctl"], hub_lab["api"]
    waiting = [s.username for s in ctl.store.hot.waiting("storm")
               if s.state is SessionState.HOT]
    taken = [s.username for s in ctl.store.sessions.find(state=SessionState.ACTIVE)]
    assert waiting and taken, "the tests above leave one hot seat and one taken"
    guard = hub_lab["root"] / "catalog/guard.yaml"
    guard.write_text("interval: 5\nidle: {timeout: 2, cpu_percent: 30}\n")
    other = open_controller(hub_lab["root"], hub_lab["tmp"] / "ctl", None, Secrets())
    stopped: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not set(taken) <= set(stopped) and time.monotonic() < deadline:
            report = Sentinel(other.sessions).run("lab")
            assert report.errors == [], report.errors
            stopped += [e.username for e in report.events if e.rule == "idle"]
            time.sleep(1.0)
    finally:
        other.close()
        guard.unlink()
    assert set(taken) <= set(stopped), "the idle rule stopped nothing: the test proves nothing"
    assert not set(waiting) & set(stopped), stopped
    assert all((server_of(api, u) or {}).get("ready") for u in waiting)
