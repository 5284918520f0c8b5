"""Hostile input: always a located error and exit 1, never a traceback, a hang or a blow-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from wodsync.catalog import validate
from wodsync.catalog.repofs import RepoFileError, read_repo_file
from wodsync.catalog.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from wodsync.render import jinja
from wodsync.render.content import ContentError, seat_content
from wodsync.secrets import Placeholders

from helpers import errors_of, only_error

PY = "catalog/workshops/WKSHP-Python101/workshop.yaml"
PYDIR = "catalog/workshops/WKSHP-Python101"

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_alias_bomb_is_refused_by_its_node_budget_before_expanding(repo, cli):
    """9**9 nodes once expanded: the parser-event walk stops at the node budget (the message
    names it), so no tree is ever built, whatever the machine's speed."""
    repo.write("catalog/variables.yaml", BOMB)
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 1
    assert "catalog/variables.yaml:" in result.output and "error[alias-bomb]" in result.output
    assert f"document expands to more than {MAX_NODES} nodes through aliases" in result.output


def test_recursive_alias_is_refused(repo):
    repo.write("catalog/variables.yaml", "a: &a [1, *a]\n")
    d = only_error(repo.root, "alias-bomb")
    assert (d.line, d.col) == (1, 11)


def test_small_aliases_are_allowed(repo):
    repo.write("catalog/variables.yaml",
               repo.read("catalog/variables.yaml") + "A: &x hello\nB: *x\n")
    assert errors_of(repo.root) == []


def test_file_over_the_size_limit(repo):
    repo.write("catalog/variables.yaml", "A: " + "x" * (MAX_FILE_BYTES + 1) + "\n")
    d = only_error(repo.root, "file-too-large")
    assert (d.path, d.line, d.col) == ("catalog/variables.yaml", 1, 1)


def test_duplicate_keys(repo):
    repo.write("catalog/variables.yaml", "A: 1\nB: 2\nA: 3\n")
    d = only_error(repo.root, "duplicate-key")
    assert (d.line, d.col) == (3, 1)


def test_non_utf8(repo):
    repo.write("catalog/variables.yaml", b"A: 1\nB: caf\xe9\n")
    d = only_error(repo.root, "encoding")
    assert (d.line, d.col) == (2, 7)


def test_tabs(repo):
    repo.write("catalog/variables.yaml", "A: 1\nB:\t2\n")
    d = only_error(repo.root, "tab")
    assert (d.line, d.col) == (2, 3)


@pytest.mark.parametrize(("text", "line"), [
    # flow style: everything on line 1
    ("[" * 5000 + "]" * 5000, 1),
    # block style, one level a line: the mapping opened on line MAX_DEPTH + 1 is one too deep
    ("".join(f"{'  ' * i}k{i}:\n" for i in range(60)) + "    x", MAX_DEPTH + 1),
], ids=["flow", "block"])
def test_deep_nesting(repo, text, line):
    repo.write("catalog/variables.yaml", text + "\n")
    d = only_error(repo.root, "too-deep")
    assert (d.path, d.line) == ("catalog/variables.yaml", line)
    assert str(MAX_DEPTH) in d.message


def test_yaml_syntax_error_is_located(repo):
    repo.write("catalog/variables.yaml", "A: 1\nB: [unclosed\nC: 3\n")
    d = only_error(repo.root, "yaml-syntax")
    assert d.line == 3


def test_not_a_mapping(repo):
    repo.write(PY, "- just\n- a list\n")
    d = only_error(repo.root, "model_type")
    assert (d.path, d.line) == (PY, 1)


def test_symlink_in_workshop_folder(repo):
    repo.path(f"{PYDIR}/shadow.ipynb").symlink_to("/etc/shadow")
    d = only_error(repo.root, "symlink")
    assert d.path == f"{PYDIR}/shadow.ipynb"


def test_symlinked_directory_escaping_the_folder(repo, tmp_path):
    repo.path(f"{PYDIR}/escape").symlink_to(tmp_path)
    d = only_error(repo.root, "symlink")
    assert d.path == f"{PYDIR}/escape"


def test_symlinked_catalog_file(repo, tmp_path):
    target = tmp_path / "elsewhere.yaml"
    target.write_text("A: 1\n")
    repo.path("catalog/variables.yaml").unlink()
    repo.path("catalog/variables.yaml").symlink_to(target)
    d = only_error(repo.root, "symlink")
    assert d.path == "catalog/variables.yaml"


@pytest.mark.parametrize("name", ["a;b.ipynb", "$(reboot).txt", "x`id`.py", "-rf", "a b.csv",
                                  "q'uote.md"])
def test_file_names_with_shell_metacharacters(repo, name):
    repo.write(f"{PYDIR}/{name}", "x")
    d = only_error(repo.root, "unsafe-name")
    assert d.path == f"{PYDIR}/{name}"


def test_workshop_folder_name_with_metacharacters(repo):
    repo.path(PYDIR).rename(repo.path("catalog/workshops/WKSHP-Py;reboot"))
    found = errors_of(repo.root)
    assert any(d.code == "unsafe-name" and "WKSHP-Py;reboot" in d.path for d in found)


