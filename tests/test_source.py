"""The GitOps source against real git repositories: a bare remote and a clone the test commits
and pushes to; webhooks and the daemon's unit as pure functions."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wodsync.daemon.unit import quote_arg, render_unit
from wodsync.source import webhook
from wodsync.source.archive import MIB, ExportLimits, format_size, parse_size
from wodsync.source.git import GitSource, RevisionTooLarge, SourceError
from wodsync.source.revision import RevisionCheck, check_revision

from helpers import wodsync

PROJECT = Path(__file__).resolve().parent.parent
CATALOG_PARTS = ("catalog", "hosts", "templates", "schemas")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


class Clone:
    """An author's clone of the bare remote: write, commit, push."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rel: str, text: str, executable: bool = False) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o755 if executable else 0o644)

    def link(self, rel: str, target: str) -> None:
        (self.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.path / rel).symlink_to(target)

    def replace(self, rel: str, old: str, new: str) -> None:
        text = (self.path / rel).read_text(encoding="utf-8")
        assert old in text
        self.write(rel, text.replace(old, new, 1))

    def copy_example_catalog(self) -> None:
        for part in CATALOG_PARTS:
            shutil.copytree(PROJECT / part, self.path / part, symlinks=True)

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        git(self.path, "push", "-q", "origin", "HEAD:main")
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    return bare


@pytest.fixture
def clone(tmp_path: Path, remote: Path) -> Clone:
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(remote), str(work))
    git(work, "config", "user.name", "Ada Author")
    git(work, "config", "user.email", "ada@example.org")
    git(work, "checkout", "-q", "-b", "main")
    return Clone(work)


@pytest.fixture
def source(tmp_path: Path, remote: Path) -> GitSource:
    with GitSource(remote, "main", tmp_path / "state") as src:
        yield src


def tree_of(clone: Clone, sha: str) -> dict[str, tuple[str, bytes]]:
    """What the commit holds, from git itself: path → (mode, blob bytes or link target)."""
    out = subprocess.run(["git", "ls-tree", "-r", "-z", sha], cwd=clone.path, check=True,
                         capture_output=True).stdout
    entries = {}
    for item in out.split(b"\0"):
        if not item:
            continue
        meta, path = item.split(b"\t", 1)
        mode, _, blob = meta.decode().split()
        data = subprocess.run(["git", "cat-file", "blob", blob], cwd=clone.path, check=True,
                              capture_output=True).stdout
        entries[path.decode()] = (mode, data)
    return entries


def exported_tree(folder: Path) -> dict[str, tuple[str, bytes]]:
    entries = {}
    for base, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if (Path(base) / d).is_symlink()]:
            path = Path(base) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                entries[rel] = ("120000", str(path.readlink()).encode())
            else:
                mode = "100755" if path.stat().st_mode & 0o111 else "100644"
                entries[rel] = (mode, path.read_bytes())
    return entries


# -- fetching --------------------------------------------------------------------------------

def test_fetch_returns_the_pushed_head_and_follows_new_commits(clone: Clone,
                                                              source: GitSource) -> None:
    clone.write("README.md", "one\n")
    first = clone.commit("first")
    assert source.fetch() == first
    clone.write("README.md", "two\n")
    second = clone.commit("second")
    assert source.head() == first  # nothing fetched yet
    assert source.fetch() == second
    mirror = source.mirror
    assert (mirror / "HEAD").is_file() and not (mirror / ".git").exists()  # bare, no work tree


def test_fetch_follows_a_force_push_and_says_so(clone: Clone, source: GitSource,
                                                caplog: pytest.LogCaptureFixture) -> None:
    clone.write("a.txt", "a\n")
    clone.commit("a")
    assert source.fetch()
    clone.write("b.txt", "b\n")
    second = clone.commit("b")
    assert source.fetch() == second
    assert "rewritten" not in caplog.text  # a fast-forward is not worth a line
    git(clone.path, "reset", "-q", "--hard", "HEAD~1")
    clone.write("c.txt", "c\n")
    git(clone.path, "add", "-A")
    git(clone.path, "commit", "-q", "-m", "rewritten")
    git(clone.path, "push", "-q", "--force", "origin", "HEAD:main")
    rewritten = source.fetch()
    assert rewritten == git(clone.path, "rev-parse", "HEAD")
    assert f"was rewritten (a force-push): its head moved from {second[:12]} to " \
           f"{rewritten[:12]}" in caplog.text


