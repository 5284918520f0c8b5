"""The contract of WoD's api-db routes as wod-frontend uses them, against a real `wodsync
serve` with a real store, real seats (pool `wodtiw`, uids 56901-56910, homes under
/home/wodsync-test-wodapi) and an aiosmtpd sink for the mails.

What wod-frontend calls (wod-frontend 572644f, wod-api-db edcc6ce), and what it reads:

- GET /workshops?active=true — called by gatsby-node.js.j2:49-55, pages/template.js.j2:42-84,
  workshops/template.js.j2:42-153, replays/template.js.j2:39-172; reads id, name,
  description, sessionType, sessionId, avatar, presenter, role, replayLink, notebook,
  location, replayId, popular, duration, updatedAt, category. api-db: routes/workshops.js:63-135,
  models/workshop.js.
- GET /workshops/:id — components/wod/Card/ScheduleCard.js.j2:655-665; reads capacity.
  api-db: routes/workshops.js:161-173.
- GET /special-badges — gatsby-node.js.j2:19-27; reads id, title, description, badgeImg.
  api-db: routes/specialBadges.js:29-39, seeders/05-special_badges.js.j2.
- POST /customer — ScheduleCard.js.j2:272-304 (Video/Video.js:33-43, the same form); sends
  name, email, company, title, notebook, sessionType, location, termsAndConditions, proxy;
  reads the status (202: data.id, data.title, data.endDate), on an error status and
  data.message. api-db: routes/customers.js.j2:122-263.
- GET /customers/:id — ScheduleCard.js.j2:69-81; reads studentId, sessionName.
  api-db: routes/customers.js.j2:83-95.
- GET /students/:id — ScheduleCard.js.j2:78-90; reads username and password (compared in the
  browser). api-db: routes/students.js:93-105.
- PUT /customer/unregister/:id — ScheduleCard.js.j2:92-100; reads the status.
  api-db: routes/customers.js.j2:382-400.
- POST /login — services/auth.service.js.j2:8-29 (only after a 401); reads data.
  api-db: routes/login.js:6, controllers/auth.controller.js.

Here `GET /students/:id` never sends a password and `PUT /customer/unregister/:id` takes the
credentials in its body, checked on the server (README, "An existing WoD portal").
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from wodsync.mail.sink import Sink

import apiserver
from helpers import remove_test_accounts, until
from helpers import wodsync as run_wodsync

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates seats")

PREFIX, UID_BASE, SEATS = "wodtiw", 56900, 10
HOMES = Path("/home/wodsync-test-wodapi")
API = "/wod/api"
ORIGIN = "https://wod.example.org"
API_TOKEN = "wodsync-wodapi-" + os.urandom(8).hex()
NOTEBOOK = ('{"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# {{ STDID }}"]}],'
            ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
WORKSHOPS = {  # key: (title, first seat, last seat, active, replay)
    "WKSHP-Tiw": ("Tiw 101 - WoD's portal", 1, 5, True, 3),
    "WKSHP-Two": ("Tiw 102 - the second", 6, 8, True, None),
    "WKSHP-Off": ("Tiw 000 - inactive", 10, 10, False, None),
}
STR, INT, BOOL, LIST = (str,), (int,), (bool,), (list,)
# What wod-frontend reads of a workshop, with the JSON types it uses them as (None allowed
# where WoD's column is nullable: the frontend guards those with `&&` or shows nothing).
WORKSHOP_READS = {
    "id": INT, "name": STR, "description": STR, "sessionType": STR, "notebook": STR,
    "location": STR, "popular": BOOL, "duration": (int, float), "updatedAt": STR,
    "category": LIST, "capacity": INT, "sessionId": (int, type(None)),
    "avatar": (str, type(None)), "presenter": (str, type(None)), "role": (str, type(None)),
    "replayLink": (str, type(None)), "replayId": (int, type(None)),
}


def uids_taken_by_others() -> list[str]:
    return [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
            if UID_BASE < e.pw_uid <= UID_BASE + SEATS and not e.pw_name.startswith(PREFIX)]


def cleanup_accounts() -> None:
    remove_test_accounts(PREFIX, UID_BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def write_catalog(root: Path, tmp: Path, sink_port: int, base: str, wod_api: str) -> None:
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  tiw:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n",
        "catalog/variables.yaml": "BRANDING: Lab\n",
        "catalog/replays.yaml": "replays:\n  - {id: 3, title: Tiw replay, "
                                "video: 'https://youtu.be/tiw', workshop: WKSHP-Tiw}\n",
        "catalog/portal.yaml": f"wod_api: {wod_api}\n",
        "catalog/mail.yaml": f"smtp: {{host: 127.0.0.1, port: {sink_port}}}\n"
                             'from: "Lab <lab@example.org>"\n'
                             f"portal_url: {base}\nsending: {{backoff_seconds: 0.2}}\n",
        "hosts/lab1.yaml": "address: localhost\ntransport: local\nlocation: lab\npool: tiw\n"
                           f"state_dir: {tmp}/state-lab1\n",
    }
    for key, (title, first, last, active, replay) in WORKSHOPS.items():
        files[f"catalog/workshops/{key}/workshop.yaml"] = (
            f"name: {title}\ndescription: About {key}.\ncapacity: {last - first + 1}\n"
            f"seats: {{first: {first}, last: {last}}}\nlocation: lab\nduration: 2\n"
            f"active: {str(active).lower()}\ncategory: [Open Source]\npresenter: Ada\n"
            + (f"replay: {replay}\n" if replay else ""))
        files[f"catalog/workshops/{key}/1-Intro.ipynb"] = NOTEBOOK
    HOMES.mkdir(mode=0o755, exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


ENABLED = f"{{enabled: true, prefix: {API}, origins: ['{ORIGIN}']}}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    taken = uids_taken_by_others()
    if taken:
        pytest.skip(f"uids {UID_BASE + 1}-{UID_BASE + SEATS} are taken by {taken}")
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("wodapi")
    root, state = tmp / "repo", tmp / "state"
    env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN)
    with Sink(tmp / "maildir") as sink:
        server = apiserver.Server(root, state, env, API_TOKEN)
        write_catalog(root, tmp, sink.port, server.base, ENABLED)
        applied = run_wodsync("apply", "--yes", "--root", root, env=env, timeout=900)
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        lab = {"root": root, "tmp": tmp, "sink": sink, "server": server.start(), "env": env}
        try:
            yield lab
        finally:
            lab["server"].stop()
            cleanup_accounts()


def call(lab: dict[str, Any], method: str, path: str, **kw: Any) -> requests.Response:
    return lab["server"].call(method, API + path, token=None, **kw)


def mails_to(lab: dict[str, Any], address: str) -> list[Any]:
    return [m for m in lab["sink"].messages() if m["To"] == address]


def text_of(mail: Any) -> str:
    return str(mail.get_body(("plain",)).get_content())


def assert_shape(row: dict[str, Any], reads: dict[str, tuple[type, ...]]) -> None:
    for field, types in reads.items():
        assert field in row, f"{field} missing from {sorted(row)}"
        assert isinstance(row[field], types) and not (
            bool not in types and isinstance(row[field], bool)), (field, row[field])


def registration(email: str, key: str = "WKSHP-Tiw", **extra: Any) -> dict[str, Any]:
    """The body wod-frontend's SignupLayer posts (ScheduleCard.js.j2:616-626, 279)."""
    title = WORKSHOPS[key][0]
    return {"name": "ada lovelace", "email": email, "company": "ACME", "title": title,
            "notebook": key, "sessionType": "Workshops-on-Demand", "location": "lab",
            "termsAndConditions": True, "proxy": "wod", **extra}


