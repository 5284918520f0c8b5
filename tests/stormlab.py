"""Hot seats on a host with a real JupyterHub, for `tests/test_hotseats_hub.py` and
`bench/loginstorm.py`: the hub lab of `hubs.write_lab` with the pool `wodqf` (uids 43001-43400,
homes under /home/wodsync-test-storm), the workshop WKSHP-Lab and an event of it, and a
participant's login as a browser does it (the login form, then the lab until it answers).

The test takes seats 1-10 (uids 43001-43010), the bench seats 101-400: each removes only its own
accounts, so the two never touch each other's seats.
"""

from __future__ import annotations

import contextlib
import grp
import pwd
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from hubs import PROXY, HubApi, write_lab

PREFIX, UID_BASE = "wodqf", 43000
HOMES = Path("/home/wodsync-test-storm")
TOKEN_ENV = "WODT_HUB_TOKEN"  # the secret hubs.write_lab's host names
WORKSHOP = "WKSHP-Lab"


def taken_by_others(seats: range) -> list[str]:
    """Accounts in the uids of `seats` that are not this lab's (then the lab cannot run)."""
    uids = range(UID_BASE + seats.start, UID_BASE + seats.stop)
    return [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
            if e.pw_uid in uids and not e.pw_name.startswith(PREFIX)]


def remove_accounts(seats: range) -> None:
    """The accounts and private groups of `seats` (name prefix and uid both), nothing more."""
    uids = range(UID_BASE + seats.start, UID_BASE + seats.stop)
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and entry.pw_uid in uids:
            subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
            shutil.rmtree(HOMES / entry.pw_name, ignore_errors=True)
    for g in grp.getgrall():
        if g.gr_name.startswith(PREFIX) and g.gr_gid in uids:
            subprocess.run(["groupdel", g.gr_name], check=False, capture_output=True)
    with contextlib.suppress(OSError):  # the home root, once no seat's home is left in it
        HOMES.rmdir()


def event_yaml(start: datetime, expected: int, warm: float = 1.0) -> str:
    """catalog/events.yaml with the event `storm` of WKSHP-Lab (2 hours, lead 60 minutes)."""
    return (f"events:\n  - name: storm\n    workshop: {WORKSHOP}\n"
            f"    start: {start.isoformat()}\n    hours: 2\n    expected: {expected}\n"
            f"    warm: {warm}\n")


def write_catalog(root: Path, tmp: Path, ports: dict[str, int], seats: range, events: str,
                  spawn_limit: int = 8) -> None:
    """The hub lab (a local host, its hub run as a process) with the pool's `seats` and
    WKSHP-Lab on all of them; `events`: the text of catalog/events.yaml (none when empty)."""
    HOMES.mkdir(mode=0o755, exist_ok=True)
    last = seats.stop - 1
    pool = (f"    prefix: {PREFIX}\n    first: {seats.start}\n    last: {last}\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n"
                                      f"  spawn_limit: {spawn_limit}\n")
    (root / f"catalog/workshops/{WORKSHOP}/workshop.yaml").write_text(
        f"name: Lab\ncapacity: {len(seats)}\nseats: {{first: {seats.start}, last: {last}}}\n"
        "location: lab\nduration: 4\n")
    events_file = root / "catalog/events.yaml"
    if events:
        events_file.write_text(events)
    else:
        events_file.unlink(missing_ok=True)


def server_of(api: HubApi, user: str) -> dict[str, Any] | None:
    """The user's default server as the hub's API shows it (None: it has none)."""
    model = api.call("GET", f"/users/{user}").json()
    server: dict[str, Any] | None = (model.get("servers") or {}).get("")
    return server


def ready_servers(api: HubApi, users: list[str]) -> set[str]:
    """Those of `users` whose server the hub says is ready (one request for all)."""
    page = api.call("GET", "/users?state=ready&limit=10000",
                    "application/jupyterhub-pagination+json").json()
    return {u["name"] for u in page["items"]} & set(users)


def form_xsrf(s: requests.Session, base: str) -> str:
    """The login page's `_xsrf` field (its cookie comes with it)."""
    form = s.get(f"{base}/hub/login", timeout=60)
    found = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert form.status_code == 200 and found, (form.status_code, form.text[:300])
    return found.group(1)


def login_form(s: requests.Session, base: str, user: str, password: str) -> requests.Response:
    """The hub's login form filled in and sent, as a browser does (the `_xsrf` of the form
    page); the answer is not followed: a 302 is a login, anything else a refusal."""
    xsrf = form_xsrf(s, base)
    return s.post(f"{base}/hub/login", data={"username": user, "password": password,
                                             "_xsrf": xsrf}, allow_redirects=False, timeout=60)


def lab_answers(s: requests.Session, base: str, user: str) -> bool:
    """One look at the lab with the browser's cookies: the lab page (through the hub's OAuth:
    it leaves the server's cookies) and then the contents API of the home — True when both
    come from the running server itself (not the hub's spawn-pending or login page)."""
    page = s.get(f"{base}/user/{user}/lab", timeout=60)
    if page.status_code != 200 or not urlparse(page.url).path.startswith(f"/user/{user}/"):
        return False
    xsrf = s.cookies.get("_xsrf", path=f"/user/{user}/") or ""
    contents = s.get(f"{base}/user/{user}/api/contents", headers={"X-XSRFToken": xsrf},
                     timeout=60)
    return contents.status_code == 200


def participant(base: str, user: str, password: str, deadline: float) -> tuple[float, float]:
    """A participant of a login storm: logs in at the hub (a browser follows the login's
    redirect: the hub starts a server that is not running) and looks at the lab until it
    answers. Seconds from the login's POST to the lab's first 200, and of them the POST's own
    answer (PAM and the hub's login); raises after `deadline` (time.monotonic())."""
    s = requests.Session()
    xsrf = form_xsrf(s, base)
    began = time.monotonic()
    done = s.post(f"{base}/hub/login", data={"username": user, "password": password,
                                             "_xsrf": xsrf}, allow_redirects=False, timeout=60)
    posted = time.monotonic() - began
    if done.status_code != 302:
        raise AssertionError(f"login of {user} refused: HTTP {done.status_code}")
    s.get(requests.compat.urljoin(f"{base}/hub/login", done.headers["Location"]), timeout=60)
    while not lab_answers(s, base, user):
        if time.monotonic() > deadline:
            raise AssertionError(f"the lab of {user} did not answer in time")
        time.sleep(0.25)
    return time.monotonic() - began, posted
