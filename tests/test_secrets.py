"""Secrets scoped to what may see them: a workshop gets only the secrets granted to it, the
environment serves only the controller's own secrets, the hub token reaches only the hub's
root-only configuration, and CI names a refused secret without its value."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from wodsync.catalog import validate
from wodsync.catalog.models import SecretRef
from wodsync.demo.repo import write_secrets
from wodsync.engine import render_system
from wodsync.engine.desired import DesiredContext
from wodsync.render import content
from wodsync.secrets import SecretError, Secrets

from conftest import PROJECT

PY = "catalog/workshops/WKSHP-Python101"
API = "catalog/workshops/WKSHP-API101"
VALUE = "s3cr3t-value-never-printed"

SECRETS = f"""\
secrets:
  API101_TOKEN:
    value: "{VALUE}"
    workshops: [WKSHP-API101]
  HUB_EMEA_TOKEN:
    value: from-file-emea
    hosts: [hub-emea]
  HUB_AMER_TOKEN:
    value: from-file-amer
    hosts: [hub-amer]
  SHARED_KEY:
    value: shared-{VALUE}
    workshops: [WKSHP-API101]
    hosts: [hub-emea]
"""


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(SECRETS)
    return path


def _render(repo, key: str, secrets: Secrets) -> dict[str, str]:
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    seat = catalog.workshops[key].seats.first
    files = content.seat_content(catalog, key, seat, "Pw12345678", "hub-emea", secrets)
    return {f.path: f.data.decode() for f in files}


def _refusal(call: Callable[..., object], *args: object) -> str:
    """The message of the SecretError `call(*args)` raises."""
    with pytest.raises(SecretError) as caught:
        call(*args)
    return str(caught.value)


def _add_variable(repo, folder: str, line: str) -> None:
    text = repo.read(f"{folder}/workshop.yaml")
    repo.write(f"{folder}/workshop.yaml", text + f"variables:\n  {line}\n")


def _use_in_notebook(repo, folder: str, name: str, expression: str) -> None:
    cell = {"cell_type": "markdown", "metadata": {}, "source": [expression]}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    repo.write(f"{folder}/{name}", json.dumps(nb) + "\n")


# -- Workshops ---------------------------------------------------------------------------------


def test_workshop_naming_another_workshops_secret_is_refused_at_render(repo, secrets_file, cli,
                                                                       tmp_path):
    _add_variable(repo, PY, "STOLEN: {secret: API101_TOKEN}")
    _use_in_notebook(repo, PY, "3-Steal.ipynb", "{{ STOLEN }}")
    assert _refusal(_render, repo, "WKSHP-Python101", Secrets.load(secrets_file)) == \
        "secret API101_TOKEN is not granted to workshop WKSHP-Python101"
    out = tmp_path / "out"
    result = cli("render", "WKSHP-Python101", "--root", repo.root, "--student", "1",
                 "--out", out, "--secrets", secrets_file)
    assert result.exit_code == 1
    assert "secret API101_TOKEN is not granted to workshop WKSHP-Python101" in result.output
    assert VALUE not in result.output and not out.exists()


def test_workshop_naming_a_hub_token_is_refused_even_when_the_environment_holds_it(
        repo, secrets_file, monkeypatch):
    monkeypatch.setenv("HUB_EMEA_TOKEN", "from-env-emea")
    _add_variable(repo, PY, "STOLEN: {secret: HUB_EMEA_TOKEN}")
    assert _refusal(_render, repo, "WKSHP-Python101", Secrets.load(secrets_file)) == \
        "secret HUB_EMEA_TOKEN is not granted to workshop WKSHP-Python101"


@pytest.mark.parametrize("name", ["WODT_CONTROLLER_ONLY", "WODSYNC_API_TOKEN"])
def test_workshop_naming_an_environment_variable_gets_nothing_from_the_environment(
        repo, secrets_file, monkeypatch, name):
    monkeypatch.setenv(name, "from-the-controllers-environment")
    _add_variable(repo, PY, f"FROM_ENV: {{secret: {name}}}")
    _use_in_notebook(repo, PY, "3-Env.ipynb", "{{ FROM_ENV }}")
    assert _refusal(_render, repo, "WKSHP-Python101", Secrets.load(secrets_file)) == \
        f"secret {name} is not set (looked in {secrets_file})"
    monkeypatch.delenv("WODSYNC_SECRETS", raising=False)
    assert _refusal(_render, repo, "WKSHP-Python101", Secrets.load()).startswith(
        f"secret {name} is not set (no secrets file")


def test_granted_secret_renders_into_the_workshop(repo, secrets_file):
    files = _render(repo, "WKSHP-API101", Secrets.load(secrets_file))
    assert f"Bearer {VALUE}" in files["scripts/login.sh"]


def _global_secret(repo) -> None:
    text = repo.read("catalog/variables.yaml")
    repo.write("catalog/variables.yaml", text + "SHARED: {secret: SHARED_KEY}\n")


def test_global_secret_reaches_only_granted_workshops_and_only_where_used(repo, secrets_file):
    _global_secret(repo)
    secrets = Secrets.load(secrets_file)
    assert f"shared-{VALUE}" not in "".join(_render(repo, "WKSHP-Python101", secrets).values())
    _use_in_notebook(repo, API, "3-Shared.ipynb", "{{ SHARED }}")
    assert f"shared-{VALUE}" in _render(repo, "WKSHP-API101", secrets)["3-Shared.ipynb"]
    _use_in_notebook(repo, PY, "3-Shared.ipynb", "{{ SHARED }}")
    assert _refusal(_render, repo, "WKSHP-Python101", secrets) == \
        "3-Shared.ipynb: secret SHARED_KEY is not granted to workshop WKSHP-Python101"


@pytest.mark.parametrize("expression", [
    "{{ hostvars[inventory_hostname]['SHARED'] }}",
    "{% if SHARED %}yes{% endif %}",
    "{{ SHARED ~ '' }}",
    "{% for c in SHARED %}{{ c }}{% endfor %}",
])
def test_withheld_global_secret_is_refused_however_a_template_reaches_it(repo, secrets_file,
                                                                         expression):
    _global_secret(repo)
    _use_in_notebook(repo, PY, "3-Shared.ipynb", expression)
    assert _refusal(_render, repo, "WKSHP-Python101", Secrets.load(secrets_file)) == \
        "3-Shared.ipynb: secret SHARED_KEY is not granted to workshop WKSHP-Python101"


def test_withheld_global_secret_falls_back_to_a_default_without_its_value(repo, secrets_file):
    _global_secret(repo)
    _use_in_notebook(repo, PY, "3-Shared.ipynb", "{{ SHARED | default('none') }}")
    files = _render(repo, "WKSHP-Python101", Secrets.load(secrets_file))
    assert '"none"' in files["3-Shared.ipynb"] and VALUE not in files["3-Shared.ipynb"]


# -- Hosts and the hub token -------------------------------------------------------------------


def _host_files(repo, secrets: Secrets, host: str = "hub-emea") -> dict[str, bytes]:
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    ctx = DesiredContext(catalog, host, secrets)
    return {path: f.data for path, f in render_system.system_files(ctx).items()}


def test_hub_token_reaches_the_hub_configuration_and_no_other_system_file(repo, secrets_file):
    repo.write("templates/skel/.bashrc.j2", "export TOKEN='{{ hub.token }}'\n")
    repo.replace("hosts/hub-emea.yaml", "hub:\n", "hub:\n  service: systemd\n")
    repo.write("templates/hub/jupyterhub.service.j2",
               repo.read("templates/hub/jupyterhub.service.j2") + "# {{ hub.token }}\n")
    files = _host_files(repo, Secrets.load(secrets_file))
    assert "from-file-emea" in files["/etc/jupyterhub/jupyterhub_config.py"].decode()
    assert files["/etc/skel/.bashrc"] == b"export TOKEN=''\n"
    unit = files["/etc/systemd/system/jupyterhub.service"].decode()
    assert "from-file-emea" not in unit and unit.endswith("# \n")


def test_hub_token_comes_from_the_environment_before_the_file(repo, secrets_file, monkeypatch):
    monkeypatch.setenv("HUB_EMEA_TOKEN", "from-env-emea")
    files = _host_files(repo, Secrets.load(secrets_file))
    assert "from-env-emea" in files["/etc/jupyterhub/jupyterhub_config.py"].decode()


def test_hub_token_granted_to_another_host_is_refused(repo, secrets_file):
    repo.replace("hosts/hub-emea.yaml", "{secret: HUB_EMEA_TOKEN}", "{secret: HUB_AMER_TOKEN}")
    assert _refusal(_host_files, repo, Secrets.load(secrets_file)) == \
        "hub token of host hub-emea: secret HUB_AMER_TOKEN is not granted to host hub-emea"


def test_hub_token_never_comes_from_an_environment_variable_not_named_as_one(
        repo, secrets_file, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "controller-cloud-key")
    repo.replace("hosts/hub-emea.yaml", "{secret: HUB_EMEA_TOKEN}",
                 "{secret: AWS_SECRET_ACCESS_KEY}")
    assert _refusal(_host_files, repo, Secrets.load(secrets_file)) == \
        ("hub token of host hub-emea: secret AWS_SECRET_ACCESS_KEY is not set (looked in "
         f"{secrets_file}); the environment serves hub tokens only under names like "
         "HUB_<NAME>_TOKEN")


def test_system_template_sees_only_secrets_granted_to_its_host(repo, secrets_file):
    _global_secret(repo)
    repo.write("templates/skel/.bashrc.j2", "export SHARED='{{ SHARED }}'\n")
    files = _host_files(repo, Secrets.load(secrets_file))
    assert files["/etc/skel/.bashrc"] == f"export SHARED='shared-{VALUE}'\n".encode()
    assert _refusal(_host_files, repo, Secrets.load(secrets_file), "hub-amer") == \
        "templates/skel/.bashrc.j2: secret SHARED_KEY is not granted to host hub-amer"


# -- The controller's own secrets --------------------------------------------------------------


def test_controller_secrets_come_from_the_environment_then_the_file(tmp_path, monkeypatch):
    path = tmp_path / "secrets.yaml"
    path.write_text("secrets:\n  WODSYNC_WEBHOOK_SECRET: {value: hook-from-file}\n")
    monkeypatch.setenv("WODSYNC_API_TOKEN", "api-from-env")
    monkeypatch.setenv("WODSYNC_WEBHOOK_SECRET", "")
    monkeypatch.delenv("WODSYNC_FACTS_TOKEN", raising=False)
    secrets = Secrets.load(path)
    assert secrets.controller("WODSYNC_API_TOKEN") == "api-from-env"
    assert secrets.controller("WODSYNC_WEBHOOK_SECRET") == "hook-from-file"
    assert secrets.controller("WODSYNC_FACTS_TOKEN") is None
    monkeypatch.setenv("HOME_TOKEN", "x")
    assert _refusal(Secrets.load(path).controller, "HOME_TOKEN").startswith(
        "HOME_TOKEN is not one of the controller's own secrets")


def test_hub_token_of_a_host_from_the_environment(monkeypatch):
    monkeypatch.setenv("HUB_EMEA_TOKEN", "env-token")
    assert Secrets().hub_token("hub-emea", SecretRef(secret="HUB_EMEA_TOKEN")) == "env-token"


# -- The file ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "message"), [
    ("API101_TOKEN: abc\nHUB_EMEA_TOKEN: def\n", 1, "old flat format (NAME: value)"),
    ("secret:\n  A: {value: x}\n", 1, "unknown key 'secret' (did you mean 'secrets'?)"),
    ("secrets:\n  A:\n    value: x\n    workshop: [WKSHP-A]\n", 4,
     "secret A: unknown key 'workshop' (did you mean 'workshops'?)"),
    ("secrets:\n  A:\n    value: 12345\n", 3, "secret A value must be a string (quote it)"),
    ("secrets:\n  A:\n    workshops: [WKSHP-A]\n", 2, "secret A has no value"),
    ("secrets:\n  A: plain\n", 2, "secret A: expected a mapping"),
    ("secrets:\n  A:\n    value: x\n    workshops: WKSHP-A\n", 4,
     "secret A: workshops is a list"),
    ("secrets:\n  A:\n    value: x\n    workshops: [API101]\n", 4,
     "secret A: workshops entry 'API101' must match"),
    ("secrets:\n  A:\n    value: x\n    hosts: [hub emea]\n", 4,
     "secret A: hosts entry 'hub emea' must match"),
    ("secrets:\n  A-B: {value: x}\n", 2, "secret name 'A-B' must match"),
    ("secrets:\n  A: {value: x}\n  A: {value: y}\n", 3, "duplicate key"),
    ("- A\n", 1, "a secrets file is a mapping"),
    ("a: [b\n", 2, "is not valid YAML"),
])
def test_invalid_secrets_files_name_the_file_line_and_problem(tmp_path, text, line, message):
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    with pytest.raises(SecretError) as caught:
        Secrets.load(path)
    assert str(caught.value).startswith(f"secrets file {path}")
    assert f"line {line}: " in str(caught.value) and message in str(caught.value)


def test_old_flat_format_error_says_how_to_convert(tmp_path, repo, cli):
    path = tmp_path / "secrets.yaml"
    path.write_text("API101_TOKEN: abc\n")
    result = cli("render", "WKSHP-API101", "--root", repo.root, "--student", "71",
                 "--out", tmp_path / "out", "--secrets", path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "granted every secret to everyone" in result.output
    assert "secrets:\n    NAME:\n      value:" in result.output


def test_secrets_module_imports_before_the_catalog():
    """The daemon and the CLI may import it first: the catalog's checks import it back."""
    done = subprocess.run([sys.executable, "-c", "import wodsync.secrets"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_no_value_appears_in_a_repr(secrets_file, monkeypatch, repo):
    monkeypatch.setenv("HUB_EMEA_TOKEN", "env-token-in-no-repr")
    catalog, _ = validate(repo.root)
    secrets = Secrets.load(secrets_file)
    text = repr(DesiredContext(catalog, "hub-emea", secrets)) + repr(secrets.entries)
    assert VALUE not in text and "env-token-in-no-repr" not in text


def test_empty_secrets_file_holds_no_secret(tmp_path):
    path = tmp_path / "secrets.yaml"
    path.write_text("# nothing yet\n")
    assert Secrets.load(path).entries == {}


# -- CI: validate --secrets --------------------------------------------------------------------


def test_validate_with_secrets_warns_naming_only_the_secret_and_workshop(repo, secrets_file,
                                                                         cli):
    _add_variable(repo, PY, "STOLEN: {secret: HUB_AMER_TOKEN}")
    result = cli("validate", "--root", repo.root, "--secrets", secrets_file,
                 "--format", "github")
    assert result.exit_code == 0, result.output
    line = repo.line_of(f"{PY}/workshop.yaml", "STOLEN")
    assert (f"::warning file={PY}/workshop.yaml,line={line},col=11,"
            "title=warning[secret-not-granted]::secret HUB_AMER_TOKEN is not granted to "
            "workshop WKSHP-Python101") in result.stdout
    assert "from-file-amer" not in result.output and "hub-amer" not in result.output
    assert result.stdout.count("secret-not-granted") == 1


def test_validate_with_secrets_warns_where_an_inherited_secret_is_used(repo, secrets_file, cli):
    _global_secret(repo)
    _use_in_notebook(repo, PY, "3-Shared.ipynb", "{{ SHARED }}")
    repo.write("templates/skel/.bashrc.j2", "# {{ BRANDING }}\nexport S='{{ SHARED }}'\n")
    result = cli("validate", "--root", repo.root, "--secrets", secrets_file)
    assert result.exit_code == 0, result.output
    warnings = [w for w in result.stdout.splitlines() if "secret-not-granted" in w]
    assert warnings == [
        f"{PY}/3-Shared.ipynb:1:1: warning[secret-not-granted]: secret SHARED_KEY is not "
        "granted to workshop WKSHP-Python101",
        "templates/skel/.bashrc.j2:2:1: warning[secret-not-granted]: secret SHARED_KEY is not "
        "granted to host hub-amer",
    ]
    assert VALUE not in result.output


def test_validate_without_secrets_says_nothing_about_grants(repo, cli):
    _add_variable(repo, PY, "STOLEN: {secret: HUB_AMER_TOKEN}")
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 0 and "secret-not-granted" not in result.output


# -- The demo ----------------------------------------------------------------------------------


def test_demo_secrets_file_grants_each_secret_to_what_uses_it(tmp_path):
    catalog, _ = validate(PROJECT)
    (tmp_path / "secrets.yaml").write_text("API101_TOKEN: kept-from-an-older-demo\n")
    path = write_secrets(tmp_path, catalog)
    secrets = Secrets.load(path)
    assert secrets.entries["API101_TOKEN"].value == "kept-from-an-older-demo"
    assert secrets.entries["API101_TOKEN"].workshops == {"WKSHP-API101"}
    assert secrets.entries["HUB_EMEA_TOKEN"].hosts == {"hub-emea"}
    assert not secrets.entries["HUB_EMEA_TOKEN"].workshops
    assert path.stat().st_mode & 0o077 == 0
    assert Secrets.load(write_secrets(tmp_path, catalog)).entries == secrets.entries