def test_the_workshop_list_has_every_field_wod_frontend_reads(lab: dict[str, Any]) -> None:
    answer = call(lab, "GET", "/workshops?active=true")
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert [r["notebook"] for r in rows] == ["WKSHP-Tiw", "WKSHP-Two"]  # the active ones
    for row in rows:
        assert_shape(row, WORKSHOP_READS)
        datetime.fromisoformat(row["updatedAt"])
    tiw = rows[0]
    assert (tiw["name"], tiw["capacity"], tiw["replayId"], tiw["replayLink"], tiw["duration"]) \
        == (WORKSHOPS["WKSHP-Tiw"][0], 5, 3, "https://youtu.be/tiw", 2)
    assert tiw["category"] == ["Open Source"] and tiw["sessionType"] == "Workshops-on-Demand"
    assert not any(r["popular"] for r in rows)  # nobody took any yet
    assert len({r["id"] for r in call(lab, "GET", "/workshops").json()}) == 3  # all, distinct


def test_a_workshop_by_its_number_gives_its_capacity(lab: dict[str, Any]) -> None:
    [tiw] = [r for r in call(lab, "GET", "/workshops").json() if r["notebook"] == "WKSHP-Tiw"]
    one = call(lab, "GET", f"/workshops/{tiw['id']}")
    assert one.status_code == 200 and one.json()["notebook"] == "WKSHP-Tiw"
    assert isinstance(one.json()["capacity"], int)
    missing = call(lab, "GET", "/workshops/999")
    assert missing.status_code == 404 and missing.json() == {"message": "Workshop Not Found"}


