"""The participant's journey in a real browser (chromium), on real components: `wodsync serve`
(uvicorn, its mail sender), an aiosmtpd sink keeping the mails in a Maildir, a real JupyterHub
and real seats (journeylab.py).

page → form → confirmation mail → link → session page → hub login with the shown password
(JupyterLab opens) → extend → unregister → ended mail; then the refusals a participant meets.
WODSYNC_SCREENSHOTS=DIR keeps the README's screenshots there (docs/ in the repository).
"""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from wodsync.mail.sink import Sink

import apiserver
from helpers import until
from helpers import wodsync as run_wodsync
from hubs import PROXY, hub_prefix_lock, stop_hub
from journeylab import (
    API_TOKEN,
    SEAT_UIDS,
    SEATS,
    UID_BASE,
    cleanup_accounts,
    env,
    ports_below_ephemeral,
    uids_taken_by_others,
    write_catalog,
)
from sshd import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or PROXY is None or not Path("/usr/bin/python3").exists(),
    reason="needs root, /usr/bin/python3 and configurable-http-proxy (./bootstrap test)")

PORTAL = ("terms: {text: I accept that my name and e-mail are kept for this workshop.,\n"
          "        url: https://lab.example/terms}\n"
          "rate_limit: {per_address: 3/hour, per_client: 500/hour}\n"
          "confirm_ttl: 2h\nextend: {step_hours: 1, max_hours: 2}\n")
ENDED = "Thank you for taking"
MAIL_WAIT_S = 60.0  # an upper bound for the sender loop, not a performance figure


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    taken = uids_taken_by_others()
    if taken:
        pytest.fail(f"uids {UID_BASE + 1}-{UID_BASE + SEATS} are this lab's, but held by "
                    f"{', '.join(taken)}")
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("journey")
    root, state = tmp / "repo", tmp / "controller"
    state.mkdir()
    sink = Sink(tmp / "mail", port=free_port()).start()
    server = apiserver.Server(root, state, env(), API_TOKEN, expiry_interval=5)
    mail = (f"smtp: {{host: 127.0.0.1, port: {sink.port}}}\n"
            "from: Workshops <workshops@lab.example>\n"
            f"portal_url: {server.base}\nfeedback_url: https://lab.example/feedback\n")
    write_catalog(root, tmp, ports_below_ephemeral(3),
                  {"catalog/portal.yaml": PORTAL, "catalog/mail.yaml": mail})
    with hub_prefix_lock():
        applied = run_wodsync("apply", "--yes", "--root", root, env=env())
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    server.start()
    shots = Path(os.environ.get("WODSYNC_SCREENSHOTS") or tmp / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    yield {"server": server, "sink": sink, "shots": shots, "base": server.base}
    for s in server.call("GET", "/api/v1/sessions?limit=500").json().get("items", []):
        if s["state"] not in ("ended", "failed"):
            server.call("POST", f"/api/v1/sessions/{s['id']}/purge")
    server.stop()
    sink.stop()
    stop_hub(tmp / "hubdata", SEAT_UIDS)
    cleanup_accounts()


def mails(journey, to: str, subject: str = "") -> list[EmailMessage]:
    return [m for m in journey["sink"].messages()
            if to.lower() in str(m["To"]).lower() and subject in str(m["Subject"])]


def wait_mail(journey, to: str, subject: str) -> EmailMessage:
    until(lambda: mails(journey, to, subject), f"a mail '{subject}…' to {to}",
          timeout=MAIL_WAIT_S)
    (found,) = mails(journey, to, subject)
    return found


def link_in(mail: EmailMessage, path: str) -> str:
    text = mail.get_body(("plain",)).get_content()
    return re.search(rf"http://127\.0\.0\.1:\d+/{path}/\S+", text)[0]


def screenshot(page, path: Path) -> None:
    """The page down to the end of its content (no empty viewport below it)."""
    bottom = page.evaluate("Math.ceil(document.body.getBoundingClientRect().bottom)")
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": min(bottom + 24, 3000)})


def register(page, base: str, workshop: str, email: str, name: str = "Ada Lovelace") -> str:
    """The form of `workshop` on the registration page, filled and sent; the answer's text."""
    page.goto(f"{base}/register")
    form = page.locator(f"section#{workshop} form")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=company]").fill("Analytical Engines")
    form.locator("input[name=terms]").check()
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    return page.locator("body").inner_text()


