"""Template checks: undefined names at their line, syntax, notebook JSON, WoD compatibility."""

from __future__ import annotations

import json
import shutil

import pytest

from wodsync.catalog import validate
from wodsync.catalog.loader import read_template
from wodsync.catalog.repofs import RepoFileError

from helpers import errors_of, only_error

PYDIR = "catalog/workshops/WKSHP-Python101"
NB = f"{PYDIR}/1-Python-Basics.ipynb"


def _notebook(*sources: str) -> str:
    cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": [s]} for s in sources]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                      indent=1) + "\n"


def test_undefined_variable_at_its_line_and_column(repo):
    repo.write(NB, _notebook("print('{{ STUDENT }}')", "print('{{ NOPE }}')"))
    d = only_error(repo.root, "undefined-variable")
    line = repo.line_of(NB, "NOPE")
    assert (d.path, d.line) == (NB, line)
    assert d.col == repo.read(NB).splitlines()[line - 1].index("NOPE") + 1
    assert "'NOPE'" in d.message


def test_variable_defined_on_one_host_only_is_reported_for_the_other(repo):
    # Python101 runs in emea and fails over to amer: a host variable must exist on both.
    repo.replace("hosts/hub-emea.yaml", "variables:", "variables:\n  EMEA_ONLY: yes-emea")
    repo.write(NB, _notebook("print('{{ EMEA_ONLY }}')"))
    d = only_error(repo.root, "undefined-variable")
    assert "hub-amer" in d.message


def test_workshop_and_secret_variables_are_defined(repo):
    repo.replace(f"{PYDIR}/workshop.yaml", "kernels: [python3]",
                 "kernels: [python3]\nvariables:\n  PORT: 8080\n  KEY: {secret: PY_KEY}")
    repo.write(NB, _notebook("print({{ PORT }}, '{{ KEY }}', '{{ WODBEFQDN }}', {{ STDID }})"))
    assert errors_of(repo.root) == []


def test_syntax_error_is_located(repo):
    repo.write(f"{PYDIR}/broken.sh", "echo ok\necho {{ STUDENT\n")
    d = only_error(repo.root, "template-syntax")
    assert (d.path, d.line) == (f"{PYDIR}/broken.sh", 2)


GIT = "catalog/workshops/WKSHP-Git101"
HOOK = f"{GIT}/scripts/create.sh"


def test_jinja_in_a_hook_is_a_located_error_and_never_rendered(repo, cli):
    repo.write(HOOK, "#!/bin/bash\nset -eu\necho \"{{ GREETING }}\" > /tmp/greeting\n")
    d = only_error(repo.root, "hook-template")
    assert (d.path, d.line, d.col) == (HOOK, 3, 7), "no undefined-variable: not rendered"
    assert d.message == ("hooks are not rendered: `{{ GREETING }}` reaches the script as "
                         '$WOD_GREETING (write "$WOD_GREETING")')
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 1
    assert f"{HOOK}:3:7: error[hook-template]" in result.output


def test_every_jinja_form_in_a_hook_is_reported_where_it_stands(repo):
    repo.write(f"{GIT}/scripts/reset.sh",
               "#!/bin/bash\n{% if STDID %}\nrm -rf /srv/git/x  {# why #}\n{% endif %}\n")
    found = errors_of(repo.root)
    assert [(d.code, d.line, d.col) for d in found] == [
        ("hook-template", 2, 1), ("hook-template", 3, 20), ("hook-template", 4, 1)]
    assert "`{% if STDID %}` would stay in the script as written" in found[0].message


def test_shell_and_go_templates_in_a_hook_are_not_jinja(repo):
    hook = ('#!/bin/bash\narr=(a b)\necho "${#arr[@]} ${#STUDENT}"\n'
            "docker inspect --format '{{.State.Running}}' x || true\n"
            "docker ps --format '{{ $x := .ID }}{{ $x }}' || true\n")
    repo.write(HOOK, hook)
    assert errors_of(repo.root) == []
    repo.write(f"{GIT}/scripts/student.sh", hook)  # a student's script is still a template
    assert only_error(repo.root, "template-syntax").path == f"{GIT}/scripts/student.sh"


def test_files_not_rendered_are_not_checked(repo):
    repo.write(f"{PYDIR}/notes.txt", "{{ anything goes here")
    repo.write(f"{PYDIR}/lab.yml", "{{ NOT_RENDERED }}")
    assert errors_of(repo.root) == []


def test_rendered_notebook_must_be_json(repo):
    repo.write(NB, '{"cells": [], "metadata": {}, "nbformat": 4, {{ STDID }}}\n')
    d = only_error(repo.root, "notebook-json")
    assert d.path == NB and d.line == 1


def test_rendered_notebook_must_be_a_notebook(repo):
    repo.write(NB, '{"hello": "{{ STUDENT }}"}\n')
    assert only_error(repo.root, "notebook-json").path == NB


def test_wod_escapes_and_raw_blocks_render(repo):
    repo.write(NB, _notebook("x = \"{{ '{{' }} literal {{ '}}' }}\"",
                             "{% raw %}{{ .metadata.name }}{% endraw %}"))
    assert errors_of(repo.root) == []


def test_wod_hostvars_lookup_of_workshop_variables(repo):
    repo.replace(f"{PYDIR}/workshop.yaml", "kernels: [python3]",
                 "kernels: [python3]\nvariables:\n  IP: 10.0.0.9")
    repo.write(NB, _notebook("ip = '{{ hostvars[inventory_hostname]['IP-WKSHP-Python101'] }}'"))
    assert errors_of(repo.root) == []
    repo.write(NB, _notebook("ip = '{{ hostvars[inventory_hostname]['IP-WKSHP-Other'] }}'"))
    d = only_error(repo.root, "undefined-variable")
    assert "IP-WKSHP-Other" in d.message and d.line == repo.line_of(NB, "IP-WKSHP-Other")


