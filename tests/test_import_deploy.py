"""An import that deploys: `wodsync import` writes the catalog, a hosts skeleton whose gaps
`validate` names, the kernels the notebooks' kernelspecs ask for, a placeholder for every value
WoD computed out of sight, re-plans overlapping seat ranges on request (the mapping reported),
and prints the operator's checklist.

Small fixture trees here; WoD's own 20 workshops (../shared/corpus, or $WODSYNC_CORPUS) in the
corpus test, which skips without them: import, --replan-seats, validate with 0 errors once the
placeholders are filled, and a plan (never an apply) against this machine as a local host. That
plan names 380 seats `wodtcp1..380` (a prefix of its own: `wodtt1` is a real seat of the kernel
test) with uids 47001-47380 (no account is made: plan only; the test stops if one of those uids
exists).
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
from pathlib import Path

import pytest

from wodsync.authoring.importer import import_wod
from wodsync.authoring.seatplan import replan
from wodsync.catalog import validate
from wodsync.catalog.loader import load_catalog

from conftest import PROJECT
from helpers import errors_of, fill_placeholders

TEMPLATES = PROJECT / "templates"
CORPUS = Path(os.environ.get("WODSYNC_CORPUS", PROJECT.parent / "shared" / "corpus"))


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line of `path` holding `needle` (tests assert real lines)."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _wod(name: str, first: int, last: int, extra: str = "") -> str:
    return (f"name: '{name}'\ndescription: 'x'\nactive: true\ncapacity: {last - first + 1}\n"
            f"priority: 1\nrange: [{first},{last}]\nreset: false\nldap: false\nvarpass: false\n"
            f"compile: ''\nbeta: false\ncategory: ['Open Source']\nduration: 2\n{extra}")


def _nb(kernel: str | None, text: str = "Hello") -> str:
    meta = {"kernelspec": {"display_name": "K", "language": "x", "name": kernel}} if kernel \
        else {}
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": [text]}],
                       "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, indent=1)


def make_tree(root: Path, workshops: dict[str, tuple[int, int, dict[str, str], str]]) -> Path:
    """WKSHP folders: name → (first, last, {notebook: text}, extra wod.yml lines)."""
    for name, (first, last, notebooks, extra) in workshops.items():
        folder = root / f"WKSHP-{name}"
        folder.mkdir(parents=True)
        (folder / "wod.yml").write_text(_wod(name, first, last, extra))
        for rel, text in notebooks.items():
            (folder / rel).write_text(text)
    (root / "vars.yml").write_text("WODUSERMIN: 1\nWODUSERMAX: 20\nBRANDING: Test\n")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "wod", {
        "Alpha101": (1, 6, {"1-Bash.ipynb": _nb("bash"), "2-Py.ipynb": _nb("python3")}, ""),
        "Beta101": (4, 9, {"1-Ssh.ipynb": _nb("ssh"), "2-Go.ipynb": _nb("gophernotes")}, ""),
        "Gamma101": (1981, 1985, {"1-Rust.ipynb": _nb("rust"), "2-Jl.ipynb": _nb("julia"),
                                  "3-Tok.ipynb": _nb(None, "token {{ SPARKTOK }} at "
                                                           "{{ WODBEEXTFQDN }}")}, ""),
    })


def _import(tree: Path, out: Path, replan_seats: bool = False):
    return import_wod(tree, out, [tree / "vars.yml"], replan_seats=replan_seats,
                      templates=TEMPLATES)


def test_kernels_are_declared_from_the_notebooks_kernelspecs(tree, tmp_path):
    out = tmp_path / "out"
    result = _import(tree, out)
    catalog = load_catalog(out)
    assert catalog.workshops["WKSHP-Alpha101"].kernels == ["bash"]
    assert catalog.workshops["WKSHP-Beta101"].kernels == ["go", "ssh"]
    assert catalog.workshops["WKSHP-Gamma101"].kernels == ["rust"]
    [unknown] = [d for d in result.diagnostics if d.code == "kernel"]
    assert unknown.path == str(tree / "WKSHP-Gamma101/2-Jl.ipynb")
    line = line_of(tree / "WKSHP-Gamma101/2-Jl.ipynb", '"name": "julia"')
    assert (unknown.line, unknown.severity) == (line, "warning")
    assert "kernel 'julia' has no recipe" in unknown.message
    # validate still warns about the one nobody provides, at its notebook.
    _, found = validate(out)
    assert [(d.path, d.line) for d in found if d.code == "notebook-kernel"] == [
        ("catalog/workshops/WKSHP-Gamma101/2-Jl.ipynb", line)]


def test_the_hosts_skeleton_has_placeholders_that_validate_names(tree, tmp_path):
    out = tmp_path / "out"
    _import(tree, out)
    host = load_catalog(out).hosts["default"]
    assert (host.address, host.location, host.pool, host.host_key) == (
        "CHANGE-ME", "default", "student", None)
    assert host.hub is not None and host.hub.token is not None
    assert host.hub.token.secret == "HUB_DEFAULT_TOKEN"
    placeholders = sorted((d.path, d.line, d.message.split(" is a placeholder")[0])
                          for d in errors_of(out) if d.code == "placeholder")
    gamma, host_file = out / "catalog/workshops/WKSHP-Gamma101/workshop.yaml", \
        out / "hosts/default.yaml"
    assert placeholders == [
        ("catalog/workshops/WKSHP-Gamma101/workshop.yaml", line_of(gamma, "SPARKTOK:"),
         "variables.SPARKTOK"),
        ("hosts/default.yaml", line_of(host_file, "address:"), "address"),
        ("hosts/default.yaml", line_of(host_file, "WODBEFQDN:"), "variables.WODBEFQDN"),
        ("hosts/default.yaml", line_of(host_file, "WODBEEXTFQDN:"), "variables.WODBEEXTFQDN")]


def test_without_replan_overlaps_and_ranges_outside_the_pool_are_left_for_validate(tree,
                                                                                   tmp_path):
    out = tmp_path / "out"
    result = _import(tree, out)
    assert result.moves == []
    fill_placeholders(out)
    codes = sorted(d.code for d in errors_of(out))
    assert codes == ["seats-outside-pool", "seats-overlap", "seats-overlap"]


def test_replan_seats_packs_ranges_into_the_pool_and_reports_the_mapping(tree, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("import", tree, "--out", out, "--vars", tree / "vars.yml", "--replan-seats",
                 "--templates", TEMPLATES)
    assert result.exit_code == 0, result.output
    assert "seats WKSHP-Beta101: seats 4-9 → 7-12 (overlapped WKSHP-Alpha101)" in result.stdout
    assert "seats WKSHP-Gamma101: seats 1981-1985 → 13-17 (outside the pool 1-20)" in \
        result.stdout
    catalog = load_catalog(out)
    seats = {k: (w.seats.first, w.seats.last) for k, w in catalog.workshops.items()}
    assert seats == {"WKSHP-Alpha101": (1, 6), "WKSHP-Beta101": (7, 12),
                     "WKSHP-Gamma101": (13, 17)}
    assert catalog.workshops["WKSHP-Gamma101"].capacity == 5
    fill_placeholders(out)
    assert errors_of(out) == []


def test_the_checklist_says_what_the_operator_must_still_decide(tree, tmp_path):
    result = _import(tree, tmp_path / "out", replan_seats=True)
    items = result.checklist.items
    assert items[0].startswith("hosts/default.yaml: write the hub host's address, pin its SSH "
                               "key (host_key)")
    assert "WKSHP-Gamma101: decide SPARKTOK (placeholders in its workshop.yaml: WoD computed " \
           "them per seat)" in items
    assert any(i.startswith("secrets file: HUB_DEFAULT_TOKEN (granted to host default)")
               for i in items)
    assert any(i.startswith("2 seat ranges re-planned") for i in items)
    assert any("go (WKSHP-Beta101); rust (WKSHP-Gamma101); ssh (WKSHP-Beta101)" in i
               for i in items)


def test_the_pool_grows_when_the_ranges_do_not_fit_and_the_checklist_says_so(tmp_path):
    tree = make_tree(tmp_path / "wod", {"A101": (1, 15, {}, ""), "B101": (10, 20, {}, "")})
    result = _import(tree, tmp_path / "out", replan_seats=True)
    assert [m.text() for m in result.moves] == [
        "WKSHP-B101: seats 10-20 → 16-26 (overlapped WKSHP-A101)"]
    assert load_catalog(tmp_path / "out").pools["student"].last == 26
    assert any(i.startswith("the pool grew from 20 to 26 seats") for i in result.checklist.items)


def test_replan_keeps_the_most_workshops_in_place():
    ranges = {"wide": (1, 40), "a": (1, 5), "b": (6, 10), "c": (11, 15), "d": (38, 45)}
    plan = replan(ranges, 1, 100)
    assert [m.workshop for m in plan.moves] == ["wide"]
    assert plan.ranges["wide"] == (46, 85) and plan.pool_last == 100
    taken = sorted(plan.ranges.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(taken))


def test_a_notebook_broken_by_stray_quotes_is_repaired_with_a_warning(tmp_path):
    broken = _nb(None, 'MARK').replace('"MARK"', '"calling the built-in "panic" function"')
    other = _nb(None).replace('"cells"', '"cells" "cells"')  # not quotes: left as it is
    tree = make_tree(tmp_path / "wod", {"Go101": (1, 5, {"1-P.ipynb": broken,
                                                          "2-Q.ipynb": other}, "")})
    out = tmp_path / "out"
    result = _import(tree, out)
    [warning] = [d for d in result.diagnostics if d.code == "notebook-quotes"]
    assert (warning.path, warning.line) == (str(tree / "WKSHP-Go101/1-P.ipynb"),
                                            line_of(tree / "WKSHP-Go101/1-P.ipynb", "panic"))
    fixed = json.loads((out / "catalog/workshops/WKSHP-Go101/1-P.ipynb").read_text())
    assert fixed["cells"][0]["source"] == ['calling the built-in "panic" function']
    assert (out / "catalog/workshops/WKSHP-Go101/2-Q.ipynb").read_text() == other
    fill_placeholders(out)
    assert [d.path for d in errors_of(out)] == ["catalog/workshops/WKSHP-Go101/2-Q.ipynb"]


def test_appliance_workshops_get_their_appliance_hosts_in_the_inventory(tmp_path):
    from wodsync.catalog import models

    tree = make_tree(tmp_path / "wod", {"Dock101": (1, 3, {}, "monoappliance: true\n"),
                                        "Multi101": (4, 5, {}, "multiappliance: true\n")})
    out = tmp_path / "out"
    result = _import(tree, out)
    catalog = load_catalog(out)
    dock, multi = catalog.workshops["WKSHP-Dock101"], catalog.workshops["WKSHP-Multi101"]
    if not hasattr(models, "Appliance"):  # no appliance hosts in this tree: WoD's label
        assert (dock.appliance, multi.appliance) == ("mono", "multi")
        assert any(i.startswith("WKSHP-Dock101: ran on a remote appliance in WoD (mono): "
                                "declare the appliance host(s)") for i in result.checklist.items)
        return
    assert dock.appliance.model_dump() == {"hosts": ["appliance-Dock101"], "mode": "shared"}
    assert multi.appliance.model_dump() == {
        "hosts": ["appliance-Multi101-1", "appliance-Multi101-2"], "mode": "per_seat"}
    roles = {n: (h.role, h.hub, h.address) for n, h in catalog.hosts.items()}
    assert roles["appliance-Multi101-2"] == ("appliance", None, "CHANGE-ME")
    assert any(i.startswith("WKSHP-Multi101: ran on a remote appliance in WoD: write the "
                            "address and key of hosts/appliance-Multi101-1.yaml and its 1 "
                            "siblings") for i in result.checklist.items)
    assert {d.path for d in errors_of(out)} == {f"hosts/{n}.yaml" for n in roles}
    fill_placeholders(out)
    assert errors_of(out) == []


# --- WoD's corpus ---------------------------------------------------------------------------

@pytest.mark.skipif(not (CORPUS / "wod-notebooks").is_dir(), reason="WoD corpus not present")
def test_the_corpus_imports_replans_validates_and_plans_on_a_real_host(tmp_path, cli):
    out = tmp_path / "out"
    result = import_wod(CORPUS / "wod-notebooks", out,
                        [CORPUS / "wod-install-group_vars-all.yml",
                         CORPUS / "wod-backend-group_vars-all.yml"], replan_seats=True,
                        templates=TEMPLATES)
    assert len(result.workshops) == 20
    assert not [d for d in result.diagnostics if d.is_error]
    # WoD's 6 overlapping pairs (12 seats-overlap errors) are gone, every range in the pool.
    assert sum(m.why.startswith("overlapped") for m in result.moves) == 2
    assert {d.code for d in errors_of(out)} == {"placeholder"}
    kernels = {k: set(v) for k, v in result.kernels.items()}
    assert kernels["WKSHP-GO101"] == {"bash", "go"} and kernels["WKSHP-RUST101"] >= {"rust"}
    assert sum("ssh" in v for v in kernels.values()) == 4
    fill_placeholders(out, f"transport: local\nstate_dir: {tmp_path}/host")
    _, found = validate(out)
    assert [d for d in found if d.is_error] == []
    assert [d for d in found if d.code == "notebook-kernel"] == []
    if os.geteuid() != 0:
        pytest.skip("the plan against this machine reads its accounts: needs root")
    _plan_corpus(out, tmp_path, cli)


def _plan_corpus(out: Path, tmp_path: Path, cli) -> None:
    students = out / "catalog/students.yaml"
    text = students.read_text()
    for old, new in (("prefix: student", "prefix: wodtcp"), ("uid_base: 2000", "uid_base: 47000"),
                     ("gid_base: 2000", "gid_base: 47000"),
                     ("home_root: /student", f"home_root: {tmp_path}/homes")):
        assert old in text
        text = text.replace(old, new)
    students.write_text(text)
    last = load_catalog(out).pools["student"].last
    taken = [p.pw_name for p in pwd.getpwall() if 47000 < p.pw_uid <= 47000 + last]
    assert not taken, f"uids 47001-{47000 + last} are taken by {taken[:3]}: not this test's"
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text('secrets:\n  HUB_DEFAULT_TOKEN: {value: "t0ken", hosts: [default]}\n')
    secrets.chmod(0o600)
    # The hub host (appliance hosts, where the tree has them, are other machines).
    result = cli("plan", "--root", out, "--state", tmp_path / "ctl", "--secrets", secrets,
                 "--format", "json", "--host", "default")
    assert result.exit_code == 2, result.output       # changes pending, nothing refused
    [host] = json.loads(result.stdout)
    assert (host["host"], host["error"], host["plan"]["errors"]) == ("default", None, [])
    planned = {c["address"] for c in host["plan"]["changes"]}
    assert {"kernel:bash", "kernel:ssh", "kernel:gophernotes", "kernel:rust",
            "package:apt/golang-go", "package:apt/cargo", f"account:wodtcp{last}"} <= planned
