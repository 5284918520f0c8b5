"""Kernels as recipes: bash, ssh, go (gophernotes), rust (evcxr) and python, version-pinned
installers shipped in the package; planned by the kernel kind, marked privileged by review,
and a notebook's kernelspec no host provides is a located warning of validate.

The bash recipe is installed for real into the shared test hub environment (tests/hubs.py
HUB_PREFIX, under hub_prefix_lock) and listed by `jupyter kernelspec list`; rust and go are
checked by plan and review, and built for real only where Debian's toolchain is installed
(bootstrap does not install it). Accounts: prefix wodtt, uid 56601 (gid 56601).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from wodsync.agent.host import HostSide
from wodsync.agent.kinds import kernel as host_half
from wodsync.catalog import validate
from wodsync.catalog.recipes import RECIPES
from wodsync.engine.change import Action
from wodsync.engine.desired import desired_state
from wodsync.engine.kinds import kernel as kernel_kind
from wodsync.engine.plan import plan_host
from wodsync.secrets import Placeholders

from facts import converged
from helpers import remove_test_accounts
from hubs import HUB_PREFIX, hub_prefix_lock

PREFIX, UID_BASE = "wodtt", 56600
WORKSHOP = "catalog/workshops/WKSHP-Kern/workshop.yaml"


def _notebook(kernel: str) -> str:
    return json.dumps({"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"display_name": kernel.title(), "language": "x", "name": kernel}}},
        indent=1)


def write_lab(root: Path, state: Path, kernels: str, hub_prefix: str = HUB_PREFIX,
              extra_workshop: str = "") -> None:
    """A one-seat local host whose existing hub environment is `hub_prefix` (not managed:
    only its packages and kernels are), and a workshop with `kernels`."""
    files = {
        "catalog/students.yaml": f"pools:\n  tt: {{prefix: {PREFIX}, first: 1, last: 1, "
                                 f"uid_base: {UID_BASE}, gid_base: {UID_BASE}, home_root: "
                                 f"{state}/homes, shell: /bin/bash}}\n",
        "catalog/locations.yaml": "locations: [{name: lab}]\n",
        WORKSHOP: "name: Kernels\ncapacity: 1\nseats: {first: 1, last: 1}\nlocation: lab\n"
                  f"duration: 1\nkernels: {kernels}\n",
        "catalog/workshops/WKSHP-Kern/1-Lab.ipynb": _notebook("bash"),
        "hosts/lab.yaml": f"address: 127.0.0.1\ntransport: local\nlocation: lab\npool: tt\n"
                          f"state_dir: {state}/host\nhub: {{manage: false, prefix: "
                          f"{hub_prefix}}}\n",
    }
    if extra_workshop:
        files["catalog/workshops/WKSHP-Other/workshop.yaml"] = extra_workshop
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def plan_of(root: Path, facts_edit=None):
    catalog, found = validate(root)
    assert not [d for d in found if d.is_error], found
    desired = desired_state(catalog, "lab", Placeholders())
    facts = converged(desired)
    if facts_edit:
        facts_edit(facts)
    return desired, plan_host(desired, facts)


def without_kernels(facts) -> None:
    facts["kernel"] = {"kernels": [], "recipes": {}}


# --- the model ----------------------------------------------------------------------------

def test_a_bare_recipe_name_and_a_pinned_version_validate(tmp_path):
    write_lab(tmp_path, tmp_path, "[bash, ssh, go, python, {recipe: rust, version: 0.16.0}]")
    _, found = validate(tmp_path)
    assert [d for d in found if d.is_error] == []


@pytest.mark.parametrize("entry, code, message", [
    ("{recipe: rust, version: '0.17; rm -rf /'}", "kernel-version", "is not MAJOR.MINOR.PATCH"),
    ("{recipe: cobol}", "literal_error", "'bash', 'go', 'python', 'rust' or 'ssh'"),
    ("{recipe: rust, install: [sh]}", "extra_forbidden", "unknown key 'install'"),
])
def test_a_bad_recipe_is_an_error_at_its_place(tmp_path, entry, code, message):
    write_lab(tmp_path, tmp_path, f"\n  - bash\n  - {entry}\n")
    _, found = validate(tmp_path)
    errors = [d for d in found if d.is_error]
    assert [(d.path, d.line, d.code) for d in errors] == [(WORKSHOP, 8, code)], errors
    assert message in errors[0].message


# --- plan ---------------------------------------------------------------------------------

def test_rust_and_go_recipes_plan_their_toolchain_build_and_kernelspec(tmp_path):
    write_lab(tmp_path, tmp_path, "[go, {recipe: rust, version: 0.16.0}]")
    desired, plan = plan_of(tmp_path, without_kernels)
    changes = {str(c.address): c for c in plan.changes}
    assert changes["kernel:rust"].action is Action.CREATE
    assert changes["kernel:rust"].detail == "recipe rust 0.16.0"
    assert changes["kernel:gophernotes"].detail == f"recipe go {RECIPES['go'].default}"
    rust = changes["kernel:rust"].data.recipe
    cache = f"{tmp_path}/host/cache"
    assert rust["build"] == ["/usr/bin/cargo", "install", "evcxr_jupyter", "--version",
                             "0.16.0", "--locked", "--root", HUB_PREFIX]
    assert rust["env"] == {"CARGO_HOME": f"{cache}/cargo",
                           "CARGO_TARGET_DIR": f"{cache}/cargo-target"}
    assert rust["spec"]["argv"] == [f"{HUB_PREFIX}/bin/evcxr_jupyter", "--control_file",
                                    "{connection_file}"]
    assert rust["spec"]["metadata"] == {"wodsync": {"recipe": "rust 0.16.0"}}
    go = changes["kernel:gophernotes"].data.recipe
    assert go["build"] == ["/usr/bin/go", "install",
                           f"github.com/gopherdata/gophernotes@v{RECIPES['go'].default}"]
    assert go["env"]["GOBIN"] == f"{HUB_PREFIX}/bin"
    # The toolchains are Debian packages, installed (phase 60) before the builds (phase 65).
    facts = converged(desired)
    facts["package"]["apt"] = {"cargo": None, "golang-go": None}
    without_kernels(facts)
    addresses = {str(c.address) for c in plan_host(desired, facts).changes}
    assert {"package:apt/cargo", "package:apt/golang-go"} <= addresses


def test_a_recipe_at_another_version_is_an_update_and_the_same_one_a_noop(tmp_path):
    write_lab(tmp_path, tmp_path, "[{recipe: rust, version: 0.17.0}]")

    def older(facts) -> None:
        facts["kernel"]["recipes"]["rust"] = "rust 0.16.0"

    _, plan = plan_of(tmp_path, older)
    [change] = [c for c in plan.changes if c.address.kind == "kernel"]
    assert (change.action, change.detail) == (Action.UPDATE, "rust 0.16.0 → rust 0.17.0")
    _, plan = plan_of(tmp_path)
    assert [c for c in plan.changes if c.address.kind == "kernel"] == []
    assert {str(n.address): n.reason for n in plan.noops}["kernel:rust"] == \
        "is rust 0.17.0 (recipe)"


def test_a_kernelspec_not_written_by_the_recipe_is_replaced(tmp_path):
    write_lab(tmp_path, tmp_path, "[bash]")

    def foreign(facts) -> None:
        facts["kernel"]["recipes"] = {}

    _, plan = plan_of(tmp_path, foreign)
    [change] = [c for c in plan.changes if c.address.kind == "kernel"]
    assert change.detail == f"not installed by a recipe → bash {RECIPES['bash'].default}"


def test_two_versions_of_one_recipe_on_a_host_are_a_plan_error(tmp_path):
    other = ("name: Other\ncapacity: 1\nseats: {first: 1, last: 1}\nlocation: lab\n"
             "duration: 1\nkernels: [{recipe: rust, version: 0.16.0}]\n")
    write_lab(tmp_path, tmp_path, "[rust]", extra_workshop=other)
    catalog, _ = validate(tmp_path)
    desired = desired_state(catalog, "lab", Placeholders())
    plan = plan_host(desired, converged(desired))
    assert any("kernel rust: rust 0.16.0 (WKSHP-Other); rust 0.17.0 (WKSHP-Kern)" in e
               for e in plan.errors), plan.errors


# --- review ---------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   cwd=root, check=True, capture_output=True)


def test_review_marks_a_recipe_change_privileged_and_says_what_it_installs(tmp_path):
    from wodsync.authoring.review import review

    write_lab(tmp_path, tmp_path, "[python3]")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "base")
    text = (tmp_path / WORKSHOP).read_text()
    (tmp_path / WORKSHOP).write_text(text.replace("[python3]", "[python3, {recipe: rust, "
                                                                "version: 0.16.0}]"))
    [finding] = review(tmp_path, "main").findings
    assert (finding.privilege, finding.what, finding.line) == ("privileged", "kernels", 6)
    assert "kernel recipe rust 0.16.0: apt cargo; runs /usr/bin/cargo install evcxr_jupyter " \
           "--version 0.16.0 --locked --root <prefix>; registers kernelspec 'rust'" in \
           finding.why
    # A recipe named alone installs as root too: moving its workshop elsewhere is privileged.
    _git(tmp_path, "commit", "-qam", "rust")
    text = (tmp_path / WORKSHOP).read_text()
    (tmp_path / WORKSHOP).write_text(text.replace("location: lab", "location: other"))
    [finding] = review(tmp_path, "main").findings
    assert (finding.privilege, finding.what) == ("privileged", "location")


# --- validate: a notebook's kernel --------------------------------------------------------

def test_validate_warns_at_the_kernelspec_of_a_notebook_no_host_provides(tmp_path):
    write_lab(tmp_path, tmp_path, "[python3]")
    nb = tmp_path / "catalog/workshops/WKSHP-Kern/2-Go.ipynb"
    nb.write_text(_notebook("gophernotes"))
    _, found = validate(tmp_path)
    warnings = sorted((d.path.rsplit("/", 1)[1], d.line, d.col, d.message) for d in found
                      if d.code == "notebook-kernel")
    assert warnings == [
        ("1-Lab.ipynb", 9, 13, "notebook kernel 'bash' is not among the kernels host 'lab' "
                               "will have: add `bash` (a kernel recipe) to the workshop's "
                               "kernels"),
        ("2-Go.ipynb", 9, 13, "notebook kernel 'gophernotes' is not among the kernels host "
                              "'lab' will have: add `go` (a kernel recipe) to the workshop's "
                              "kernels")]
    assert all(d.severity == "warning" for d in found if d.code == "notebook-kernel")
    text = (tmp_path / WORKSHOP).read_text()
    (tmp_path / WORKSHOP).write_text(text.replace("[python3]", "[bash, go]"))
    _, found = validate(tmp_path)
    assert [d for d in found if d.code == "notebook-kernel"] == []


def test_the_kernelspec_is_found_in_a_notebook_that_is_json_only_once_rendered(tmp_path):
    from wodsync.catalog.kernelcheck import kernelspec

    text = _notebook("rust").replace('"cells": []', '"cells": [{{ CELLS }}]')
    assert kernelspec(text) == ("rust", 9, 13)  # the line of `"name": "rust"`


# --- the bash recipe, installed for real --------------------------------------------------

def _kernelspecs() -> dict:
    done = subprocess.run([f"{HUB_PREFIX}/bin/jupyter", "kernelspec", "list", "--json"],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)["kernelspecs"]


@pytest.fixture
def hub_env():
    """The shared test hub environment, held; made (a bare venv: the hub tests install the
    hub into it as they find it) when no test made it yet."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root and /usr/bin/python3")
    with hub_prefix_lock():
        if not Path(HUB_PREFIX, "bin", "python").exists():
            subprocess.run(["/usr/bin/python3", "-m", "venv", HUB_PREFIX], check=True)
        yield
        shutil.rmtree(Path(HUB_PREFIX, "share/jupyter/kernels/bash"), ignore_errors=True)
        remove_test_accounts(PREFIX, UID_BASE)