def test_modews_follows_session_type(repo):
    repo.write(NB, _notebook("{% if MODEWS not in ('WKSHP', 'CHLG') %}{{ fail_here }}{% endif %}"))
    # fail_here is only referenced, so it must be declared: the static check catches it.
    assert only_error(repo.root, "undefined-variable").path == NB


def test_home_is_the_seats_home_under_its_pools_home_root(repo, cli, tmp_path):
    """Not WoD's `/student/studentN`: the pool's own home_root, as its accounts are made."""
    repo.replace("catalog/students.yaml", "home_root: /student", "home_root: /srv/homes/")
    repo.write(NB, _notebook("home = '{{ HOME }}'"))
    assert errors_of(repo.root) == [], "validate knows HOME"
    done = cli("render", "WKSHP-Python101", "--student", "7", "--out", tmp_path / "out",
               "--root", repo.root)
    assert done.exit_code == 0, done.output
    assert "home = '/srv/homes/student7'" in (tmp_path / "out/1-Python-Basics.ipynb").read_text()


def test_passstu_without_varpass_is_a_warning(repo):
    repo.write(NB, _notebook("password = '{{ PASSSTU }}'"))
    _, found = validate(repo.root)
    assert [(d.code, d.severity) for d in found] == [("passstu-without-varpass", "warning")]


def test_system_template_undefined_variable(repo):
    repo.write("templates/motd.j2", "Welcome to {{ host.name }}\n{{ MISSING_BANNER }}\n")
    d = only_error(repo.root, "undefined-variable")
    assert (d.path, d.line) == ("templates/motd.j2", 2)


def test_system_template_syntax(repo):
    repo.write("templates/broken.j2", "{% if %}\n")
    assert only_error(repo.root, "template-syntax").path == "templates/broken.j2"


# -- Templates are never read through a link ---------------------------------------------------

def _outside(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "90-wodsync.conf.j2").write_text("{% if %}never read through a link\n")
    (target / "jupyterhub_config.py.j2").write_text("{% if %}\n")
    (target / "jupyterhub.service.j2").write_text("{% if %}\n")
    return target


def test_symlinked_template_folder_is_refused_and_not_read(repo, tmp_path):
    shutil.rmtree(repo.path("templates/sysctl.d"))
    repo.path("templates/sysctl.d").symlink_to(_outside(tmp_path))
    found = errors_of(repo.root)
    assert [(d.path, d.code) for d in found] == [
        ("catalog/system.yaml", "symlink"), ("templates/sysctl.d", "symlink")]
    ref = found[0]
    assert ref.line == repo.line_of("catalog/system.yaml", "sysctl.d/90-wodsync.conf.j2")
    assert "through the link templates/sysctl.d" in ref.message


def test_the_engine_reader_refuses_the_link_too(repo, tmp_path):
    shutil.rmtree(repo.path("templates/sysctl.d"))
    repo.path("templates/sysctl.d").symlink_to(_outside(tmp_path))
    with pytest.raises(RepoFileError) as caught:
        read_template(repo.root, "sysctl.d/90-wodsync.conf.j2")
    assert (caught.value.code, caught.value.path) == ("symlink", "templates/sysctl.d")
    assert "[Service]" in read_template(repo.root, "hub/jupyterhub.service.j2")


def test_templates_itself_a_link_is_refused(repo, tmp_path):
    moved = tmp_path / "moved"
    repo.path("templates").rename(moved)
    repo.path("templates").symlink_to(moved)
    found = errors_of(repo.root)
    assert {d.code for d in found} == {"symlink"}
    assert ("templates", 1, 1) in {(d.path, d.line, d.col) for d in found}
    assert "templates/" not in " ".join(d.path for d in found)


def test_a_linked_hub_template_folder_is_reported_at_the_hosts(repo, tmp_path):
    shutil.rmtree(repo.path("templates/hub"))
    repo.path("templates/hub").symlink_to(_outside(tmp_path))
    found = errors_of(repo.root)
    assert {(d.path, d.code) for d in found} == {
        ("hosts/hub-emea.yaml", "symlink"), ("hosts/hub-amer.yaml", "symlink"),
        ("templates/hub", "symlink")}
    emea = next(d for d in found if d.path == "hosts/hub-emea.yaml")
    assert emea.line == repo.line_of("hosts/hub-emea.yaml", "hub:")


def test_a_linked_template_file_is_refused(repo):
    repo.path("templates/motd.j2").symlink_to("/etc/passwd")
    d = only_error(repo.root, "symlink")
    assert (d.path, d.line, d.col) == ("templates/motd.j2", 1, 1)


@pytest.mark.parametrize("nice", [0, 10])
def test_the_hub_configuration_compiles_with_and_without_niced_servers(repo, nice):
    from wodsync.engine import render_system
    from wodsync.engine.desired import DesiredContext
    from wodsync.secrets import Placeholders

    repo.replace("hosts/hub-emea.yaml", "hub:\n", f"hub:\n  server_nice: {nice}\n")
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error], found
    files = render_system.system_files(DesiredContext(catalog, "hub-emea", Placeholders()))
    config = files["/etc/jupyterhub/jupyterhub_config.py"].data.decode()
    compile(config, "jupyterhub_config.py", "exec")
    assert "spawner_class = NiceLocalProcessSpawner" in config  # the seat's cgroup, always
    assert (f"os.nice({nice})" in config) == bool(nice)
