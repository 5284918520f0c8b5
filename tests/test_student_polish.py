"""What a student sees first, in a real browser against a real hub: JupyterLab opens without
asking about "official Jupyter news" (the hub environment's settings defaults, a file wodsync
manages as it does the hub's configuration), and the example catalog's notebook names the
seat's true home.

The prompt's absence is only worth something if the test would see it: the control run gives
one seat the lab's own default back (its user setting "Ask") and the prompt must show there.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import time
from pathlib import Path

import pytest

from wodsync.catalog.models import LAB_OVERRIDES

from helpers import wodsync as run_wodsync
from hubs import HUB_PREFIX, PROXY, hub_prefix_lock, stop_hub
from journeylab import (
    PREFIX,
    SEAT_UIDS,
    SEATS,
    UID_BASE,
    cleanup_accounts,
    env,
    ports_below_ephemeral,
    uids_taken_by_others,
    write_catalog,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or PROXY is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, /usr/bin/python3 and configurable-http-proxy (./bootstrap test)")

PROMPT = "Would you like to get notified about official Jupyter news?"
NOTIFICATION = "@jupyterlab/apputils-extension:notification"
SCHEMA = "@jupyterlab/apputils-extension/notification.json"
# Seconds from the lab's start to the prompt in the control run (a default when run alone).
PROMPT_DELAY = {"seconds": 5.0}


@pytest.fixture(scope="module")
def polish_lab(tmp_path_factory):
    taken = uids_taken_by_others()
    if taken:
        pytest.fail(f"uids {UID_BASE + 1}-{UID_BASE + SEATS} are this lab's, but held by "
                    f"{', '.join(taken)}")
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("polish")
    root, state = tmp / "repo", tmp / "controller"
    ports = ports_below_ephemeral(3)
    write_catalog(root, tmp, ports)
    with hub_prefix_lock():
        applied = run_wodsync("apply", "--yes", "--root", root, env=env())
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    yield {"root": root, "state": state, "base": f"http://127.0.0.1:{ports[0]}"}
    stop_hub(tmp / "hubdata", SEAT_UIDS)
    cleanup_accounts()


def _seat(lab, email: str) -> dict[str, str]:
    """A real CREATE (the example notebooks rendered into the seat's home)."""
    done = run_wodsync("session", "create", "WKSHP-Journey", "--email", email, "--json",
                       "--root", lab["root"], "--state-dir", lab["state"], env=env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["credentials"]


def _open_lab(page, base: str, creds: dict[str, str]) -> float:
    """Log in on the hub's form as a participant does; the time JupyterLab's file browser
    showed up (the lab has started)."""
    page.goto(f"{base}/hub/login")
    page.fill("#username_input", creds["username"])
    page.fill("#password_input", creds["password"])
    page.click("#login_submit")
    page.wait_for_selector(".jp-DirListing-content")
    return time.monotonic()


def _user_setting(user: str, fetch_news: str | None) -> None:
    """The seat's own JupyterLab setting (what its student could choose), as its owner."""
    account = pwd.getpwnam(user)
    folder = Path(account.pw_dir) / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    if fetch_news is None:
        shutil.rmtree(Path(account.pw_dir) / ".jupyter", ignore_errors=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": fetch_news}))
    for path in [*folder.iterdir(), folder, *folder.parents]:
        if path == Path(account.pw_dir):
            break
        os.chown(path, account.pw_uid, account.pw_gid)


def test_the_hub_environment_carries_the_students_lab_defaults_as_managed_files(polish_lab):
    overrides = Path(HUB_PREFIX) / LAB_OVERRIDES
    st = overrides.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644), "root's, readable by every student"
    assert json.loads(overrides.read_text())[NOTIFICATION]["fetchNews"] == "false"
    plan = run_wodsync("plan", "--json", "--root", polish_lab["root"], env=env())
    changes = json.loads(plan.stdout)[0]["plan"]["changes"]
    assert not [c for c in changes if LAB_OVERRIDES in c["address"]], "converged"


def test_a_student_who_was_asked_sees_the_prompt_the_control(polish_lab, page):
    creds = _seat(polish_lab, "control@example.org")
    _user_setting(creds["username"], "none")
    try:
        opened = _open_lab(page, polish_lab["base"], creds)
        page.get_by_text(PROMPT).wait_for(state="visible")
        PROMPT_DELAY["seconds"] = max(1.0, time.monotonic() - opened)
    finally:
        _user_setting(creds["username"], None)


def test_jupyterlab_opens_without_the_news_prompt_and_the_notebook_shows_the_seats_home(
        polish_lab, page):
    creds = _seat(polish_lab, "student@example.org")
    user = creds["username"]
    assert user.startswith(PREFIX)
    opened = _open_lab(page, polish_lab["base"], creds)

    # The settings the lab itself serves: JupyterLab's own default asks, the environment's
    # overrides (nothing of the student's own) make it "never".
    shipped = json.loads((Path(HUB_PREFIX) / "share/jupyter/lab/schemas" / SCHEMA).read_text())
    assert shipped["properties"]["fetchNews"]["default"] == "none"
    answer = page.request.get(f"{polish_lab['base']}/user/{user}/lab/api/settings/"
                              f"{NOTIFICATION}")
    assert answer.ok, answer.status
    setting = answer.json()
    assert json.loads(setting["raw"] or "{}") == {}, "nothing of the student's own"
    assert setting["schema"]["properties"]["fetchNews"]["default"] == "false"

    home = pwd.getpwnam(user).pw_dir  # the account's real home, not a formula
    page.goto(f"{polish_lab['base']}/user/{user}/lab/tree/WKSHP-Journey/1-Python-Basics.ipynb")
    page.locator(".jp-RenderedMarkdown code", has_text=home).first.wait_for(state="visible")
    assert "/student/" not in page.locator(".jp-Notebook").inner_text()

    # Three times as long as the control run took to show the prompt, and still none.
    waited = time.monotonic() - opened
    page.wait_for_timeout(max(0.0, 3 * PROMPT_DELAY["seconds"] - waited) * 1000)
    assert page.get_by_text(PROMPT).count() == 0
