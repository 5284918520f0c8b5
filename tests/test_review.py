"""`wodsync review` and `wodsync codeowners` on real git repositories of the example catalog.

Each test commits the example catalog as the base revision, changes it as an author would, and
checks that privileged changes are found at their file and line and content changes are not
mistaken for them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from wodsync.authoring.review import BEGIN, CODEOWNERS, END, Review, review

GIT101 = "catalog/workshops/WKSHP-Git101/workshop.yaml"
API101 = "catalog/workshops/WKSHP-API101/workshop.yaml"
PY101 = "catalog/workshops/WKSHP-Python101/workshop.yaml"
NOTEBOOK = "catalog/workshops/WKSHP-Python101/1-Python-Basics.ipynb"
HOST = "hosts/hub-emea.yaml"
BASHRC = "templates/skel/.bashrc.j2"
SYSTEM = "catalog/system.yaml"
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Author", "GIT_AUTHOR_EMAIL": "author@example.org",
           "GIT_COMMITTER_NAME": "Author", "GIT_COMMITTER_EMAIL": "author@example.org"}


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def base(repo) -> str:
    """The example catalog committed as `main`; the test's changes are compared with it."""
    git(repo.root, "init", "-q", "-b", "main")
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "-m", "base")
    return "main"


def privileged(r: Review) -> set[tuple[str, int | None, str]]:
    return {(f.path, f.line, f.what) for f in r.privileged}


def test_content_only_changes_have_no_privileged_finding(repo, base):
    repo.replace(NOTEBOOK, "Python", "Python 3")
    repo.replace(PY101, "name: Python 101", "name: Python 101 (2025)")
    repo.replace(PY101, "duration: 2", "duration: 3")
    repo.replace("catalog/replays.yaml", "The recorded Python", "A recorded Python")
    r = review(repo.root, base)
    assert r.privileged == []
    got = {(f.path, f.line, f.what, f.verb) for f in r.content}
    assert got == {(NOTEBOOK, None, "file", "changed"),
                   (PY101, repo.line_of(PY101, "name:"), "name", "changed"),
                   (PY101, repo.line_of(PY101, "duration:"), "duration", "changed"),
                   ("catalog/replays.yaml", repo.line_of("catalog/replays.yaml", "A recorded"),
                    "replays", "changed")}


PRIVILEGED_CASES = [
    # (file, old, new, text on the line the finding must point at, what)
    (GIT101, "kernels: [python3]", "kernels: [python3, {name: bash, pip: [bash_kernel]}]",
     "kernels:", "kernels"),
    (API101, 'pip: ["requests>=2.31"]', 'pip: ["requests>=2.31", "numpy"]', "pip:", "packages"),
    (GIT101, "reset: scripts/reset.sh", "reset: scripts/create.sh", "reset: scripts",
     "hooks"),
    (API101, "compile: [scripts/login.sh]", "compile: [scripts/login.sh, 0-ReadMeFirst.ipynb]",
     "compile:", "compile"),
    (API101, "{secret: API101_TOKEN}", "{secret: HUB_AMER_TOKEN}", "API_TOKEN:",
     "variables.API_TOKEN"),
    (HOST, 'version: "6.1.1"', 'version: "6.2.0"', "version:", "hub"),
    (HOST, "vm.max_map_count: 600000", "vm.max_map_count: 700000", "vm.max_map_count",
     "sysctl"),
    (BASHRC, "export EDITOR=vim", "export EDITOR=nano", "EDITOR", "file"),
    (SYSTEM, "path: /etc/security/limits.d/90-wodsync.conf", "path: /etc/security/limits.conf",
     "/etc/security/limits.conf", "files"),
    ("catalog/students.yaml", "shell: /bin/bash", "shell: /bin/sh", "shell:", "pools"),
    ("catalog/variables.yaml", "BRANDING: WoD Example", "BRANDING: WoD $(id)", "BRANDING:",
     "BRANDING"),
    ("catalog/workshops/WKSHP-Git101/scripts/create.sh", "\n", "\nchmod 4755 /bin/bash\n",
     "chmod", "file"),
]


@pytest.mark.parametrize(("rel", "old", "new", "needle", "what"), PRIVILEGED_CASES,
                         ids=[f"{c[0].split('/')[-1]}:{c[4]}" for c in PRIVILEGED_CASES])
