"""Following the repository: a bare mirror of one branch, and immutable exports of its commits.

The daemon deploys exactly what was merged, so it never works in a checkout it could edit (or a
hook could edit): it keeps a bare mirror of the branch under `<state>/source.git` and turns each
commit it acts on into a read-only folder `<state>/revisions/<sha>` from `git archive`. The
export is unpacked into a private temporary folder and renamed into place, so a folder either
does not exist or is complete; a second export of the same commit is a no-op. The commit's
own `.gitattributes` cannot alter the export (`export-ignore`, `export-subst`, line endings):
the mirror's `info/attributes` turns those off, so the folder is the exact tree.

An export is bounded (`ExportLimits`: bytes in all, files, bytes of one file), since a commit
whose blobs compress well is small to fetch and huge to write. Before anything is written,
`git ls-tree -r -l` gives every blob's size from the object headers (nothing is inflated); a
commit over a bound is refused there with `RevisionTooLarge`, which names the sizes and the
largest file. The unpacking checks the same bounds again on the tar stream, so if git's two
answers ever differed the export would still stop at the bound and leave nothing behind.

Every git failure is a `SourceError` whose message names the repository (credentials in an URL
are never shown) and git's own reason; a fetch that fails is a `FetchError`, an export that
cannot be written (a full disk, a read-only state folder) an `ExportError` — expected failures
the daemon reports in one line and retries, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
from gitdb.exc import ODBError

from wodsync.diagnostics import Diagnostic
from wodsync.source.archive import (
    ArchiveError,
    ExportLimits,
    Tally,
    TooLarge,
    extract_tree,
    make_writable,
    manifest_path,
    read_manifest,
    refused_json,
    write_manifest,
)

log = logging.getLogger("wodsync.source")
SOURCE_DIR = "source.git"
REVISIONS_DIR = "revisions"
FETCH_TIMEOUT_S = 60.0
KEEP_REVISIONS = 5
STALE_S = 600.0  # a leftover temporary folder older than this is from a dead process
ALLOW_DELETIONS_TRAILER = "Wodsync-Allow-Deletions"
SHA_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Highest-precedence attributes: whatever the commit's .gitattributes says, archive the tree as
# stored (nothing left out, no keyword expansion, no line-ending or filter conversion).
EXACT_ATTRIBUTES = ("* -export-ignore -export-subst -text -eol -ident -filter "
                    "-working-tree-encoding\n")


class SourceError(Exception):
    """Fetching or exporting failed; the message names the repository, branch or commit."""


class FetchError(SourceError):
    """The branch cannot be fetched (the remote moved, unreachable, refused, timed out) or the
    mirror cannot be opened: retried with back-off."""


class ExportError(SourceError):
    """A commit cannot be written out (no space, a read-only folder): not the commit's fault,
    retried with back-off."""


class RevisionTooLarge(SourceError):
    """The commit is larger than the export limits. Not a failure to retry but a property of
    the commit: the daemon records it as an invalid revision, located at the file that makes it
    too large (`diagnostic()`), as it records a catalog that does not validate."""

    def __init__(self, sha: str, path: str, reason: str) -> None:
        super().__init__(f"revision {sha[:12]} is too large: {reason}")
        self.sha, self.path, self.reason = sha, path, reason

    def diagnostic(self) -> Diagnostic:
        return Diagnostic(self.path, 1, 1, "revision-too-large",
                          f"too large to export: {self.reason}")


def redact(url: str) -> str:
    """The URL without the password or token an operator may have put in it."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", url)


def normalize_url(url_or_path: str | Path) -> str:
    """An URL as given, or a local path made absolute (git runs inside the mirror)."""
    text = str(url_or_path)
    if not text.strip() or text.startswith("-") or any(c in text for c in "\0\n\r"):
        raise SourceError(f"repository {text!r}: not a usable URL or path")
    is_url = "://" in text or text.startswith("file:") \
        or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", text) is not None \
        or re.match(r"^[^/]+@[^/:]+:", text) is not None
    if isinstance(url_or_path, Path) or not is_url:
        return str(Path(text).expanduser().absolute())
    return text


def check_branch(branch: str) -> str:
    """A branch name git accepts and that cannot be read as an option or a refspec trick."""
    ok = bool(branch) and not branch.startswith("-") and re.fullmatch(r"[\w./-]+", branch) \
        and ".." not in branch and not branch.endswith((".", "/", ".lock")) \
        and "//" not in branch and not branch.startswith("/")
    if not ok:
        raise SourceError(f"branch {branch!r}: not a valid branch name")
    return branch