def test_a_new_url_for_the_same_state_is_followed(clone: Clone, remote: Path,
                                                  tmp_path: Path) -> None:
    clone.write("a.txt", "a\n")
    first = clone.commit("a")
    moved = tmp_path / "moved.git"
    git(tmp_path, "clone", "-q", "--bare", str(remote), str(moved))
    clone.write("a.txt", "b\n")
    clone.commit("only on the old remote")
    with GitSource(remote, "main", tmp_path / "state") as src:
        assert src.fetch() != first
    with GitSource(moved, "main", tmp_path / "state") as src:
        assert src.fetch() == first
        assert git(src.mirror, "remote", "get-url", "origin") == str(moved)


def test_a_missing_remote_is_a_source_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo.git"
    with GitSource(missing, "main", tmp_path / "state") as src, \
            pytest.raises(SourceError) as caught:
        src.fetch()
    message = str(caught.value)
    assert f"cannot fetch branch main from {missing}" in message
    assert "does not appear to be a git repository" in message


def test_an_unknown_branch_is_a_source_error(clone: Clone, remote: Path,
                                             tmp_path: Path) -> None:
    clone.write("a.txt", "a\n")
    clone.commit("a")
    with GitSource(remote, "release", tmp_path / "state") as src, \
            pytest.raises(SourceError, match=r"branch release .*couldn't find remote ref"):
        src.fetch()


def test_a_refused_connection_never_shows_the_credentials_of_the_url(tmp_path: Path) -> None:
    url = "http://deploy:s3cr3t-token@127.0.0.1:9/catalog.git"
    with GitSource(url, "main", tmp_path / "state", timeout=30) as src, \
            pytest.raises(SourceError) as caught:
        src.fetch()
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in src.name
    assert "http://***@127.0.0.1:9/catalog.git" in str(caught.value)


def test_a_hanging_fetch_is_killed_at_the_timeout(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    slow_ssh = tmp_path / "slow-ssh"
    slow_ssh.write_text("#!/bin/sh\nexec sleep 60\n")
    slow_ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(slow_ssh))
    with GitSource("ssh://git@127.0.0.1/catalog.git", "main", tmp_path / "state",
                   timeout=1) as src, pytest.raises(SourceError, match="timed out after 1 s"):
        src.fetch()


def test_an_option_like_url_or_branch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a usable URL"):
        GitSource("--upload-pack=touch /tmp/x", "main", tmp_path)
    with pytest.raises(SourceError, match="not a valid branch"):
        GitSource(tmp_path, "--orphan", tmp_path)
    with pytest.raises(SourceError, match="not a valid branch"):
        GitSource(tmp_path, "main:refs/heads/other", tmp_path)


def test_an_ext_url_is_refused_before_git_runs_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with GitSource(f"ext::sh -c touch% {marker}", "main", tmp_path / "state") as src, \
            pytest.raises(SourceError, match="ext"):
        src.fetch()
    assert not marker.exists()


# -- exporting -------------------------------------------------------------------------------

def test_export_is_the_exact_tree_of_the_commit_and_read_only(clone: Clone,
                                                              source: GitSource) -> None:
    clone.write("catalog/workshops/WKSHP-A/notebook.ipynb", '{"cells": []}\n')
    clone.write("catalog/workshops/WKSHP-A/scripts/create.sh", "#!/bin/sh\necho hi\n",
                executable=True)
    clone.write("templates/deep/er/file.j2", "$Id$ $Format:%H$\r\nline two\n")
    # The commit's own attributes would drop, rewrite and convert files in a plain archive.
    clone.write(".gitattributes", "templates/deep/er/file.j2 export-subst ident eol=crlf\n"
                "catalog/workshops/WKSHP-A/notebook.ipynb export-ignore\n")
    sha = clone.commit("workshop A")
    source.fetch()
    folder = source.export(sha)
    assert folder == source.revisions / sha
    assert exported_tree(folder) == tree_of(clone, sha)
    for base, _dirs, files in os.walk(folder):
        assert stat.S_IMODE(Path(base).stat().st_mode) == 0o555
        for name in files:
            mode = stat.S_IMODE((Path(base) / name).stat().st_mode)
            assert mode == (0o555 if name == "create.sh" else 0o444), name
    assert not [p for p in source.revisions.iterdir() if p.name.startswith(".")]


