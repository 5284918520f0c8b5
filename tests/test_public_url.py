"""`hub.public_url`: the address participants reach (a DNS name, a reverse proxy's https) is the
one every answer, page and mail gives them, built in one place (`Host.hub_url`).

A real CREATE through the API on this machine's seats wodto51-60 (uids 54851-54860, the
`wodto` group of tests), behind an existing hub wodsync does not manage; its credentials mail
composed from the outbox as the sender would send it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from wodsync.api.app import create_app
from wodsync.api.deps import Context
from wodsync.catalog.models import Host, Hub, HubTls
from wodsync.controller import working_tree_deployment
from wodsync.mail.compose import compose
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.store import open_store

from apiserver import serving
from helpers import remove_test_accounts, wodsync

PROJECT = Path(__file__).resolve().parent.parent
PREFIX, UID_BASE, GROUP = "wodto", 54800, "wodtourl"
HOMES = Path("/home/wodsync-test-url")
TOKEN = "api-token-" + os.urandom(6).hex()
PUBLIC = "https://wod.example.org/"


def _host(**hub: object) -> Host:
    return Host(address="hub-1.example.org", location="lab", pool="p", transport="local",
                hub=Hub(**hub))  # type: ignore[arg-type]


def test_the_public_url_is_the_students_url_as_written_with_one_final_slash():
    assert _host(public_url="https://wod.example.org").hub_url() == PUBLIC
    assert _host(public_url="https://wod.example.org/emea/").hub_url() == \
        "https://wod.example.org/emea/"


def test_without_it_the_url_is_the_hosts_address_and_port_https_when_the_proxy_serves_tls():
    assert _host(port=8000).hub_url() == "http://hub-1.example.org:8000/"
    tls = HubTls(cert="/etc/ssl/wod.pem", key="/etc/ssl/private/wod.key")
    assert _host(port=443, tls=tls).hub_url() == "https://hub-1.example.org:443/"
    v6 = Host(address="2001:db8::7", location="lab", pool="p", transport="local", hub=Hub())
    assert v6.hub_url() == "http://[2001:db8::7]:80/"
    assert Host(address="a", location="lab", pool="p", transport="local").hub_url() is None


def test_a_public_url_that_is_not_http_or_has_a_query_is_refused():
    for bad in ("ftp://wod.example.org/", "https://wod.example.org/?next=x", "wod.example.org"):
        with pytest.raises(ValueError, match="public_url"):
            _host(public_url=bad)


@pytest.fixture
def lab(tmp_path):
    """A local host behind an existing hub with a public URL, ten seats, mail settings."""
    if os.geteuid() != 0:
        pytest.skip("needs root (real Linux accounts)")
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
    files = {
        "catalog/workshops/WKSHP-Url/workshop.yaml":
            "name: Url\ncapacity: 10\nseats: {first: 51, last: 60}\nlocation: lab\n"
            "duration: 1\n",
        "catalog/workshops/WKSHP-Url/1-Intro.ipynb":
            '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n',
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  test:\n    prefix: {PREFIX}\n    first: 51\n    last: 60\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n"
            f"    group: {GROUP}\n",
        "catalog/mail.yaml": 'from: "WoD <wod@example.org>"\n'
                             "portal_url: https://portal.example.org\n",
        "hosts/lab.yaml": f"address: localhost\ntransport: local\nlocation: lab\npool: test\n"
                          f"state_dir: {tmp_path}/state\n"
                          f"hub: {{manage: false, port: 8000, public_url: '{PUBLIC}'}}\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    shutil.copytree(PROJECT / "catalog/mail", tmp_path / "catalog/mail")
    HOMES.mkdir(mode=0o755, exist_ok=True)
    applied = wodsync("apply", "--yes", "--root", tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    store = open_store(state_dir=tmp_path / "controller")
    deployment = working_tree_deployment(tmp_path, Secrets.load(None))
    service = SessionService(store, lambda: deployment)
    try:
        yield service, deployment.catalog
    finally:
        service.connections.close()
        store.close()
        remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
        shutil.rmtree(HOMES, ignore_errors=True)


def test_the_api_answer_the_session_and_the_credentials_mail_give_the_public_url(lab):
    service, catalog = lab
    context = Context(service.store, sessions=service, api_token=lambda: TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(create_app(context)) as base:
        created = requests.post(f"{base}/api/v1/sessions", headers=auth, timeout=60, json={
            "workshop": "WKSHP-Url", "participant": {"name": "Ada", "email": "ada@example.org"}})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["hub_url"] == PUBLIC
        shown = requests.get(f"{base}/api/v1/sessions/{body['id']}", headers=auth, timeout=30)
        assert shown.json()["hub_url"] == PUBLIC
    [mail] = [m for m in service.store.outbox.list() if m.kind == "credentials"]
    message = compose(service.store, catalog, catalog.mail, mail)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert PUBLIC in text and "localhost" not in text
    service.purge(body["id"])