def test_a_privileged_change_is_reported_at_its_file_and_line(repo, base, rel, old, new,
                                                               needle, what):
    repo.replace(rel, old, new)
    r = review(repo.root, base)
    assert privileged(r) == {(rel, repo.line_of(rel, needle), what)}
    assert r.content == []
    assert r.privileged[0].why


@pytest.mark.parametrize(("edit", "line"), [
    (lambda lines: [*lines, "export PAGER=less"], 4),          # appended after line 3
    (lambda lines: lines[:2], 2),                              # last line removed
    (lambda lines: [lines[0] + " ", *lines[1:]], 1),           # first line edited
])
def test_a_privileged_file_points_at_its_first_changed_line(repo, base, edit, line):
    lines = repo.read(BASHRC).splitlines()
    assert len(lines) == 3
    repo.write(BASHRC, "\n".join(edit(lines)) + "\n")
    assert privileged(review(repo.root, base)) == {(BASHRC, line, "file")}


def test_a_mode_change_alone_is_reported_at_line_1(repo, base):
    script = repo.path("catalog/workshops/WKSHP-Git101/scripts/create.sh")
    script.chmod(script.stat().st_mode ^ 0o100)
    r = review(repo.root, base)
    assert privileged(r) == {("catalog/workshops/WKSHP-Git101/scripts/create.sh", 1, "file")}


def test_a_file_name_that_is_not_utf8_is_printed_escaped(repo, base, cli):
    (repo.root / "hosts").joinpath(b"caf\xe9.yaml".decode(errors="surrogateescape")) \
        .write_text("address: x\n")
    result = cli("review", "--root", repo.root, "--base", "main")
    assert result.exit_code == 0
    assert "hosts/caf\\xe9.yaml:1  'address' added" in result.stdout


def test_workshop_variables_without_secrets_and_unused_globals_are_content(repo, base):
    repo.replace(API101, "API_URL: https://api.wod.example.org/v1",
                 "API_URL: https://api2.wod.example.org/v1")
    repo.replace("catalog/variables.yaml", "SURVEYURL: https://wod.example.org/survey",
                 "SURVEYURL: https://wod.example.org/survey2")
    r = review(repo.root, base)
    assert r.privileged == []
    assert {(f.path, f.what) for f in r.content} == {(API101, "variables.API_URL"),
                                                     ("catalog/variables.yaml", "SURVEYURL")}


def test_a_variable_of_a_workshop_with_hooks_is_content_and_its_hook_script_is_not(repo, base):
    """Hooks are never rendered: a variable edit cannot change what root runs (the hook reads
    it as data, $WOD_GREETING), while an edit of the hook's script is the operators'."""
    repo.replace(GIT101, "kernels: [python3]", "kernels: [python3]\nvariables:\n  GREETING: hi")
    git(repo.root, "commit", "-q", "-am", "a greeting")
    repo.replace(GIT101, "GREETING: hi", "GREETING: 'x\"; id > /tmp/pwned; echo \"'")
    r = review(repo.root, "main")
    assert r.privileged == []
    assert {(f.path, f.what) for f in r.content} == {(GIT101, "variables.GREETING")}
    script = "catalog/workshops/WKSHP-Git101/scripts/create.sh"
    repo.write(script, repo.read(script) + 'echo "$WOD_GREETING" > /tmp/greeting\n')
    assert privileged(review(repo.root, "main")) == {(script, 5, "file")}


def test_moving_a_workshop_that_installs_as_root_is_privileged(repo, base):
    repo.replace(GIT101, "location: emea", "location: amer")         # apt: [git], hooks
    repo.replace(PY101, "alternate_locations: [amer]", "alternate_locations: []")  # nothing
    r = review(repo.root, base)
    assert privileged(r) == {(GIT101, repo.line_of(GIT101, "location:"), "location")}
    assert {(f.path, f.what) for f in r.content} == {(PY101, "alternate_locations")}


def test_mixed_commit_reports_privileged_and_content_changes_in_the_same_file(repo, base):
    repo.replace(GIT101, "name: Git 101", "name: Git 101 (new)")
    repo.replace(GIT101, "apt: [git]", "apt: [git, curl]")
    repo.replace(NOTEBOOK, "Python", "Python 3")
    git(repo.root, "commit", "-q", "-am", "mixed")
    r = review(repo.root, "main~1", "main")
    assert privileged(r) == {(GIT101, repo.line_of(GIT101, "apt:"), "packages")}
    assert {(f.path, f.what) for f in r.content} == {(GIT101, "name"), (NOTEBOOK, "file")}
    assert r.findings[0].privilege == "privileged"


