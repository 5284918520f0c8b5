"""Hooks run as root and are never rendered: values reach them as data. The agent's side (the
environment and the root-only variables file, `agent.hooks`) runs real scripts; the
controller's side (`sessions.seat`) builds real payloads from the example catalog. The CREATEs
on real accounts are `test_sessions.py`'s."""

from __future__ import annotations

import base64
import errno
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wodsync.agent import hooks
from wodsync.agent.run import BASE_PATH
from wodsync.agent.seats import Steps
from wodsync.catalog import load_catalog, validate
from wodsync.render.content import ContentError
from wodsync.secrets import Entry, SecretError, Secrets
from wodsync.sessions import seat

ATTACK = 'x"; id > {pwned}; echo "'
GIT101 = "catalog/workshops/WKSHP-Git101"
SEAT_ENV = {"STUDENT": "student41", "STDID": "41", "WKSHP": "WKSHP-Git101", "SESSION": "s-1",
            "STUDENT_HOME": "/nonexistent/student41"}
# What bash itself adds to the environment it passes on.
SHELL_ADDED = {"PWD", "SHLVL", "_", "OLDPWD"}


def _dump_hook(out: Path) -> str:
    """A hook that copies what it was given (its environment, the variables file, the file's
    and its folder's modes) to `out`."""
    return ("#!/bin/bash\nset -eu\n"
            f"out={out}\n"
            'env -0 > "$out/env"\n'
            'stat -c "%a %u %g" "$WOD_VARIABLES" > "$out/mode"\n'
            'stat -c "%a %u" "$(dirname "$WOD_VARIABLES")" > "$out/folder"\n'
            'cp "$WOD_VARIABLES" "$out/variables.json"\n'
            'printf %s "$WOD_VARIABLES" > "$out/path"\n')


def _payload(tmp_path: Path, script: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "hook_timeout": 30, "env": dict(SEAT_ENV),
            "hooks": {"create": {"path": "scripts/create.sh",
                                 "data": base64.b64encode(script.encode()).decode()}},
            "hook_variables": variables}


def _run(tmp_path: Path, variables: dict[str, Any], script: str | None = None) -> Path:
    out = tmp_path / "seen"
    out.mkdir(exist_ok=True)
    hooks.run_hook(_payload(tmp_path, script or _dump_hook(out), variables), "create", Steps())
    return out


def _env(out: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in (out / "env").read_text().split("\0") if item)
    return {k: v for k, v in pairs if k not in SHELL_ADDED}


# ---- the agent: environment and variables file -------------------------------------------------

def test_the_variables_file_is_root_only_holds_every_value_and_is_gone_after(tmp_path):
    variables = {"GREETING": "hi", "MY-VAR": 3, "FLAG": True, "RATIO": 1.5,
                 "NUL": "a\0b", "UNICODE": "héllo ✓", "BIG": "x" * (100 * 1024)}
    out = _run(tmp_path, variables)
    assert (out / "mode").read_text().split() == ["600", "0", "0"]
    assert (out / "folder").read_text().split() == ["700", "0"]
    path = Path((out / "path").read_text())
    assert path.parent.parent == tmp_path / "state/run", "in the hook's folder under run/"
    assert json.loads((out / "variables.json").read_text()) == variables
    assert not path.exists() and not path.parent.exists(), "removed with the hook's folder"
    assert list((tmp_path / "state/run").iterdir()) == []