def test_the_special_badges_have_wods_numbers_and_fields(lab: dict[str, Any]) -> None:
    badges = call(lab, "GET", "/special-badges").json()
    assert [b["id"] for b in badges] == [1, 2, 3, 4, 5]
    for badge in badges:
        assert_shape(badge, {"id": INT, "title": STR, "description": STR, "badgeImg": STR})
    assert badges[0]["badgeImg"] == "/img/3_workshops_apprentice.jpg"


def test_a_registration_from_wod_frontend_goes_through_the_journey(lab: dict[str, Any]) -> None:
    """POST /customer → the confirmation mail (no seat yet) → its link → the seat and the
    credentials mail; the customer and its student without a password; a second
    registration of the same person is WoD's 202; unregister checks the credentials here."""
    email = "ada@example.org"
    made = call(lab, "POST", "/customer", json=registration(email), headers={"Origin": ORIGIN})
    assert made.status_code == 200, made.text
    assert made.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert_shape(made.json(), {"id": INT, "name": STR, "email": STR})
    assert made.json()["studentId"] is None  # the seat comes with the click
    customer = made.json()["id"]
    until(lambda: mails_to(lab, email), "no confirmation mail", timeout=30)
    [confirm] = mails_to(lab, email)
    link = re.search(r"(http://\S+/confirm/\S+)", text_of(confirm))
    assert link, text_of(confirm)
    assert requests.get(link.group(1), timeout=120).status_code == 200  # the session page
    until(lambda: len(mails_to(lab, email)) == 2, "no credentials mail", timeout=30)
    credentials = text_of(mails_to(lab, email)[1])
    username = re.search(r"User:\s+(\S+)", credentials).group(1)  # type: ignore[union-attr]
    password = re.search(r"Password:\s+(\S+)", credentials).group(1)  # type: ignore[union-attr]

    [tiw] = [r for r in call(lab, "GET", "/workshops").json() if r["notebook"] == "WKSHP-Tiw"]
    assert (tiw["capacity"], tiw["popular"]) == (4, True)  # a seat taken, a person counted
    seen = call(lab, "GET", f"/customers/{customer}").json()
    assert_shape(seen, {"studentId": INT, "sessionName": STR, "endDate": STR})
    assert seen["sessionName"] == WORKSHOPS["WKSHP-Tiw"][0] and seen["active"] is True
    assert not {"email", "name", "company"} & set(seen)
    student = call(lab, "GET", f"/students/{seen['studentId']}").json()
    assert student["username"] == username and "password" not in student

    again = call(lab, "POST", "/customer", json=registration("Ada+x@Example.org", "WKSHP-Two"))
    assert again.status_code == 202, again.text
    assert again.json()["id"] == customer
    assert again.json()["title"] == WORKSHOPS["WKSHP-Tiw"][0]
    datetime.fromisoformat(again.json()["endDate"])

    wrong = call(lab, "PUT", f"/customer/unregister/{customer}",
                 json={"username": username, "password": password + "x"})
    assert wrong.status_code == 403 and password not in wrong.text
    assert call(lab, "GET", f"/customers/{customer}").json()["active"] is True
    done = call(lab, "PUT", f"/customer/unregister/{customer}",
                json={"username": username, "password": password})
    assert done.status_code == 200, done.text
    assert done.json()["active"] is False and password not in done.text
    until(lambda: len(mails_to(lab, email)) == 3, "no ended mail", timeout=30)
    gone = call(lab, "PUT", f"/customer/unregister/{customer}",
                json={"username": username, "password": password})
    assert gone.status_code == 410