def test_a_second_export_of_the_same_commit_is_a_noop(clone: Clone, source: GitSource) -> None:
    clone.write("hosts/a.yaml", "address: a\n")
    sha = clone.commit("a")
    source.fetch()
    first = source.export(sha)
    before = (first.stat().st_ino, first.stat().st_mtime_ns,
              (first / "hosts/a.yaml").stat().st_ino)
    assert source.export(sha[:12]) == first
    assert (first.stat().st_ino, first.stat().st_mtime_ns,
            (first / "hosts/a.yaml").stat().st_ino) == before


def test_an_unknown_commit_cannot_be_exported(clone: Clone, source: GitSource) -> None:
    clone.write("a.txt", "a\n")
    clone.commit("a")
    source.fetch()
    with pytest.raises(SourceError, match="is not in the mirror"):
        source.export("0" * 40)
    with pytest.raises(SourceError, match="not a commit id"):
        source.export("../../etc")
    assert source.exported() == []


def test_a_link_inside_the_revision_is_exported_as_a_link_and_reported(
        clone: Clone, source: GitSource) -> None:
    clone.copy_example_catalog()
    rel = "catalog/workshops/WKSHP-Python101/3-Copy.ipynb"
    clone.link(rel, "0-ReadMeFirst.ipynb")
    sha = clone.commit("a link to a notebook")
    source.fetch()
    folder = source.export(sha)
    assert (folder / rel).is_symlink()
    assert str((folder / rel).readlink()) == "0-ReadMeFirst.ipynb"
    check = check_revision(folder)
    assert not check.ok
    assert any(d.path == rel and d.code == "symlink" for d in check.errors)


def test_links_leaving_the_revision_are_not_created_and_are_reported(
        clone: Clone, source: GitSource, tmp_path: Path) -> None:
    clone.copy_example_catalog()
    clone.link("templates/etc", "/etc")
    clone.link("catalog/workshops/WKSHP-Python101/up", "../../../../outside")
    clone.link("templates/hop", "..")          # to the revision's root: inside
    clone.link("templates/escape", "hop/..")   # lexically inside, really outside via hop
    clone.link("docs/motd", "/etc/motd")        # outside the folders wodsync reads
    sha = clone.commit("links out")
    source.fetch()
    folder = source.export(sha)
    for rel in ("templates/etc", "catalog/workshops/WKSHP-Python101/up", "templates/escape"):
        assert not os.path.lexists(folder / rel), rel
    assert (folder / "templates/hop").is_symlink()
    check = check_revision(folder)
    located = {d.path for d in check.errors if d.code == "symlink"}
    assert {"templates/etc", "catalog/workshops/WKSHP-Python101/up", "templates/escape",
            "templates/hop"} <= located
    assert not check.ok
    assert not os.path.lexists(folder / "docs/motd")
    assert [d.path for d in check.warnings if d.code == "symlink"] == ["docs/motd"]


def test_prune_keeps_the_newest_and_the_protected_revisions(clone: Clone,
                                                            source: GitSource) -> None:
    shas = []
    for n in range(5):
        clone.write("n.txt", f"{n}\n")
        shas.append(clone.commit(f"commit {n}"))
        source.fetch()
        source.export(shas[-1])
    stale = source.revisions / ".tmp-deadbeef-x"
    stale.mkdir(mode=0o500)
    os.utime(stale, (0, 0))
    removed = source.prune(keep=2, protect={shas[0]})
    assert sorted(removed) == sorted(shas[1:3])
    assert source.exported() == [shas[4], shas[3], shas[0]]
    assert sorted(p.name for p in source.revisions.iterdir()) == sorted(
        [*(s for s in (shas[0], shas[3], shas[4])), *(f"{s}.json" for s in
                                                       (shas[0], shas[3], shas[4]))])
    assert source.prune(keep=2, protect={shas[0]}) == []