def test_only_identifiers_get_a_wod_name_and_the_fixed_environment_wins(tmp_path):
    variables = {"PATH": "/evil", "LD_PRELOAD": "/evil.so", "BASH_ENV": "/evil.sh",
                 "BASH_FUNC_x%%": "() { id; }", "MY-VAR": "dash", "STUDENT": "mallory",
                 "VARIABLES": "/etc/shadow", "N": 3, "B": False, "F": 0.5, "S": "two words",
                 "NUL": "a\0b", "BIG": "x" * (100 * 1024)}
    out = _run(tmp_path, variables)
    env = _env(out)
    assert env == {**SEAT_ENV, "PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root",
                   "WOD_PATH": "/evil", "WOD_LD_PRELOAD": "/evil.so", "WOD_BASH_ENV": "/evil.sh",
                   "WOD_STUDENT": "mallory", "WOD_N": "3", "WOD_B": "false", "WOD_F": "0.5",
                   "WOD_S": "two words", "WOD_VARIABLES": (out / "path").read_text()}
    in_file = json.loads((out / "variables.json").read_text())
    assert in_file["VARIABLES"] == "/etc/shadow" and in_file["BIG"] == variables["BIG"]
    assert in_file["NUL"] == "a\0b" and in_file["BASH_FUNC_x%%"] == "() { id; }"


def test_the_whole_environment_stays_under_its_cap(tmp_path):
    variables = {f"V{n}": "y" * (60 * 1024) for n in range(40)}  # 2.4 MiB in all
    out = _run(tmp_path, variables)
    given = {k for k in _env(out) if k.startswith("WOD_V") and k != "WOD_VARIABLES"}
    assert 0 < len(given) < 40
    assert json.loads((out / "variables.json").read_text()) == variables


def test_a_value_reaches_the_hook_as_the_literal_string(tmp_path):
    pwned = tmp_path / "pwned"
    greeting = ATTACK.format(pwned=pwned)
    out = tmp_path / "seen"
    out.mkdir()
    script = f'#!/bin/bash\necho "$WOD_GREETING" > {out}/greeting\n'
    hooks.run_hook(_payload(tmp_path, script, {"GREETING": greeting}), "create", Steps())
    assert (out / "greeting").read_text() == greeting + "\n"
    assert not pwned.exists()


def test_a_failing_hook_reports_its_exit_and_never_a_value(tmp_path):
    steps = Steps()
    script = "#!/bin/bash\necho out\nexit 3\n"
    with pytest.raises(RuntimeError) as raised:
        hooks.run_hook(_payload(tmp_path, script, {"TOKEN": "tok-s3cr3t"}), "create", steps)
    assert str(raised.value) == "hook create (scripts/create.sh) exited 3"
    assert steps.outputs == [{"hook": "create", "status": 3, "output": "out\n"}]