def test_the_portals_screening_answers_with_wods_message_field(lab: dict[str, Any]) -> None:
    throwaway = call(lab, "POST", "/customer", json=registration("x@mailinator.com"))
    assert throwaway.status_code == 422 and "throw-away" in throwaway.json()["message"]
    terms = call(lab, "POST", "/customer",
                 json=registration("bob@example.org", termsAndConditions=False))
    assert terms.status_code == 422 and "terms" in terms.json()["message"]
    unknown = call(lab, "POST", "/customer", json=registration(
        "bob@example.org", notebook="WKSHP-Nope", title="Nope"))
    assert unknown.status_code == 404 and unknown.json()["message"]
    assert mails_to(lab, "x@mailinator.com") == [] and mails_to(lab, "bob@example.org") == []


def test_only_the_frontends_origin_gets_cors_and_only_the_prefix_answers(
        lab: dict[str, Any]) -> None:
    ok = call(lab, "OPTIONS", "/customer", headers={"Origin": ORIGIN})
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    other = call(lab, "OPTIONS", "/customer", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert lab["server"].call("GET", "/other/api/workshops", token=None).status_code == 404
    assert "key" in lab["server"].call("GET", "/api/v1/workshops", token=None).json()[0]


def _restart(lab: dict[str, Any], wod_api: str) -> None:
    lab["server"].stop()
    portal = lab["root"] / "catalog/portal.yaml"
    portal.write_text(f"wod_api: {wod_api}\n")
    lab["server"] = apiserver.Server(lab["root"], lab["server"].state, lab["env"],
                                     API_TOKEN).start()


def test_numbers_survive_a_restart_and_catalog_edits_and_the_switch_turns_them_off(
        lab: dict[str, Any]) -> None:
    before = {r["notebook"]: r for r in call(lab, "GET", "/workshops").json()}
    new = lab["root"] / "catalog/workshops/WKSHP-Aaa"  # sorts first: it must not take id 1
    new.mkdir()
    (new / "workshop.yaml").write_text("name: Aaa\ncapacity: 1\nseats: {first: 9, last: 9}\n"
                                       "location: lab\nduration: 1\n")
    (new / "1-Intro.ipynb").write_text(NOTEBOOK)
    tiw = lab["root"] / "catalog/workshops/WKSHP-Tiw/workshop.yaml"
    tiw.write_text(tiw.read_text().replace("About WKSHP-Tiw.", "About it, edited."))
    _restart(lab, ENABLED)
    after = {r["notebook"]: r for r in call(lab, "GET", "/workshops").json()}
    assert {k: r["id"] for k, r in after.items() if k in before} == \
        {k: r["id"] for k, r in before.items()}
    assert after["WKSHP-Aaa"]["id"] == max(r["id"] for r in before.values()) + 1
    assert after["WKSHP-Tiw"]["updatedAt"] > before["WKSHP-Tiw"]["updatedAt"]
    assert after["WKSHP-Two"]["updatedAt"] == before["WKSHP-Two"]["updatedAt"]
    _restart(lab, f"{{enabled: false, prefix: {API}}}")
    assert call(lab, "GET", "/workshops").status_code == 404