def git_reason(exc: git.GitError) -> str:
    """git's own words for a failure: its `fatal:`/`error:` lines, else its last line."""
    text = getattr(exc, "stderr", "") or str(exc)
    text = re.sub(r"^\s*stderr: '", "", text.strip()).rstrip("'")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked = [ln for ln in lines if ln.startswith(("fatal:", "error:"))] or lines[-1:]
    reason = "; ".join(ln.split(":", 1)[1].strip() if ln.startswith(("fatal:", "error:"))
                       else ln for ln in picked)
    return redact(reason) or type(exc).__name__


def _git_env() -> dict[str, str]:
    """Never wait for a human: no credential prompt, SSH in batch mode unless configured."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if "GIT_SSH_COMMAND" not in os.environ and "GIT_SSH" not in os.environ:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


class GitSource:
    """One branch of one repository, mirrored under `state_dir`; thread-safe."""

    def __init__(self, url_or_path: str | Path, branch: str, state_dir: Path, *,
                 timeout: float = FETCH_TIMEOUT_S, limits: ExportLimits | None = None) -> None:
        self.url = normalize_url(url_or_path)
        self.branch = check_branch(branch)
        self.state_dir = Path(state_dir)
        self.timeout = timeout
        self.limits = limits or ExportLimits()
        self.mirror = self.state_dir / SOURCE_DIR
        self.revisions = self.state_dir / REVISIONS_DIR
        self._lock = threading.RLock()
        self._repo: git.Repo | None = None

    def __repr__(self) -> str:
        return f"GitSource({redact(self.url)!r}, {self.branch!r}, {str(self.state_dir)!r})"

    @property
    def name(self) -> str:
        """`url#branch` for messages and status, without credentials."""
        return f"{redact(self.url)}#{self.branch}"

    def __enter__(self) -> GitSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the git helper processes GitPython keeps for this mirror."""
        with self._lock:
            if self._repo is not None:
                self._repo.close()
                self._repo = None

    # -- the mirror -------------------------------------------------------------------------

    def _open(self) -> git.Repo:
        """The mirror, created on first use (in a temporary folder renamed into place)."""
        if self._repo is not None:
            return self._repo
        try:
            if not self.mirror.exists():
                self._create_mirror()
            repo = git.Repo(self.mirror)
            repo.git.update_environment(**_git_env())
            self._configure(repo)
        except (git.GitError, OSError) as exc:
            reason = git_reason(exc) if isinstance(exc, git.GitError) else _os_reason(exc)
            raise FetchError(f"mirror {self.mirror} of {self.name}: {reason}") from None
        self._repo = repo
        return repo

    def _create_mirror(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".source-", dir=self.state_dir))
        try:
            git.Repo.init(tmp, bare=True).close()
            tmp.rename(self.mirror)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.mirror.is_dir():  # else another process created it meanwhile
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _configure(self, repo: git.Repo) -> None:
        attributes = self.mirror / "info" / "attributes"
        if not attributes.is_file() or attributes.read_text() != EXACT_ATTRIBUTES:
            attributes.parent.mkdir(exist_ok=True)
            attributes.write_text(EXACT_ATTRIBUTES)
        names = [r.name for r in repo.remotes]
        if "origin" not in names:
            repo.create_remote("origin", self.url)
        elif repo.remote("origin").url != self.url:
            repo.remote("origin").set_url(self.url)

    def fetch(self) -> str:
        """Fetch the branch (bounded by the timeout) and return its head commit."""
        ref = f"refs/heads/{self.branch}"
        previous = self.head()
        with self._lock:
            repo = self._open()
            try:
                repo.remote("origin").fetch(f"+{ref}:{ref}", kill_after_timeout=self.timeout,
                                            no_tags=True)
                head: str = repo.git.rev_parse("--verify", "--end-of-options",
                                               f"{ref}^{{commit}}")
                if previous and head != previous and not self._contains(repo, head, previous):
                    log.warning("source: branch %s of %s was rewritten (a force-push): its head "
                                "moved from %s to %s, which does not contain it", self.branch,
                                redact(self.url), previous[:12], head[:12])
                return head
            except git.GitError as exc:
                reason = git_reason(exc)
                if "timed out" in reason or "kill_after_timeout" in reason:
                    reason = f"timed out after {self.timeout:g} s"
                raise FetchError(f"cannot fetch branch {self.branch} from "
                                 f"{redact(self.url)}: {reason}") from None

    @staticmethod
    def _contains(repo: Any, head: str, previous: str) -> bool:
        """Whether `head` descends from `previous` (a fast-forward, not a rewrite)."""
        try:
            repo.git.merge_base("--is-ancestor", previous, head)
        except git.GitCommandError:
            return False
        return True

    def head(self) -> str | None:
        """The branch head as last fetched (no network), or None before the first fetch."""
        with self._lock:
            try:
                return self._open().git.rev_parse("--verify", "--quiet", "--end-of-options",
                                                  f"refs/heads/{self.branch}^{{commit}}")
            except git.GitCommandError:
                return None

    def _resolve(self, sha: str) -> str:
        """The full id of a commit present in the mirror (an abbreviation is accepted)."""
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{4,64}", sha):
            raise SourceError(f"commit {sha!r}: not a commit id")
        try:
            return self._open().git.rev_parse("--verify", "--quiet", "--end-of-options",
                                              f"{sha}^{{commit}}")
        except git.GitCommandError:
            raise SourceError(f"commit {sha} is not in the mirror of {self.name} (not fetched, "
                              "or not a commit)") from None

    def _commit(self, sha: str) -> Any:
        full = self._resolve(sha)
        try:
            return self._open().commit(full)
        except (ValueError, ODBError, git.GitError) as exc:
            raise SourceError(f"commit {sha} of {self.name}: {exc}") from None

    # -- commit metadata --------------------------------------------------------------------

    def message(self, sha: str) -> str:
        with self._lock:
            message = self._commit(sha).message
        return message.decode(errors="replace") if isinstance(message, bytes) else message

    def author(self, sha: str) -> str:
        """`Name <email>` of the commit's author, for logs and history."""
        with self._lock:
            author = self._commit(sha).author
        return f"{author.name} <{author.email}>"

    def trailers(self, sha: str) -> dict[str, list[str]]:
        """The commit message's trailers (`git interpret-trailers --parse`), key → values."""
        with self._lock:
            commit = self._commit(sha)
            try:
                pairs = commit.trailers_list
            except (ValueError, git.GitError) as exc:
                raise SourceError(f"commit {sha}: cannot parse trailers: {exc}") from None
        out: dict[str, list[str]] = {}
        for key, value in pairs:
            out.setdefault(key, []).append(value)
        return out

    def allow_deletions(self, sha: str) -> int | None:
        """N from the commit's last `Wodsync-Allow-Deletions: N` trailer, None without one.

        A value that is not a non-negative integer is a `SourceError`: an operator's consent
        is never guessed.
        """
        values = [v for k, vs in self.trailers(sha).items()
                  if k.lower() == ALLOW_DELETIONS_TRAILER.lower() for v in vs]
        if not values:
            return None
        if not re.fullmatch(r"[0-9]{1,9}", values[-1]):
            raise SourceError(f"commit {sha[:12]}: trailer {ALLOW_DELETIONS_TRAILER}: "
                              f"{values[-1]!r} is not a number of accounts")
        return int(values[-1])

    # -- exports ----------------------------------------------------------------------------

    def revision_path(self, sha: str) -> Path:
        return self.revisions / sha

    def export(self, sha: str) -> Path:
        """The read-only folder `<state>/revisions/<sha>` holding the commit's exact tree.

        Raises `RevisionTooLarge` for a commit over `self.limits`, with nothing written.
        """
        with self._lock:
            full = self._resolve(sha)
            final = self.revision_path(full)
            if final.is_dir():
                return final
            self._check_size(full)
            try:
                self.revisions.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{full[:12]}-", dir=self.revisions))
            except OSError as exc:
                raise ExportError(f"cannot export commit {full[:12]} into {self.revisions}: "
                                  f"{_os_reason(exc)}") from None
            try:
                files, refused = self._archive_into(full, tmp)
                write_manifest(final, {"sha": full, "exported_at": time.time(),
                                       "files": files, "refused_links": refused_json(refused)})
                tmp.rename(final)
            except OSError as exc:
                _remove_tree(tmp)
                if final.is_dir():  # another process exported it meanwhile
                    return final
                raise ExportError(f"cannot export commit {full[:12]} into {final}: "
                                  f"{_os_reason(exc)}") from None
            except BaseException:
                _remove_tree(tmp)
                raise
            return final

    def measure(self, sha: str) -> tuple[Tally, bool]:
        """The commit's files and bytes, from `git ls-tree -r -l` (sizes from the object
        headers: nothing inflated, nothing written), and whether the count is complete.

        Reading stops once more files than the limit are counted: a tree fanned out through
        subtrees to millions of entries costs no more than the limit.
        """
        with self._lock:
            return self._measure(self._resolve(sha))

    def _measure(self, full: str) -> tuple[Tally, bool]:
        proc = self._open().git.ls_tree("-r", "-l", "-z", "--end-of-options", full,
                                        as_process=True)
        try:
            tally, complete = self._tally(proc.proc.stdout)
            if complete:
                proc.wait()  # git's own failure (a corrupt mirror) is not a small commit
        except git.GitError as exc:
            raise SourceError(f"cannot list commit {full} of {self.name}: "
                              f"{git_reason(exc)}") from None
        finally:
            _stop(proc)
        return tally, complete

    def _tally(self, stream: Any) -> tuple[Tally, bool]:
        tally = Tally()
        for record in _records(stream):
            meta, _, path = record.partition(b"\t")
            fields = meta.split()
            if len(fields) != 4 or fields[1] != b"blob":
                continue  # a submodule (a commit): `git archive` leaves it out too
            tally.add(path.decode(errors="replace"), int(fields[3]))
            if tally.files > self.limits.max_files:
                return tally, False
        return tally, True

    def _check_size(self, full: str) -> None:
        tally, complete = self._measure(full)
        if tally.over(self.limits):
            raise RevisionTooLarge(full, tally.where(self.limits),
                                   tally.describe(self.limits, complete))

    def _archive_into(self, sha: str, dest: Path) -> tuple[int, list[Any]]:
        repo = self._open()
        proc = repo.git.archive("--format=tar", "--end-of-options", sha, as_process=True)
        try:
            result = extract_tree(proc.proc.stdout, dest, self.limits)
            proc.proc.stdout.read()  # the archive's padding, so git can exit
            proc.wait()
        except TooLarge as exc:  # git is stopped below, without reading the rest
            raise RevisionTooLarge(sha, exc.path, exc.reason) from None
        except ArchiveError as exc:
            reason = str(exc)
            try:
                proc.wait()
            except git.GitError as failed:  # git's own reason explains the broken stream
                reason = git_reason(failed)
            raise SourceError(f"commit {sha} of {self.name}: {reason}") from None
        except git.GitError as exc:
            raise SourceError(f"cannot export commit {sha}: {git_reason(exc)}") from None
        finally:
            _stop(proc)
        return result

    def exported(self) -> list[str]:
        """Exported commits, most recently exported first."""
        if not self.revisions.is_dir():
            return []
        shas = [p.name for p in self.revisions.iterdir()
                if SHA_RE.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
        return sorted(shas, key=self._exported_at, reverse=True)

    def _exported_at(self, sha: str) -> float:
        folder = self.revision_path(sha)
        stamp = read_manifest(folder).get("exported_at")
        return float(stamp) if isinstance(stamp, (int, float)) else folder.stat().st_mtime

    def prune(self, keep: int = KEEP_REVISIONS, protect: set[str] | frozenset[str] = frozenset(),
              ) -> list[str]:
        """Remove all but the `keep` most recent exports and those in `protect` (the revision
        applied, the last good one); also leftovers of interrupted exports. Returns the
        removed commits."""
        with self._lock:
            shas = self.exported()
            removed = [s for s in shas[max(keep, 0):] if s not in protect]
            try:
                for sha in removed:
                    _remove_tree(self.revision_path(sha))
                    manifest_path(self.revision_path(sha)).unlink(missing_ok=True)
                self._remove_leftovers()
            except OSError as exc:
                raise ExportError(f"cannot remove old revisions from {self.revisions}: "
                                  f"{_os_reason(exc)}") from None
            return removed

    def _remove_leftovers(self) -> None:
        if not self.revisions.is_dir():
            return
        now = time.time()
        for path in self.revisions.iterdir():
            if path.name.startswith(".") and now - path.lstat().st_mtime > STALE_S:
                if path.is_dir() and not path.is_symlink():
                    _remove_tree(path)
                else:
                    path.unlink(missing_ok=True)
            elif path.suffix == ".json" and not path.with_suffix("").is_dir():
                path.unlink(missing_ok=True)


def _os_reason(exc: OSError) -> str:
    """The system's words for an OS error (`No space left on device`), not Python's repr."""
    return exc.strerror or str(exc)


def _records(stream: Any, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The NUL-terminated records of `git … -z` output, read a chunk at a time."""
    rest = b""
    while data := stream.read(chunk):
        *done, rest = (rest + data).split(b"\0")
        yield from done
    if rest:
        yield rest


def _stop(proc: Any) -> None:
    """Kill a git process still running (its output was not read to the end) and reap it."""
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait()


def _remove_tree(path: Path) -> None:
    """Remove a sealed folder: first out of sight (rename), then writable, then gone."""
    if not path.exists() or path.is_symlink():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(OSError):
        path.rename(trash)
        path = trash
    make_writable(path)
    shutil.rmtree(path)