def test_prune_leaves_a_recent_temporary_folder_alone(clone: Clone, source: GitSource) -> None:
    clone.write("a.txt", "a\n")
    clone.commit("a")
    source.export(source.fetch())
    busy = source.revisions / ".tmp-0123456789ab-busy"
    busy.mkdir()
    source.prune(keep=1)
    assert busy.is_dir()


# -- bounded exports -------------------------------------------------------------------------

BIG = "catalog/workshops/WKSHP-X/big.bin"


def bounded(remote: Path, tmp_path: Path, **limits: int) -> GitSource:
    return GitSource(remote, "main", tmp_path / "bounded", limits=ExportLimits(**limits))


def leftovers(src: GitSource) -> list[str]:
    return sorted(p.name for p in src.revisions.iterdir()) if src.revisions.exists() else []


def test_a_revision_over_the_size_limit_is_refused_before_anything_is_written(
        clone: Clone, remote: Path, tmp_path: Path) -> None:
    """5 MiB of zeros (a few KiB of git objects) against a 1 MiB limit: refused from the
    blob sizes alone, nothing under revisions/, then a small commit exports."""
    clone.write("catalog/README.md", "hello\n")
    (clone.path / BIG).parent.mkdir(parents=True)
    (clone.path / BIG).write_bytes(bytes(5 * MIB))
    big = clone.commit("a compressible blob")
    with bounded(remote, tmp_path, max_bytes=MIB) as src:
        src.fetch()
        with pytest.raises(RevisionTooLarge) as caught:
            src.export(big)
        assert str(caught.value) == (
            f"revision {big[:12]} is too large: 5 MiB in 2 files (limit 1 MiB); "
            f"largest: {BIG} (5 MiB)")
        assert leftovers(src) == []
        found = caught.value.diagnostic()
        assert (found.path, found.line, found.code) == (BIG, 1, "revision-too-large")
        assert found.is_error and "(limit 1 MiB)" in found.message
        (clone.path / BIG).unlink()
        small = clone.commit("the blob goes")
        src.fetch()
        assert src.export(small).is_dir()
        assert leftovers(src) == [small, f"{small}.json"]


def test_one_file_over_its_own_limit_is_refused_and_located(
        clone: Clone, remote: Path, tmp_path: Path) -> None:
    clone.write("catalog/README.md", "hello\n")
    (clone.path / BIG).parent.mkdir(parents=True)
    (clone.path / BIG).write_bytes(bytes(2 * MIB))
    sha = clone.commit("one large file")
    with bounded(remote, tmp_path, max_file_bytes=MIB) as src:
        src.fetch()
        with pytest.raises(RevisionTooLarge, match=rf"largest: {BIG} \(2 MiB, limit 1 MiB "
                                                    r"a file\)") as caught:
            src.export(sha)
        assert caught.value.path == BIG and leftovers(src) == []


def test_too_many_files_are_refused_and_counting_stops_at_the_limit(
        clone: Clone, remote: Path, tmp_path: Path) -> None:
    """A tree fanned out through one subtree: 1000 × 1000 empty files from three git objects.
    Listing stops at the limit; the commit is refused at once, with nothing written."""
    empty = git(clone.path, "hash-object", "-w", "--stdin")
    leaf = subprocess.run(["git", "mktree"], cwd=clone.path, check=True, capture_output=True,
                          text=True, input="".join(f"100644 blob {empty}\tf{n:04}\n"
                                                   for n in range(1000))).stdout.strip()
    root = subprocess.run(["git", "mktree"], cwd=clone.path, check=True, capture_output=True,
                          text=True, input="".join(f"040000 tree {leaf}\td{n:04}\n"
                                                   for n in range(1000))).stdout.strip()
    sha = git(clone.path, "commit-tree", root, "-m", "a million files")
    git(clone.path, "push", "-q", "origin", f"{sha}:refs/heads/main")
    with bounded(remote, tmp_path, max_files=100) as src:
        assert src.fetch() == sha
        tally, complete = src.measure(sha)
        assert (tally.files, complete) == (101, False)
        with pytest.raises(RevisionTooLarge) as caught:
            src.export(sha)
        assert str(caught.value) == (f"revision {sha[:12]} is too large: at least 0 B in 101 "
                                     "files (limit 100 files); largest so far: d0000/f0000 (0 B)")
        assert caught.value.path == "." and leftovers(src) == []