def test_the_bash_recipe_is_installed_on_a_real_host_and_runs(tmp_path, hub_env, cli):
    if any(p.pw_uid == UID_BASE + 1 or p.pw_name == f"{PREFIX}1" for p in pwd.getpwall()):
        pytest.fail(f"uid {UID_BASE + 1} or {PREFIX}1 exists already: another test's account?")
    shutil.rmtree(Path(HUB_PREFIX, "share/jupyter/kernels/bash"), ignore_errors=True)
    root = tmp_path / "repo"
    write_lab(root, tmp_path, "[bash]")
    state = ["--root", root, "--state", tmp_path / "ctl"]
    result = cli("apply", "--yes", *state)
    assert result.exit_code == 0, result.output
    spec = _kernelspecs()["bash"]
    assert spec["resource_dir"] == f"{HUB_PREFIX}/share/jupyter/kernels/bash"
    assert spec["spec"]["argv"][:3] == [f"{HUB_PREFIX}/bin/python", "-m", "bash_kernel"]
    assert spec["spec"]["metadata"]["wodsync"]["recipe"] == f"bash {RECIPES['bash'].default}"
    # The kernel starts and runs a line of bash, as a student's notebook would.
    script = tmp_path / "hello.sh"
    script.write_text("echo kernel-$((6 * 7))\n")
    ran = subprocess.run([f"{HUB_PREFIX}/bin/jupyter", "run", "--kernel=bash", str(script)],
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": f"{HUB_PREFIX}/bin:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "kernel-42" in ran.stdout, ran.stdout + ran.stderr
    result = cli("plan", "-v", *state)
    assert result.exit_code == 0, result.output
    assert f"= kernel:bash is bash {RECIPES['bash'].default} (recipe)" in result.output


@pytest.mark.parametrize("recipe, tool", [("rust", "/usr/bin/cargo"), ("go", "/usr/bin/go")])
def test_rust_and_go_recipes_build_for_real_where_debian_has_the_toolchain(
        tmp_path, recipe, tool):
    if not Path(tool).exists() or os.geteuid() != 0:
        pytest.skip(f"{tool} (Debian's {RECIPES[recipe].apt[0]}) is not installed here and "
                    "bootstrap does not install it: the recipe is checked by plan and review")
    prefix = tmp_path / "env"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(prefix)], check=True)
    write_lab(tmp_path / "repo", tmp_path, f"[{recipe}]", hub_prefix=str(prefix))
    desired, plan = plan_of(tmp_path / "repo", without_kernels)
    [change] = [c for c in plan.changes if c.address.kind == "kernel"]
    host = HostSide(str(tmp_path / "host"))
    host_half.install(kernel_kind.batch(desired.want["kernel"], [change]), host)
    assert host.failures == []
    spec = json.loads((prefix / "share/jupyter/kernels" / change.address.name / "kernel.json")
                      .read_text())
    assert Path(spec["argv"][0]).exists()
