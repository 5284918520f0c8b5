"""The command line: output formats, exit codes, schema, render, scaffold, demo."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import PROJECT

PY = "catalog/workshops/WKSHP-Python101/workshop.yaml"


def _break(repo):
    repo.replace(PY, "capacity: 40", "capcity: 40")
    repo.replace("hosts/hub-emea.yaml", "port: 22", "port: 70000")


def test_validate_ok_exit_0(repo, cli):
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 0 and result.stdout == ""


def test_validate_text_format_lists_all_errors_sorted(repo, cli):
    _break(repo)
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines == sorted(lines, key=lambda s: (s.split(":")[0], int(s.split(":")[1])))
    assert f"{PY}:{repo.line_of(PY, 'capcity')}:1: error[extra_forbidden]: unknown key " \
           "'capcity' (did you mean 'capacity'?)" in lines
    port_line = repo.line_of("hosts/hub-emea.yaml", "port:")
    assert f"hosts/hub-emea.yaml:{port_line}:7: error[less_than_equal]: port: Input should be " \
           "less than or equal to 65535" in lines


def test_validate_json_format(repo, cli):
    _break(repo)
    result = cli("validate", "--root", repo.root, "--format", "json")
    assert result.exit_code == 1
    items = json.loads(result.stdout)
    assert {"path", "line", "col", "code", "message", "severity"} == set(items[0])
    assert {i["path"] for i in items} == {PY, "hosts/hub-emea.yaml"}


def test_validate_github_format(repo, cli):
    _break(repo)
    result = cli("validate", "--root", repo.root, "--format", "github")
    assert result.exit_code == 1
    line = next(ln for ln in result.stdout.splitlines() if "capcity" in ln)
    assert line.startswith(f"::error file={PY},line={repo.line_of(PY, 'capcity')},col=1,"
                           "title=error[extra_forbidden]::unknown key 'capcity'")


def test_real_console_script_exit_codes(repo):
    ok = subprocess.run([sys.executable, "-m", "wodsync", "validate", "--root", str(repo.root)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    _break(repo)
    bad = subprocess.run([sys.executable, "-m", "wodsync", "validate", "--root", str(repo.root)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "3 errors" in bad.stderr


def test_committed_schemas_are_current(cli):
    assert cli("schema", "--check", "--root", PROJECT).exit_code == 0


def test_schema_check_detects_stale_and_write_fixes(repo, cli):
    repo.write("schemas/workshop.schema.json", "{}\n")
    result = cli("schema", "--check", "--root", repo.root)
    assert result.exit_code == 1 and "workshop.schema.json: stale" in result.stdout
    assert cli("schema", "--root", repo.root).exit_code == 0
    assert cli("schema", "--check", "--root", repo.root).exit_code == 0


def test_schema_matches_catalog_files(repo):
    import jsonschema
    from ruamel.yaml import YAML

    schema = json.loads(repo.read("schemas/workshop.schema.json"))
    data = YAML(typ="safe").load(repo.read(PY))
    jsonschema.validate(data, schema)
    data["capcity"] = 3
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        assert "capcity" in exc.message
    else:
        raise AssertionError("schema accepted an unknown key")


def test_render_one_seat(repo, cli, tmp_path, monkeypatch):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("secrets:\n  API101_TOKEN: {value: tok-123, workshops: [WKSHP-API101]}\n")
    monkeypatch.setenv("WODSYNC_SECRETS", str(secrets))
    out = tmp_path / "out"
    result = cli("render", "WKSHP-API101", "--root", repo.root, "--student", "75",
                 "--out", out, "--password", "Pw12345678")
    assert result.exit_code == 0, result.output
    nb = json.loads((out / "1-REST-Basics.ipynb").read_text())
    code = "".join(nb["cells"][1]["source"])
    assert "('student75', 'Pw12345678')" in code
    script = out / "scripts/login.sh"
    assert "Bearer tok-123" in script.read_text() and script.stat().st_mode & 0o111
    assert not (out / "workshop.yaml").exists()


def test_render_refuses_seat_outside_range_and_missing_secret(repo, cli, tmp_path):
    out = tmp_path / "out"
    result = cli("render", "WKSHP-API101", "--root", repo.root, "--student", "3", "--out", out)
    assert result.exit_code == 1 and "outside WKSHP-API101's seats 71-100" in result.output
    result = cli("render", "WKSHP-API101", "--root", repo.root, "--student", "71", "--out", out)
    assert result.exit_code == 1 and "secret API101_TOKEN is not set" in result.output
    assert not out.exists()


def test_render_secret_from_file(repo, cli, tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("secrets:\n  API101_TOKEN:\n    value: from-file\n"
                       "    workshops: [WKSHP-API101]\n")
    out = tmp_path / "out"
    result = cli("render", "WKSHP-API101", "--root", repo.root, "--student", "71", "--out", out,
                 "--secrets", secrets)
    assert result.exit_code == 0 and "from-file" in (out / "scripts/login.sh").read_text()


def test_new_workshop_scaffold_validates_and_takes_free_seats(repo, cli):
    result = cli("new", "workshop", "WKSHP-Rust101", "--root", repo.root, "--seats", "25",
                 "--location", "emea")
    assert result.exit_code == 0, result.output
    assert cli("validate", "--root", repo.root).exit_code == 0
    text = repo.read("catalog/workshops/WKSHP-Rust101/workshop.yaml")
    assert text.startswith("# yaml-language-server: $schema=../../../schemas/workshop.schema")
    assert "first: 101" in text and "last: 125" in text   # emea uses seats 1-100
    again = cli("new", "workshop", "WKSHP-Rust101", "--root", repo.root)
    assert again.exit_code == 1 and "already exists" in again.output


def test_new_workshop_refuses_bad_key(repo, cli):
    result = cli("new", "workshop", "Rust;reboot", "--root", repo.root)
    assert result.exit_code == 1 and "WKSHP-<Name>" in result.output


def test_preview_renders_every_workshop(repo, cli, tmp_path):
    result = cli("preview", "--root", repo.root, "--out", tmp_path / "demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["workshops"]) == {"WKSHP-API101", "WKSHP-Git101", "WKSHP-Python101",
                                      "WKSHP-Regex-Challenge"}
    login = (tmp_path / "demo/WKSHP-API101/scripts/login.sh").read_text()
    assert "<secret API101_TOKEN>" in login
