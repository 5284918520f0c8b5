"""Reading repository files without ever following a link, at any depth.

Templates and workshop files are read on the controller and written to hosts, often as root.
A link in a pull request (`templates/skel -> /root`, or a symlinked folder deeper down) would
make wodsync copy a controller file into a host file. Checking `is_symlink()` on the last path
component is not enough, and checking before opening races with the file system, so every
reader of repository files goes through `read_repo_file`: it walks the path one component at a
time from the repository root, opening each folder with `O_NOFOLLOW|O_DIRECTORY` relative to its
parent's descriptor and the file with `O_NOFOLLOW`, and refuses anything that is not a regular
file. A refusal is a `RepoFileError` naming the offending path, never a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that replaced the file after the check must not hang.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class RepoFileError(Exception):
    """A repository file that cannot be read safely; `path` is the offending component.

    `code` is the diagnostic code: `symlink`, `missing-file`, `not-a-folder`, `special-file`,
    `file-too-large`, `unsafe-path` or `encoding`.
    """

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.code = code
        self.path = path
        self.message = message


@dataclass(frozen=True)
class RepoFile:
    """A file's bytes and its mode as opened (the mode decides whether a copy is executable)."""

    data: bytes
    mode: int


def _parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise RepoFileError("unsafe-path", rel, "a repository path is relative, without '.', "
                            "'..' or empty segments")
    return parts


def _open_dir(parent: int, name: str, rel: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(exc, parent, name, rel, "a folder") from None


def _refusal(exc: OSError, parent: int, name: str, rel: str, opened_as: str) -> RepoFileError:
    """The error for a component that could not be opened, checked with lstat for links."""
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        return RepoFileError("symlink", rel, "is a symbolic link; wodsync never reads through "
                             "links in the repository")
    if exc.errno == errno.ENOENT:
        return RepoFileError("missing-file", rel, "does not exist")
    if exc.errno == errno.ENOTDIR:
        return RepoFileError("not-a-folder", rel, f"is not {opened_as}")
    return RepoFileError("special-file", rel, f"cannot be opened as {opened_as}: {exc.strerror}")


def _open_file(parent: int, name: str, rel: str) -> int:
    """Open the last component: it must be a regular file, the same one lstat saw."""
    try:
        before = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError as exc:
        raise _refusal(exc, parent, name, rel, "a file") from None
    if stat.S_ISLNK(before.st_mode):
        raise RepoFileError("symlink", rel, "is a symbolic link; wodsync never reads through "
                            "links in the repository")
    if not stat.S_ISREG(before.st_mode):
        raise RepoFileError("special-file", rel, "is not a regular file")
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(exc, parent, name, rel, "a file") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) \
            or not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise RepoFileError("special-file", rel, "changed while it was being opened")
    return fd


def open_repo_file(root: Path, rel: str) -> int:
    """A read-only descriptor of `root/rel` reached without following any link (caller closes).

    `root` itself is the caller's choice and may be reached through links; nothing under it is.
    """
    parts = _parts(rel)
    fd = open_repo_dir(root, "/".join(parts[:-1]))
    try:
        return _open_file(fd, parts[-1], rel)
    finally:
        os.close(fd)


def load_repo_file(root: Path, rel: str, *, max_bytes: int | None = None) -> RepoFile:
    """Bytes and mode of `root/rel`; see `open_repo_file`. `max_bytes` refuses larger files
    before reading them."""
    fd = open_repo_file(root, rel)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if max_bytes is not None and info.st_size > max_bytes:
            raise RepoFileError("file-too-large", rel, f"is {info.st_size} bytes; the limit is "
                                f"{max_bytes}")
        os.set_blocking(f.fileno(), True)
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise RepoFileError("file-too-large", rel, f"grew past the limit of {max_bytes} bytes")
    return RepoFile(data, info.st_mode)


def read_repo_file(root: Path, rel: str, *, max_bytes: int | None = None) -> bytes:
    """The bytes of `root/rel`, read without following a link anywhere on the way."""
    return load_repo_file(root, rel, max_bytes=max_bytes).data


def check_repo_file(root: Path, rel: str) -> RepoFileError | None:
    """Why `root/rel` cannot be read (see `open_repo_file`), or None; nothing is read."""
    try:
        os.close(open_repo_file(root, rel))
    except RepoFileError as exc:
        return exc
    return None


def read_repo_text(root: Path, rel: str) -> str:
    """`read_repo_file` decoded as UTF-8; a file that is not UTF-8 is a `RepoFileError`."""
    raw = read_repo_file(root, rel)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RepoFileError("encoding", rel, f"is not UTF-8 (line {line})") from None


def open_repo_dir(root: Path, rel: str) -> int:
    """A descriptor of the folder `root/rel` reached without following any link (caller
    closes); `rel` may be '' for the root itself."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RepoFileError("missing-file", str(root), f"repository root cannot be opened: "
                            f"{exc.strerror}") from None
    parts = _parts(rel) if rel else []
    try:
        for i, name in enumerate(parts):
            child = _open_dir(fd, name, "/".join(parts[:i + 1]))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


Visitor = Callable[[str, os.DirEntry[str], int], bool]


def walk_repo_tree(root: Path, rel: str, visit: Visitor) -> None:
    """Call `visit(entry_rel, entry, depth)` for every entry under the folder `root/rel`, in
    name order, depth first; a folder is entered when `visit` returns True for it.

    Folders are opened by descriptor relative to their parent with `O_NOFOLLOW`, so a link
    is only ever seen as an entry (`entry.is_symlink()`), never walked through.
    """
    stack = [(open_repo_dir(root, rel), rel, 0)]
    try:
        while stack:
            fd, folder, depth = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                for entry in entries:
                    entry_rel = f"{folder}/{entry.name}" if folder else entry.name
                    if visit(entry_rel, entry, depth) and entry.is_dir(follow_symlinks=False):
                        stack.append((_open_dir(fd, entry.name, entry_rel), entry_rel,
                                      depth + 1))
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
