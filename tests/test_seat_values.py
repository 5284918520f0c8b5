"""Per-seat values: computed in the catalog (`{{ 8000 + SEAT_OFFSET }}`) and written by the
`create` hook to `$WOD_VALUES`, rendered into that seat's files only; the catalog rules of
appliances and values. The first tests are pure (a copy of the example repository, the agent's
parser); the last ones make real sessions on the appliance lab's hub host (appliancelab.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pytest
from appliancelab import HOMES, Lab, lab, notebook

from wodsync.agent import hookvalues
from wodsync.controller import open_controller
from wodsync.secrets import Secrets
from wodsync.sessions.service import CreateFailed
from wodsync.store import Participant, SessionState

from helpers import wodsync

GIT = "catalog/workshops/WKSHP-Git101/workshop.yaml"
APP_HOST = ("address: app-emea.wod.example.org\nhost_key: ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAINzfOlzAboCD63XDt919hOsKiQP5cZgs8+hiyJVx3GXU\n"
            "location: emea\npool: student\nrole: appliance\n")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (./bootstrap test)")


def _errors(cli, repo) -> list[dict]:
    result = cli("validate", "--root", repo.root, "--format", "json")
    return [d for d in json.loads(result.output) if d["severity"] == "error"]


# ---- the catalog ------------------------------------------------------------------------------

def test_computed_values_and_the_hook_s_placeholders_render_per_seat_in_a_preview(repo, cli,
                                                                                  tmp_path):
    repo.replace(GIT, "kernels: [python3]\n", "kernels: [python3]\nseat_values:\n"
                 "  HTTPPORT: '{{ 8000 + SEAT_OFFSET }}'\n"
                 "  NEXTPORT: '{{ HTTPPORT | int + 100 }}'\n"
                 "  GITTOK: {hook: create}\n")
    repo.write("catalog/workshops/WKSHP-Git101/3-Ports.ipynb",
               notebook("{{ STDID }} {{ HTTPPORT }} {{ NEXTPORT }} {{ GITTOK }}"))
    assert _errors(cli, repo) == []
    for seat, want in ((41, "41 8000 8100"), (70, "70 8029 8129")):
        out = tmp_path / str(seat)
        result = cli("render", "WKSHP-Git101", "--student", str(seat), "--out", out,
                     "--root", repo.root)
        assert result.exit_code == 0, result.output
        text = (out / "3-Ports.ipynb").read_text()
        assert f"{want} <GITTOK: written by the create hook>" in text


def test_a_value_that_cannot_be_computed_is_located_at_its_name(repo, cli):
    repo.replace(GIT, "kernels: [python3]\n",
                 "kernels: [python3]\nseat_values:\n  HTTPPORT: '{{ 8000 + NOPE }}'\n")
    [error] = _errors(cli, repo)
    assert error["code"] == "seat-value" and "HTTPPORT" in error["message"]
    assert error["line"] == repo.line_of(GIT, "HTTPPORT")


def test_appliance_hosts_are_checked_by_role_count_and_pool(repo, cli):
    repo.write("hosts/app-emea.yaml", APP_HOST)
    repo.replace(GIT, "kernels: [python3]\n", "kernels: [python3]\n"
                 "appliance: {hosts: [app-emea, hub-emea, nowhere], mode: per_seat}\n")
    codes = sorted(e["code"] for e in _errors(cli, repo))
    assert codes == ["appliance-hosts", "appliance-role", "unknown-host"]


def test_a_shared_appliance_is_one_host_and_an_appliance_has_no_hub(repo, cli):
    repo.write("hosts/app-emea.yaml", APP_HOST + "hub: {version: '6.1.1'}\n")
    repo.replace(GIT, "kernels: [python3]\n", "kernels: [python3]\n"
                 "appliance: {hosts: [app-emea, app-emea], mode: shared}\n")
    codes = sorted(e["code"] for e in _errors(cli, repo))
    assert codes == ["appliance-hosts", "appliance-hub"]


def test_wod_s_appliance_labels_still_load_and_appliance_hosts_give_no_seats(repo, cli):
    repo.replace(GIT, "kernels: [python3]\n", "kernels: [python3]\nappliance: multi\n")
    repo.write("hosts/app-emea.yaml", APP_HOST)
    assert _errors(cli, repo) == []
    from wodsync.catalog.loader import load_catalog

    catalog = load_catalog(repo.root)
    assert "app-emea" in catalog.hosts and "app-emea" not in catalog.hosts_in("emea")


# ---- the hook's channel (the agent's parser) ------------------------------------------------

def test_the_hook_s_values_are_lines_or_json_and_only_the_declared_names():
    assert hookvalues.check(hookvalues.parse("# made\nTOK=a=b c\n\nPORT=9\n"),
                            ["TOK", "PORT"]) == {"TOK": "a=b c", "PORT": "9"}
    assert hookvalues.check(hookvalues.parse('{"TOK": "x", "PORT": 9}'),
                            ["TOK", "PORT"]) == {"TOK": "x", "PORT": "9"}
    for text, declared, why in (("TOK=1\nEVIL=2\n", ["TOK"], "EVIL"),
                                ("TOK=1\n", ["TOK", "PORT"], "did not write PORT"),
                                ('{"TOK": "s3cr3t\\nX"}', ["TOK"], "line break"),
                                ("not a pair\n", ["TOK"], "line 1")):
        with pytest.raises(hookvalues.HookValuesError, match=why) as caught:
            hookvalues.check(hookvalues.parse(text), declared)
        assert "s3cr3t" not in str(caught.value), "a message never shows a value"


# ---- real sessions ------------------------------------------------------------------------------

HOOK = ('#!/bin/bash\ntok="tok-$STUDENT-$(od -An -N8 -tx1 /dev/urandom | tr -d \' \\n\')"\n'
        'echo "made $tok"\necho "MLTOK=$tok" > "$WOD_VALUES"\n')
WORKSHOPS = {
    "WKSHP-Values/workshop.yaml":
        "name: Values\ncapacity: 2\nseats: {first: 3, last: 4}\nlocation: lab\nduration: 1\n"
        "hooks: {create: scripts/create.sh}\n"
        "seat_values: {HTTPPORT: '{{ 8000 + SEAT_OFFSET }}', MLTOK: {hook: create}}\n",
    "WKSHP-Values/1-Intro.ipynb": notebook("port {{ HTTPPORT }} token {{ MLTOK }}"),
    "WKSHP-Values/scripts/create.sh": HOOK,
    "WKSHP-Mute/workshop.yaml":
        "name: Mute\ncapacity: 1\nseats: {first: 7, last: 7}\nlocation: lab\nduration: 1\n"
        "hooks: {create: scripts/create.sh}\nseat_values: {MLTOK: {hook: create}}\n",
    "WKSHP-Mute/1-Intro.ipynb": notebook("token {{ MLTOK }}"),
    "WKSHP-Mute/scripts/create.sh": "#!/bin/bash\necho writes nothing\n",
}


@pytest.fixture(scope="module")
def valuelab(tmp_path_factory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (./bootstrap test)")
    yield from lab(tmp_path_factory.mktemp("values"), WORKSHOPS)


@pytest.fixture
def ctl(valuelab, tmp_path):
    controller = open_controller(valuelab.root, tmp_path / "state", None, Secrets())
    yield controller
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def _text(user: str, workshop: str) -> str:
    return (HOMES / "wodtq" / user / workshop / "1-Intro.ipynb").read_text()


@root_only
def test_a_hook_token_and_a_computed_port_reach_that_seat_s_notebook_only(valuelab, ctl,
                                                                          tmp_path):
    a = ctl.sessions.create("WKSHP-Values", Participant("A", "a@example.org", "X")).session
    b = ctl.sessions.create("WKSHP-Values", Participant("B", "b@example.org", "X")).session
    tokens = {}
    for s in (a, b):
        text = _text(s.username, "WKSHP-Values")
        found = re.search(r"port (\d+) token (tok-[a-z0-9]+-[0-9a-f]{16})", text)
        assert found, text
        assert found.group(1) == str(8000 + s.seat - 3)
        assert found.group(2).startswith(f"tok-{s.username}-")
        tokens[s.username] = found.group(2)
    assert tokens[a.username] not in _text(b.username, "WKSHP-Values")
    assert tokens[b.username] not in _text(a.username, "WKSHP-Values")
    shown = wodsync("session", "show", a.id, "--json", "--root", valuelab.root,
                    "--state-dir", tmp_path / "state")
    assert "made [secret]" in shown.stdout, "the hook's output is kept, its token masked"
    assert tokens[a.username] not in shown.stdout
    assert tokens[a.username].encode() not in (tmp_path / "state/wodsync.db").read_bytes()


@root_only
def test_a_hook_that_does_not_write_a_declared_value_fails_the_create_and_frees_the_seat(
        valuelab, ctl):
    with pytest.raises(CreateFailed, match="did not write MLTOK") as caught:
        ctl.sessions.create("WKSHP-Mute", Participant("M", "m@example.org", "X"))
    failed = caught.value.session
    assert failed is not None and failed.state is SessionState.FAILED
    assert not (HOMES / "wodtq" / "wodtq7" / "WKSHP-Mute").exists()
    assert not (valuelab.tmp / "state-hub1" / "seats" / "wodtq7.json").exists(), \
        "the seat is released: no record holds it"