def test_the_journey_from_the_page_to_jupyterlab_and_back_in_a_real_browser(journey, page):
    base, shots = journey["base"], journey["shots"]
    page.goto(f"{base}/register")
    screenshot(page, shots / "journey-register.png")
    answer = register(page, base, "WKSHP-Journey", "ada@lab.example")
    assert "We sent a link to ada@lab.example" in answer

    confirm = wait_mail(journey, "ada@lab.example", "Confirm your registration")
    assert confirm.get_content_type() == "multipart/alternative"
    page.goto(link_in(confirm, "confirm"))
    page.locator("#password").wait_for()
    session_url = page.url
    username = page.locator("#username").inner_text()
    password = page.locator("#password").inner_text()
    screenshot(page, shots / "journey-session.png")

    credentials = wait_mail(journey, "ada@lab.example", "is ready")
    assert password in credentials.get_body(("plain",)).get_content()
    mail_page = page.context.new_page()
    mail_page.set_content(credentials.get_body(("html",)).get_content())
    screenshot(mail_page, shots / "journey-mail.png")
    mail_page.close()

    with page.context.expect_page() as opened:
        page.click("#start")
    hub = opened.value
    hub.wait_for_load_state()
    hub.fill("#username_input", username)
    hub.fill("#password_input", password)
    hub.click("#login_submit")
    hub.wait_for_selector(".jp-DirListing-content")
    assert f"/user/{username}/lab" in hub.url
    hub.close()

    ends = page.locator("#time-left").get_attribute("data-ends")
    page.click("#extend button")
    page.wait_for_load_state()
    assert page.locator("#time-left").get_attribute("data-ends") > ends, "an hour more"

    page.click("#unregister button")
    page.get_by_text("Your workshop has ended.").wait_for()
    assert page.locator("#password").count() == 0, "no credentials after the end"
    assert page.locator("#score").inner_text() == "Your score: 100 / 100."
    ended = wait_mail(journey, "ada@lab.example", ENDED)
    assert "register for another" in ended.get_body(("plain",)).get_content().lower()
    assert "Your score: 100 / 100." in ended.get_body(("plain",)).get_content()
    mail_page = page.context.new_page()
    mail_page.set_content(ended.get_body(("html",)).get_content())
    assert "Your score: 100 / 100." in mail_page.locator("body").inner_text()
    mail_page.close()
    page.goto(session_url)
    assert page.locator("#password").count() == 0


def test_the_refusals_a_participant_meets_in_the_browser(journey, page):
    base = journey["base"]
    assert "throw-away" in register(page, base, "WKSHP-Journey", "someone@mailinator.com")

    assert "We sent a link" in register(page, base, "WKSHP-Journey", "bob@lab.example")
    link = link_in(wait_mail(journey, "bob@lab.example", "Confirm"), "confirm")
    page.goto(link)
    page.locator("#password").wait_for()
    session_page, username = page.url, page.locator("#username").inner_text()

    second = register(page, base, "WKSHP-Second", "bob@lab.example")
    assert "You already have a live workshop" in second, "one live workshop per address"
    plus = register(page, base, "WKSHP-Second", "Bob+again@Lab.Example")
    assert "You already have a live workshop" in plus, "+tags and case folded"

    page.goto(link)  # the confirmation link again: the same session, no second seat
    page.locator("#username").wait_for()
    assert (page.url, page.locator("#username").inner_text()) == (session_page, username)

    token = session_page.rsplit("/", 1)[1]
    forged = session_page[:-len(token)] + token[::-1]
    assert requests.get(forged, timeout=30).status_code == 404, "a link nobody was given"
    shown = page.goto(forged)
    assert shown.status == 404

    for n in range(3):
        assert "We sent a link" in register(page, base, "WKSHP-Second", "carol@lab.example",
                                            name=f"Carol {n}")
    assert "too many registrations" in register(page, base, "WKSHP-Second",
                                                "carol@lab.example")