def test_the_tar_stream_is_bounded_too_and_a_stopped_export_leaves_nothing(
        clone: Clone, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with git's sizes not asked, unpacking stops at the member that passes
    the bound, before writing it, and the partly written folder is removed."""
    for n in range(3):
        clone.write(f"catalog/a{n}.txt", "x" * 1000)
    (clone.path / BIG).parent.mkdir(parents=True)
    (clone.path / BIG).write_bytes(bytes(3 * MIB))
    sha = clone.commit("a large file after small ones")
    monkeypatch.setattr(GitSource, "_check_size", lambda self, full: None)
    with bounded(remote, tmp_path, max_bytes=MIB) as src:
        src.fetch()
        with pytest.raises(RevisionTooLarge) as caught:
            src.export(sha)
        assert str(caught.value) == (
            f"revision {sha[:12]} is too large: at least 3 MiB in 4 files (limit 1 MiB); "
            f"largest so far: {BIG} (3 MiB); stopped at {BIG}")
        assert leftovers(src) == []
        src.limits = ExportLimits(max_bytes=4 * MIB)
        assert src.export(sha).is_dir()


def test_sizes_are_read_and_written_in_binary_units() -> None:
    assert [parse_size(t) for t in ("256MiB", "1G", "500k", "1048576", " 1.5 KiB ", "2mb")] \
        == [256 * MIB, 1 << 30, 500 << 10, MIB, 1536, 2 * MIB]
    for bad in ("", "0", "-1M", "12XB", "M", "1e6"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    assert [format_size(n) for n in (0, 1023, 1536, 5 * MIB, 312 * MIB + 1, 3 << 30)] == [
        "0 B", "1023 B", "1.5 KiB", "5 MiB", "312 MiB", "3 GiB"]


# -- commit metadata -------------------------------------------------------------------------

def test_trailers_and_the_deletion_consent(clone: Clone, source: GitSource) -> None:
    clone.write("a.txt", "a\n")
    allowed = clone.commit("Retire WKSHP-Old\n\nIts 12 seats go.\n\n"
                           "Wodsync-Allow-Deletions: 12\nSigned-off-by: Ada <ada@example.org>")
    clone.write("a.txt", "b\n")
    plain = clone.commit("Typo")
    clone.write("a.txt", "c\n")
    bad = clone.commit("Oops\n\nwodsync-allow-deletions: twelve")
    source.fetch()
    assert source.trailers(allowed) == {"Wodsync-Allow-Deletions": ["12"],
                                        "Signed-off-by": ["Ada <ada@example.org>"]}
    assert source.allow_deletions(allowed) == 12
    assert source.trailers(plain) == {} and source.allow_deletions(plain) is None
    with pytest.raises(SourceError, match="'twelve' is not a number of accounts"):
        source.allow_deletions(bad)
    assert source.message(allowed).startswith("Retire WKSHP-Old\n")
    assert source.author(plain) == "Ada Author <ada@example.org>"


# -- checking revisions ----------------------------------------------------------------------

def test_a_valid_commit_checks_ok(clone: Clone, source: GitSource) -> None:
    clone.copy_example_catalog()
    sha = clone.commit("the example catalog")
    source.fetch()
    folder = source.export(sha)
    before = exported_tree(folder)
    check = check_revision(folder)
    assert check.ok and check.errors == [] and check.sha == sha
    assert exported_tree(folder) == before  # validation reads, never writes
    assert json.loads(json.dumps(check.to_json())) == {"sha": sha, "ok": True, "errors": [],
                                                      "warnings": []}


def test_an_invalid_commit_has_located_serializable_errors(clone: Clone,
                                                           source: GitSource) -> None:
    clone.copy_example_catalog()
    rel = "catalog/workshops/WKSHP-Python101/workshop.yaml"
    clone.replace(rel, "capacity: 40", "capacity: '40'")
    line = next(n for n, text in enumerate(
        (clone.path / rel).read_text().splitlines(), start=1) if "capacity" in text)
    sha = clone.commit("break capacity")
    source.fetch()
    check = check_revision(source.export(sha))
    assert not check.ok
    error = next(d for d in check.errors if d.path == rel)
    assert error.line == line and error.col >= 1
    data = json.loads(json.dumps(check.to_json()))
    assert data["ok"] is False
    assert {"path": rel, "line": line, "col": error.col, "code": error.code,
            "message": error.message} in data["errors"]
    assert RevisionCheck.from_json(data) == check
    assert f"{rel}:{line}:" in check.summary


# -- webhooks --------------------------------------------------------------------------------

SECRET = b"webhook-secret"
PUSH = json.dumps({"ref": "refs/heads/main", "before": "1" * 40, "after": "a" * 40,
                   "repository": {"full_name": "org/catalog"}}).encode()


def test_a_body_signed_with_the_secret_verifies() -> None:
    header = webhook.signature(SECRET, PUSH)
    assert header.startswith("sha256=") and len(header) == 71
    assert webhook.verify_signature(SECRET, PUSH, header)
    assert webhook.verify_signature(SECRET, PUSH, header.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=" + "0" * 40, "sha256=" + "0" * 64, "sha256=" + "z" * 64,
    "sha256=" + "0" * 63, "sha256=é" + "0" * 63,
])
def test_a_missing_malformed_or_wrong_signature_does_not_verify(header: str | None) -> None:
    assert not webhook.verify_signature(SECRET, PUSH, header)


def test_a_signature_of_another_body_or_secret_does_not_verify() -> None:
    assert not webhook.verify_signature(SECRET, PUSH + b" ", webhook.signature(SECRET, PUSH))
    assert not webhook.verify_signature(b"other", PUSH, webhook.signature(SECRET, PUSH))


def test_no_secret_verifies_nothing() -> None:
    assert not webhook.verify_signature(b"", PUSH, webhook.signature(b"", PUSH))


def test_a_push_names_the_branch_and_the_new_head() -> None:
    event = webhook.parse_event("push", PUSH)
    assert (event.type, event.ref, event.after, event.branch) == (
        "push", "refs/heads/main", "a" * 40, "main")
    assert event.repository == "org/catalog"
    assert event.moves("main") and not event.moves("dev")


def test_a_form_encoded_push_is_read_too() -> None:
    from urllib.parse import urlencode

    event = webhook.parse_event("push", urlencode({"payload": PUSH.decode()}).encode())
    assert event.after == "a" * 40


def test_a_deleted_branch_has_no_head_and_a_tag_no_branch() -> None:
    deleted = webhook.parse_event("push", json.dumps(
        {"ref": "refs/heads/main", "after": "0" * 40, "deleted": True}).encode())
    assert deleted.type == "push" and deleted.after is None
    tag = webhook.parse_event("push", json.dumps(
        {"ref": "refs/tags/v1", "after": "b" * 40}).encode())
    assert tag.branch is None and not tag.moves("main")


def test_ping_and_other_events() -> None:
    ping = webhook.parse_event("ping", b'{"zen": "Keep it simple.", "hook_id": 1}')
    assert ping.type == "ping"
    assert webhook.parse_event("issues", b"not even json").type == "other"
    assert webhook.parse_event(None, b"").type == "other"


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'{"ref": "refs/heads/main"}', b'{"after": "' + b"a" * 40 + b'"}',
    b'{"ref": "refs/heads/main", "after": "../../etc"}', b"\xff\xfe",
    b"payload=%7B&payload=x&=",
])
def test_an_unreadable_push_is_a_webhook_error(body: bytes) -> None:
    with pytest.raises(webhook.WebhookError):
        webhook.parse_event("push", body)


def test_a_delivery_is_accepted_once_by_its_id_or_its_body() -> None:
    seen = webhook.Deliveries()
    assert seen.repeat_of("d-1", PUSH) is None
    assert seen.repeat_of("d-1", PUSH) == "d-1"           # GitHub's redelivery, or a replay
    assert seen.repeat_of("d-forged", PUSH) == "d-1"      # the id is not signed; the body is
    assert seen.repeat_of("d-1", PUSH + b" ") == "d-1"
    assert seen.repeat_of(None, b"{}") is None
    assert seen.repeat_of(None, b"{}") == ""
    assert seen.repeat_of("d-2", b'{"a": 1}') is None


def test_only_the_last_deliveries_are_remembered() -> None:
    seen = webhook.Deliveries(size=3)
    for n in range(4):
        assert seen.repeat_of(f"d-{n}", f"{n}".encode()) is None
    assert seen.repeat_of("d-0", b"0") is None             # forgotten: the oldest of four
    assert seen.repeat_of("d-3", b"3") == "d-3"
    assert webhook.Deliveries().size == 1000


def named(**names: str) -> webhook.WebhookEvent:
    body = {"ref": "refs/heads/main", "after": "a" * 40, "repository": names}
    return webhook.parse_event("push", json.dumps(body).encode())


FOLLOWED = "https://deploy:t0ken@GitHub.com/Org/Catalog.git"


@pytest.mark.parametrize("names", [
    {"clone_url": "https://github.com/org/catalog.git"},
    {"ssh_url": "git@github.com:org/catalog.git"},
    {"git_url": "git://github.com/org/catalog.git"},
    {"html_url": "https://github.com/Org/Catalog/"},
    {"full_name": "ORG/catalog"},
    {"clone_url": "https://github.com/org/other.git", "full_name": "org/catalog"},
])
def test_a_delivery_naming_the_followed_repository_matches(names: dict[str, str]) -> None:
    assert webhook.names_followed(named(**names), FOLLOWED)
    assert webhook.names_followed(named(**names), "ssh://git@github.com:22/org/catalog")
    assert webhook.names_followed(named(**names), "git@github.com:org/catalog.git")


@pytest.mark.parametrize("names", [
    {},
    {"full_name": "org/catalog-fork", "clone_url": "https://github.com/org/catalog-fork.git"},
    {"clone_url": "https://gitlab.com/org/catalog.git"},
    {"clone_url": "/srv/org/catalog.git"},
    {"html_url": "https://github.com/org/catalog/tree/main"},
])
def test_a_delivery_naming_another_repository_or_none_does_not_match(
        names: dict[str, str]) -> None:
    assert not webhook.names_followed(named(**names), FOLLOWED)


def test_a_local_path_matches_its_own_path_or_a_delivery_naming_nothing() -> None:
    local = "/srv/wod/origin.git"
    assert webhook.names_followed(named(), local)
    assert webhook.names_followed(webhook.parse_event("ping", b'{"zen": "hi"}'), local)
    assert webhook.names_followed(named(clone_url="/srv/wod/origin.git/"), local)
    assert webhook.names_followed(named(clone_url="file:///srv/wod/origin.git"), local)
    for other in ({"clone_url": "/srv/wod/other.git"}, {"clone_url": "/srv/WOD/origin.git"},
                  {"full_name": "x/y"}, {"full_name": "srv/wod/origin"},
                  {"clone_url": "https://github.com/srv/wod/origin.git"}):
        assert not webhook.names_followed(named(**other), local), other


def test_repository_keys_drop_what_does_not_name_the_repository() -> None:
    key = webhook.repository_key
    assert key("https://user:pw@Example.ORG:8443/a/b.git/") == "example.org/a/b"
    assert key("alice@example.org:a/b") == "example.org/a/b"
    assert key("file://localhost/srv/x/../y.git") == "/srv/y.git"
    assert [key(t) for t in ("", "a/b", "https://example.org/", "x\ny")] == [None] * 4


def test_a_body_over_the_limit_is_refused() -> None:
    body = b'{"ref": "refs/heads/main", "after": "' + b"a" * 40 + b'", "x": "' + \
        b"y" * webhook.MAX_BODY_BYTES + b'"}'
    with pytest.raises(webhook.WebhookError, match="over the limit"):
        webhook.parse_event("push", body)


# -- the systemd unit ------------------------------------------------------------------------

def unit_argv(state: str) -> list[str]:
    return [sys.executable, "-m", "wodsync", "daemon", "--repo",
            "https://deploy@git.example.org/org/catalog.git", "--state", state,
            "--listen", "127.0.0.1:8080"]


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_unit_has_the_restart_stop_secret_and_hardening_settings() -> None:
    unit = parse_unit(render_unit(unit_argv("/var/lib/wodsync"), "/var/lib/wodsync"))
    service = unit["Service"]
    expected = {"Restart": "on-failure", "KillMode": "mixed", "User": "root",
                "EnvironmentFile": "/etc/wodsync/env", "NoNewPrivileges": "yes",
                "ProtectHome": "no", "ProtectSystem": "no", "PrivateTmp": "yes",
                "ProtectKernelTunables": "no", "ProtectControlGroups": "no",
                "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
                "RestrictRealtime": "yes", "StateDirectory": "wodsync",
                "StateDirectoryMode": "0700", "WorkingDirectory": "/var/lib/wodsync"}
    assert {k: service.get(k) for k in expected} == expected
    assert int(service["TimeoutStopSec"]) > 0 and service["RestartSec"]
    assert service["ExecStart"].split()[:4] == [sys.executable, "-m", "wodsync", "daemon"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_every_setting_of_the_unit_is_explained_by_a_comment() -> None:
    lines = render_unit(unit_argv("/var/lib/wodsync"), "/var/lib/wodsync").splitlines()
    hardening = ("NoNewPrivileges", "RestrictSUIDSGID", "PrivateTmp", "ProtectControlGroups",
                 "ProtectSystem", "KillMode", "EnvironmentFile", "Restart")
    for key in hardening:
        n = next(i for i, line in enumerate(lines) if line.startswith(key + "="))
        assert any(line.startswith("#") for line in lines[max(0, n - 5):n]), key


def test_a_state_folder_outside_var_lib_has_no_state_directory() -> None:
    unit = parse_unit(render_unit(unit_argv("/srv/wodsync"), "/srv/wodsync"))
    assert "StateDirectory" not in unit["Service"]
    assert unit["Service"]["WorkingDirectory"] == "/srv/wodsync"


def test_arguments_are_quoted_so_systemd_expands_nothing() -> None:
    assert quote_arg("--state") == "--state"
    assert quote_arg("a b") == '"a b"'
    assert quote_arg("100%$HOME") == '"100%%$$HOME"'
    assert quote_arg('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    with pytest.raises(ValueError, match="control character"):
        quote_arg("two\nlines")
    with pytest.raises(ValueError, match="absolute program"):
        render_unit(["wodsync", "daemon"], "/var/lib/wodsync")
    with pytest.raises(ValueError, match="absolute path"):
        render_unit(unit_argv("x"), "relative/state")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    argv = unit_argv("/var/lib/wodsync")
    argv[6] = "https://deploy@git.example.org/org/cat alog.git?x=100%"
    path = tmp_path / "wodsync.service"
    path.write_text(render_unit(argv, "/var/lib/wodsync"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "wodsync.service" not in result.stderr, result.stderr


def test_a_validator_that_crashes_blocks_the_revision(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import wodsync.catalog

    def crash(root: Path) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(wodsync.catalog, "validate", crash)
    check = check_revision(tmp_path, sha="f" * 40)
    assert not check.ok
    assert [(d.code, d.message) for d in check.errors] == [
        ("internal-error", "validation failed: RuntimeError: boom")]


def test_the_unit_never_holds_the_store_url_and_says_where_it_goes(tmp_path: Path) -> None:
    url = "postgresql+psycopg://wod:s3cr3t-pw@db.example.org/wodsync"
    result = wodsync("daemon", "--repo", "https://git.example.org/c.git", "--state",
                     tmp_path / "state", "--db", url, "--print-unit")
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pw" not in result.stdout and "--db" not in result.stdout
    assert "WODSYNC_DB=" in result.stderr and "/etc/wodsync/env" in result.stderr
    assert parse_unit(result.stdout)["Service"]["EnvironmentFile"] == "/etc/wodsync/env"


def test_the_store_url_is_read_from_the_environment(tmp_path: Path, repo: Any) -> None:
    db = tmp_path / "elsewhere.db"
    env = {**os.environ, "WODSYNC_DB": f"sqlite:///{db}"}
    result = wodsync("session", "list", "--root", repo.root, "--state-dir", tmp_path / "state",
                     env=env)
    assert result.returncode == 0, result.stderr
    assert db.exists()