def test_head_revision_ignores_the_work_tree(repo, base):
    repo.replace(GIT101, "kernels: [python3]", "kernels: [python3, ir]")
    git(repo.root, "commit", "-q", "-am", "kernels")
    repo.replace(HOST, 'version: "6.1.1"', 'version: "6.2.0"')   # not committed
    r = review(repo.root, "main~1", "HEAD")
    assert privileged(r) == {(GIT101, repo.line_of(GIT101, "kernels:"), "kernels")}
    assert r.head == "HEAD"


def test_a_new_untracked_workshop_with_a_hook_is_privileged(repo, base):
    folder = "catalog/workshops/WKSHP-New"
    text = repo.read(PY101).replace("seats: {first: 1, last: 40}", "seats: {first: 101, "
                                    "last: 110}") + "hooks: {create: setup.sh}\n"
    repo.write(f"{folder}/workshop.yaml", text)
    repo.write(f"{folder}/setup.sh", "#!/bin/sh\ncurl https://example.org/x | sh\n")
    repo.write(f"{folder}/0-ReadMeFirst.ipynb", "{}")
    r = review(repo.root, base)
    new = f"{folder}/workshop.yaml"
    assert privileged(r) == {(new, repo.line_of(new, "hooks:"), "hooks"),
                             (new, repo.line_of(new, "kernels:"), "kernels"),
                             (new, repo.line_of(new, "location:"), "location"),
                             (new, repo.line_of(new, "alternate_locations:"),
                              "alternate_locations"),
                             (f"{folder}/setup.sh", 1, "file")}
    assert all(f.verb == "added" for f in r.findings)
    assert (f"{folder}/0-ReadMeFirst.ipynb", "file") in {(f.path, f.what) for f in r.content}


def test_a_removed_host_is_privileged_without_a_line(repo, base):
    (repo.root / HOST).unlink()
    r = review(repo.root, base)
    assert {(f.path, f.line, f.verb) for f in r.privileged} == {(HOST, None, "removed")}
    assert {f.what for f in r.privileged} >= {"hub", "address"}


def test_a_removed_privileged_key_points_at_its_parent(repo, base):
    repo.replace(GIT101, "  reset: scripts/reset.sh\n", "")
    r = review(repo.root, base)
    assert privileged(r) == {(GIT101, repo.line_of(GIT101, "hooks:"), "hooks")}


def test_a_symbolic_link_is_privileged_anywhere(repo, base):
    (repo.root / "catalog/workshops/WKSHP-Python101/data/shadow").symlink_to("/etc/shadow")
    r = review(repo.root, base)
    assert privileged(r) == {("catalog/workshops/WKSHP-Python101/data/shadow", None, "file")}
    assert "link" in r.privileged[0].why


def test_a_workshop_file_that_does_not_parse_counts_as_privileged(repo, base):
    repo.replace(PY101, "capacity: 40", "capacity: [40")
    r = review(repo.root, base)
    assert [(f.path, f.privilege) for f in r.findings] == [(PY101, "privileged")]
    assert "does not parse" in r.findings[0].why


def test_a_comment_only_change_is_reported_once_as_content(repo, base):
    repo.replace(PY101, "seats: {first: 1, last: 40}", "seats: {first: 1, last: 40}  # all")
    r = review(repo.root, base)
    assert [(f.path, f.privilege, f.what, f.line) for f in r.findings] == \
        [(PY101, "content", "file", repo.line_of(PY101, "# all"))]