def test_a_script_another_fork_holds_open_for_writing_runs_once_the_fork_lets_go(tmp_path):
    """The agent makes seats in threads: a fork in one can carry the write descriptor of a
    script another just wrote until its child execs, and the exec of the script fails with
    ETXTBSY meanwhile. The hook waits for the descriptor to go; one held for good still fails."""
    script = tmp_path / "create.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o700)
    held = os.open(script, os.O_WRONLY)
    threading.Timer(0.1, os.close, [held]).start()
    done = hooks._spawn(str(script), str(tmp_path), {"PATH": BASE_PATH}, 10)
    assert done.stdout == b"ran\n"
    held = os.open(script, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as refused:
            hooks._spawn(str(script), str(tmp_path), {"PATH": BASE_PATH}, 10)
        assert refused.value.errno == errno.ETXTBSY
    finally:
        os.close(held)


def test_a_hook_the_controller_could_not_prepare_fails_naming_why(tmp_path):
    payload = {"state_dir": str(tmp_path / "state"), "env": dict(SEAT_ENV),
               "hooks": {"reset": {"path": "scripts/reset.sh",
                                   "error": "secret T is not granted to workshop W"}}}
    with pytest.raises(RuntimeError, match=r"hook reset \(scripts/reset.sh\) was not run: "
                                           "secret T is not granted to workshop W"):
        hooks.run_hook(payload, "reset", Steps())


# ---- the controller: what a payload carries -----------------------------------------------------

SECRETS = Secrets(env={"HUB_EMEA_TOKEN": "hub-token"}, entries={
    "GIT_TOKEN": Entry("git-s3cr3t", frozenset({"WKSHP-Git101"})),
    "OTHER_TOKEN": Entry("other-s3cr3t", frozenset({"WKSHP-Python101"}))})
RAW_HOOK = b'#!/bin/bash\necho "{{ GREETING }}" > /tmp/greeting\n'


def _session(seat_no: int = 41, password: str = "Pass-w0rd") -> Any:
    return SimpleNamespace(
        id="s-1", workshop="WKSHP-Git101", host="hub-emea", seat=seat_no,
        username=f"student{seat_no}", password=password, email="a@example.org", name="A",
        company="ACME", location="emea", duration_hours=1.0, created_at=datetime.now(UTC),
        revision="a" * 40)


@pytest.fixture
def git101(repo):
    """The example Git101 with variables of every kind, a granted and a foreign secret, and
    a create hook holding Jinja that must reach the host as it is."""
    repo.replace(f"{GIT101}/workshop.yaml", "kernels: [python3]",
                 "kernels: [python3]\nvarpass: true\nvariables:\n"
                 f"  GREETING: '{ATTACK.format(pwned='/tmp/pwned')}'\n  MY-VAR: 3\n"
                 "  TOKEN: {secret: GIT_TOKEN}\n")
    repo.write("catalog/variables.yaml", repo.read("catalog/variables.yaml")
               + "SHARED: {secret: OTHER_TOKEN}\n")
    repo.write(f"{GIT101}/scripts/create.sh", RAW_HOOK)
    return repo


def test_hooks_travel_as_the_repository_holds_them_with_the_seat_values(git101):
    catalog = load_catalog(git101.root)
    payload = seat.create_payload(catalog, _session(), SECRETS)
    assert base64.b64decode(payload["hooks"]["create"]["data"]) == RAW_HOOK, "never rendered"
    assert base64.b64decode(payload["hooks"]["create"]["data"]) == (
        git101.path(f"{GIT101}/scripts/create.sh").read_bytes())
    assert not {f["path"] for f in payload["files"]} & {"scripts/create.sh", "scripts/reset.sh"}
    values = payload["hook_variables"]
    assert values["GREETING"] == ATTACK.format(pwned="/tmp/pwned")
    assert values["MY-VAR"] == 3 and values["TOKEN"] == "git-s3cr3t"
    assert values["BRANDING"] == "WoD Example" and values["WODBEFQDN"] == "hub-emea.wod.example.org"
    assert (values["STDID"], values["STUDENT"], values["WKSHP"], values["MODEWS"],
            values["PASSSTU"]) == (41, "student41", "WKSHP-Git101", "WKSHP", "Pass-w0rd")
    assert "SHARED" not in values, "a secret not granted to the workshop never reaches its hook"
    assert "other-s3cr3t" not in json.dumps(payload)
    assert "hostvars" not in values and "inventory_hostname" not in values


def test_the_end_of_a_session_sends_raw_hooks_and_never_the_password(git101):
    git101.write(f"{GIT101}/scripts/reset.sh", RAW_HOOK)
    catalog = load_catalog(git101.root)
    payload = seat.end_payload(catalog, _session(), SECRETS, "reset")
    assert list(payload["hooks"]) == ["reset"]
    assert base64.b64decode(payload["hooks"]["reset"]["data"]) == RAW_HOOK
    values = payload["hook_variables"]
    assert "PASSSTU" not in values and "Pass-w0rd" not in json.dumps(payload)
    assert values["TOKEN"] == "git-s3cr3t" and "SHARED" not in values
    purge = seat.end_payload(catalog, _session(), SECRETS, "purge")
    assert purge["hooks"] == {} and "git-s3cr3t" not in json.dumps(purge), \
        "a PURGE runs no hook, so it carries no value"


def test_passstu_only_for_varpass_and_no_values_without_hooks(git101):
    git101.replace(f"{GIT101}/workshop.yaml", "varpass: true\n", "")
    catalog = load_catalog(git101.root)
    payload = seat.create_payload(catalog, _session(), SECRETS)
    assert "PASSSTU" not in payload["hook_variables"]
    git101.replace(f"{GIT101}/workshop.yaml", "hooks:\n  create: scripts/create.sh\n"
                   "  reset: scripts/reset.sh\n", "")
    catalog = load_catalog(git101.root)
    payload = seat.create_payload(catalog, _session(), SECRETS)
    assert payload["hooks"] == {} and "hook_variables" not in payload, \
        "secrets travel only where a hook runs"
    assert seat.end_payload(catalog, _session(), SECRETS, "reset")["hooks"] == {}


def test_a_hook_behind_a_link_fails_create_and_is_reported_at_the_end(git101, tmp_path):
    """A link that appears after the catalog was loaded (a race, not a typo validate saw)."""
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\necho a controller file\n")
    catalog = load_catalog(git101.root)
    for name in ("create", "reset"):
        hook = git101.path(f"{GIT101}/scripts/{name}.sh")
        hook.unlink()
        hook.symlink_to(outside)
    with pytest.raises(ContentError, match=r"hook create: .*scripts/create\.sh"):
        seat.create_payload(catalog, _session(), SECRETS)
    ended = seat.end_payload(catalog, _session(), SECRETS, "reset")
    assert ended["hooks"] == {"reset": {"path": "scripts/reset.sh",
                                        "error": ended["hooks"]["reset"]["error"]}}
    assert "scripts/reset.sh" in ended["hooks"]["reset"]["error"]
    assert "hook_variables" not in ended, "the seat is released, the hook reported as not run"


def test_a_secret_no_longer_granted_fails_create_and_is_reported_at_the_end(git101):
    catalog = load_catalog(git101.root)
    revoked = Secrets(env={"HUB_EMEA_TOKEN": "hub-token"},
                      entries={"GIT_TOKEN": Entry("git-s3cr3t", frozenset({"WKSHP-Other"}))})
    with pytest.raises(SecretError, match="secret GIT_TOKEN is not granted to workshop "
                                          "WKSHP-Git101"):
        seat.create_payload(catalog, _session(), revoked)
    ended = seat.end_payload(catalog, _session(), revoked, "reset")
    assert ended["hooks"]["reset"]["error"] == ("secret GIT_TOKEN is not granted to workshop "
                                                "WKSHP-Git101")
    assert "git-s3cr3t" not in json.dumps(ended)


def test_render_and_preview_leave_hooks_out(git101, cli, tmp_path):
    git101.write(f"{GIT101}/scripts/create.sh", "#!/bin/bash\necho \"$WOD_GREETING\"\n")
    git101.write(f"{GIT101}/scripts/helper.sh", "#!/bin/bash\necho {{ STUDENT }}\n")
    out = tmp_path / "out"
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("secrets:\n  GIT_TOKEN: {value: t, workshops: [WKSHP-Git101]}\n"
                       "  OTHER_TOKEN: {value: o, workshops: [WKSHP-Python101]}\n")
    secrets.chmod(0o600)
    done = cli("render", "--root", git101.root, "WKSHP-Git101", "--student", 41, "--out", out,
               "--secrets", secrets)
    assert done.exit_code == 0, done.output
    assert (out / "scripts/helper.sh").read_text() == "#!/bin/bash\necho student41\n"
    assert not (out / "scripts/create.sh").exists() and not (out / "scripts/reset.sh").exists()
    done = cli("preview", "--root", git101.root, "--out", tmp_path / "preview")
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "preview/WKSHP-Git101/scripts/create.sh").exists()
    assert (tmp_path / "preview/WKSHP-Git101/scripts/helper.sh").exists()


def test_a_catalog_whose_variable_holds_shell_validates_its_hooks_read_it_as_data(git101):
    git101.write(f"{GIT101}/scripts/create.sh", "#!/bin/bash\necho \"$WOD_GREETING\"\n")
    _, found = validate(git101.root)
    assert [d for d in found if d.severity == "error"] == []