def test_host_file_name_with_metacharacters(repo):
    repo.path("hosts/hub-amer.yaml").rename(repo.path("hosts/hub$(id).yaml"))
    found = errors_of(repo.root)
    assert [d.code for d in found] == ["unsafe-name"]


def test_host_address_with_metacharacters(repo):
    repo.replace("hosts/hub-emea.yaml", "address: hub-emea.wod.example.org",
                 "address: 'hub;reboot'")
    d = only_error(repo.root, "string_pattern_mismatch")
    assert d.line == 2


def test_template_that_loops_forever_is_stopped_by_the_time_budget(repo, monkeypatch):
    """10**10 empty iterations: the render's time budget (lowered here so the test is short)
    is what stops it, and the error names that budget, not some other limit."""
    monkeypatch.setattr(jinja, "RENDER_SECONDS", 0.5)
    repo.write(f"{PYDIR}/slow.py", "{% for i in range(100000) %}{% for j in range(100000) %}"
                                   "{% endfor %}{% endfor %}")
    d = only_error(repo.root, "template-runaway")
    assert d.path == f"{PYDIR}/slow.py"
    assert d.message == "rendering took longer than 0.5 s"


def test_template_cannot_escape_the_sandbox(repo):
    repo.write(f"{PYDIR}/evil.py", "x = 1\n{{ STUDENT.__class__.__mro__[1].__subclasses__() }}\n")
    d = only_error(repo.root, "template-unsafe")
    assert (d.path, d.line) == (f"{PYDIR}/evil.py", 2)


def test_cli_never_prints_a_traceback(repo, cli):
    repo.write("catalog/variables.yaml", b"\xff\xfe\x00garbage")
    result = cli("validate", "--root", repo.root)
    assert result.exit_code == 1 and "Traceback" not in result.output


# -- No links at any depth ---------------------------------------------------------------------

def _outside(tmp_path) -> Path:
    """A folder outside the repository whose files must never be read."""
    target = tmp_path / "outside"
    target.mkdir(exist_ok=True)
    (target / "secret.py").write_text("{{ never_read_through_a_link }}\n")
    return target


def test_symlinked_folder_deep_in_a_workshop(repo, tmp_path):
    repo.write(f"{PYDIR}/lab/data/readme.txt", "x")
    repo.path(f"{PYDIR}/lab/data/more").symlink_to(_outside(tmp_path))
    d = only_error(repo.root, "symlink")
    assert (d.path, d.line, d.col) == (f"{PYDIR}/lab/data/more", 1, 1)


@pytest.mark.parametrize("folder", ["catalog/workshops", "hosts"])
def test_a_linked_catalog_folder_is_refused(repo, tmp_path, folder):
    moved = tmp_path / "moved"
    repo.path(folder).rename(moved)
    repo.path(folder).symlink_to(moved)
    found = errors_of(repo.root)
    assert ("symlink", folder) in {(d.code, d.path) for d in found}
    assert all(not d.path.startswith(f"{folder}/") for d in found)


def test_a_linked_catalog_directory_is_refused(repo, tmp_path):
    moved = tmp_path / "moved"
    repo.path("catalog").rename(moved)
    repo.path("catalog").symlink_to(moved)
    d = only_error(repo.root, "symlink")
    assert d.path == "catalog"


def test_rendering_never_reads_through_a_link_that_appeared_after_validation(repo, tmp_path):
    """The reader itself refuses links: a folder swapped for a link after `validate` (or
    between two runs of the daemon) is an error naming the link, not a leaked file."""
    catalog, found = validate(repo.root)
    assert found == []
    sub = repo.write(f"{PYDIR}/lab/notes.py", "x = 1\n").parent
    catalog.folders["WKSHP-Python101"].files.append("lab/secret.py")
    shutil.rmtree(sub)
    sub.symlink_to(_outside(tmp_path))
    with pytest.raises(ContentError, match=f"{PYDIR}/lab: is a symbolic link"):
        seat_content(catalog, "WKSHP-Python101", 1, "pw", "hub-emea", Placeholders())


def test_read_repo_file_names_the_link_on_the_way(tmp_path):
    root = tmp_path / "repo"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(_outside(tmp_path))
    with pytest.raises(RepoFileError) as caught:
        read_repo_file(root, "a/b/secret.py")
    assert (caught.value.code, caught.value.path) == ("symlink", "a/b")


def test_read_repo_file_refuses_a_linked_file(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(RepoFileError) as caught:
        read_repo_file(root, "passwd")
    assert (caught.value.code, caught.value.path) == ("symlink", "passwd")


def test_read_repo_file_refuses_a_fifo_without_blocking(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    os.mkfifo(root / "pipe.py")
    with pytest.raises(RepoFileError) as caught:
        read_repo_file(root, "pipe.py")
    assert caught.value.code == "special-file"


@pytest.mark.parametrize("rel", ["../outside/secret.py", "/etc/passwd", "a//b", "a/./b", ""])
def test_read_repo_file_refuses_paths_leaving_the_repository(tmp_path, rel):
    _outside(tmp_path)
    with pytest.raises(RepoFileError) as caught:
        read_repo_file(tmp_path / "repo", rel)
    assert caught.value.code == "unsafe-path"


def test_read_repo_file_reads_a_regular_file(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_bytes(b"hello")
    assert read_repo_file(tmp_path, "a/b/c.txt") == b"hello"