def test_a_catalog_in_a_subfolder_reports_repository_paths(repo, tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    repo.root.rename(top / "deploy")
    git(top, "init", "-q", "-b", "main")
    (top / "README.md").write_text("outside the catalog\n")
    git(top, "add", "-A")
    git(top, "commit", "-q", "-m", "base")
    host = top / "deploy" / HOST
    host.write_text(host.read_text().replace('version: "6.1.1"', 'version: "6.2.0"'))
    (top / "README.md").write_text("changed outside the root\n")
    r = review(top / "deploy", "main")
    assert [(f.path, f.what) for f in r.findings] == [(f"deploy/{HOST}", "hub")]


# --- the command ---------------------------------------------------------------------------------

def test_github_format_lines_are_exact(repo, base, cli):
    repo.replace(GIT101, "kernels: [python3]", "kernels: [python3, ir]")
    repo.replace(PY101, "name: Python 101", "name: Python 102")
    result = cli("review", "--root", repo.root, "--base", "main", "--format", "github")
    sha = git(repo.root, "rev-parse", "main").strip()[:12]
    line = repo.line_of(GIT101, "kernels:")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"::warning file={GIT101},line={line},title=privileged::'kernels' changed: Jupyter "
        "kernels installed as root on the hosts (pip packages, install commands)",
        "::notice title=wodsync review::1 privileged change and 1 content change in the work tree "
        f"against main ({sha})"]


def test_github_format_escapes_and_omits_a_missing_line(repo, base, cli):
    (repo.root / HOST).unlink()
    repo.write("hosts/a,b:c.yaml", "address: x\n")
    result = cli("review", "--root", repo.root, "--base", "main", "--format", "github")
    lines = result.stdout.splitlines()
    assert "::warning file=hosts/a%2Cb%3Ac.yaml,line=1,title=privileged::'address' added: " \
           "the host inventory: how wodsync reaches the host as root, its hub, packages, " \
           "sysctl values and variables" in lines
    assert any(x.startswith(f"::warning file={HOST},title=privileged::") for x in lines)


def test_markdown_lists_privileged_changes_first_then_counts_content(repo, base, cli):
    repo.replace(BASHRC, "export EDITOR=vim", "export EDITOR=nano")
    repo.replace(NOTEBOOK, "Python", "Python 3")
    repo.replace(PY101, "name: Python 101", "name: Python 102")
    out = cli("review", "--root", repo.root, "--base", "main", "--format", "markdown").stdout
    assert out.startswith("### wodsync review: 1 privileged change\n")
    row = f"| `{BASHRC}:{repo.line_of(BASHRC, 'EDITOR')}` | `file` changed | a template of host " \
          "system files, rendered and written as root |"
    assert row in out.splitlines()
    assert out.rstrip().endswith("2 content changes (notebooks and other workshop files, "
                                 "workshop metadata, replays, locations).")
    assert out.index(row) < out.index("2 content changes")


def test_markdown_without_privileged_changes_says_so(repo, base, cli):
    repo.replace(NOTEBOOK, "Python", "Python 3")
    out = cli("review", "--root", repo.root, "--base", "main", "--format", "markdown").stdout
    assert out.startswith("### wodsync review: no privileged changes\n")
    assert "|" not in out and "1 content change (" in out


def test_json_and_text_formats(repo, base, cli):
    repo.replace(HOST, 'version: "6.1.1"', 'version: "6.2.0"')
    data = json.loads(cli("review", "--root", repo.root, "--base", "main", "--format",
                          "json").stdout)
    assert (data["privileged"], data["content"], data["base"]) == (1, 0, "main")
    assert data["findings"][0] | {"why": ""} == {
        "kind": "privileged", "path": HOST, "line": repo.line_of(HOST, 'version: "6.2.0"'),
        "what": "hub", "change": "changed", "why": ""}
    text = cli("review", "--root", repo.root, "--base", "main").stdout.splitlines()
    line = repo.line_of(HOST, 'version: "6.2.0"')
    assert text[0].startswith(f"privileged  {HOST}:{line}  'hub' changed: the host inventory")


def test_unknown_base_exits_1_with_a_clear_message(repo, base, cli):
    result = cli("review", "--root", repo.root, "--base", "origin/main")
    assert result.exit_code == 1
    assert "unknown revision 'origin/main'" in result.stderr
    assert "Traceback" not in result.output


def test_an_option_like_base_is_refused(repo, base, cli):
    result = cli("review", "--root", repo.root, "--base", "--output=/tmp/x")
    assert result.exit_code == 1 and "is not a git revision" in result.stderr


def test_not_a_git_repository_exits_1_with_a_clear_message(repo, cli):
    result = cli("review", "--root", repo.root, "--base", "main")
    assert result.exit_code == 1
    assert f"{repo.root} is not a git repository" in result.stderr


# --- CODEOWNERS ----------------------------------------------------------------------------------

def owners_of(root: Path) -> dict[str, str]:
    lines = (root / CODEOWNERS).read_text().splitlines()
    return {p: " ".join(o) for p, *o in (x.split() for x in lines if x.startswith("/"))}


def test_codeowners_write_then_check_round_trip(repo, cli):
    assert cli("codeowners", "--root", repo.root, "--owners", "@org/operators").exit_code == 0
    owned = owners_of(repo.root)
    for pattern in ("/hosts/", "/templates/", "/catalog/system.yaml", "/catalog/students.yaml",
                    "/.github/", "/catalog/workshops/WKSHP-Git101/scripts/create.sh",
                    "/catalog/workshops/WKSHP-Git101/scripts/reset.sh",
                    "/catalog/workshops/WKSHP-API101/scripts/login.sh"):
        assert owned[pattern] == "@org/operators"
    text = (repo.root / CODEOWNERS).read_text()
    assert f"# {API101} alternate_locations,compile,kernels,location,packages," \
           "variables.API_TOKEN sha256:" in text
    assert "# catalog/variables.yaml BRANDING sha256:" in text
    check = cli("codeowners", "--root", repo.root, "--check")
    assert check.exit_code == 0 and check.stdout == ""


def test_codeowners_check_fails_when_a_privileged_key_changes(repo, cli):
    cli("codeowners", "--root", repo.root, "--owners", "@org/operators")
    repo.replace(PY101, "name: Python 101", "name: Python 102")
    assert cli("codeowners", "--root", repo.root, "--check").exit_code == 0
    repo.replace(PY101, "kernels: [python3]", "kernels: [python3, ir]")
    check = cli("codeowners", "--root", repo.root, "--check")
    assert check.exit_code == 1
    assert f"+# {PY101} kernels sha256:" in check.stdout
    assert "is stale: run `wodsync codeowners`" in check.stderr
    assert cli("codeowners", "--root", repo.root).exit_code == 0
    assert cli("codeowners", "--root", repo.root, "--check").exit_code == 0


def test_codeowners_check_fails_when_a_hook_script_is_added(repo, cli):
    cli("codeowners", "--root", repo.root, "--owners", "@org/operators")
    repo.write("catalog/workshops/WKSHP-Python101/cleanup.sh", "#!/bin/sh\n")
    repo.replace(PY101, "kernels: [python3]", "kernels: [python3]\nhooks: {cleanup: cleanup.sh}")
    check = cli("codeowners", "--root", repo.root, "--check")
    assert check.exit_code == 1
    assert "+/catalog/workshops/WKSHP-Python101/cleanup.sh @org/operators" in check.stdout


def test_codeowners_keeps_lines_outside_the_block_and_puts_the_block_last(repo, cli):
    repo.write(CODEOWNERS, f"# team rules\n{BEGIN}\n/old @x\n{END}\n* @org/authors\n")
    assert cli("codeowners", "--root", repo.root, "--owners", "@org/ops",
               "--owners", "@alice").exit_code == 0
    lines = (repo.root / CODEOWNERS).read_text().splitlines()
    assert lines[:3] == ["# team rules", "* @org/authors", ""]
    assert lines[3] == BEGIN and lines[-1] == END
    assert "/old @x" not in lines
    assert owners_of(repo.root)["/hosts/"] == "@org/ops @alice"
    again = cli("codeowners", "--root", repo.root)   # owners default to the block's
    assert again.exit_code == 0 and "up to date" in again.stderr


def test_codeowners_needs_owners_the_first_time(repo, cli):
    result = cli("codeowners", "--root", repo.root, "--check")
    assert result.exit_code == 1 and "name the owners with --owners" in result.stderr
    bad = cli("codeowners", "--root", repo.root, "--owners", "operators; rm -rf")
    assert bad.exit_code == 1 and "owners must be @user, @org/team" in bad.stderr
    assert not (repo.root / CODEOWNERS).exists()


def test_codeowners_refuses_a_block_without_its_end(repo, cli):
    repo.write(CODEOWNERS, f"* @a\n{BEGIN}\n/hosts/ @x\n")
    result = cli("codeowners", "--root", repo.root)
    assert result.exit_code == 1 and f"{CODEOWNERS}:2: the generated block has no end" \
        in result.stderr


def test_the_project_codeowners_is_up_to_date(cli):
    from conftest import PROJECT

    result = cli("codeowners", "--root", PROJECT, "--check")
    assert result.exit_code == 0, result.output
