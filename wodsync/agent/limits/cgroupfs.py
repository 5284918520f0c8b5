"""Root's writes in a cgroup tree, through directory descriptors.

A cgroup filesystem has no symlinks and no student can write in it, but nothing here trusts
that: every folder below a hierarchy's mount is opened with `O_NOFOLLOW` from its parent's
descriptor, and the names walked are checked to be plain (no `/`, no `.` or `..`) — they are
`wodsync`, a workshop key and a seat's user name, never anything a student chose.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str) -> str:
    """A folder name of the tree: a plain name, never `.`, `..` or a path."""
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a plain cgroup name")
    return name


@contextmanager
def opened(base: str, parts: Sequence[str], create: bool = False) -> Iterator[int]:
    """The folder `base/parts…` as a descriptor, each part opened from its parent without
    following a link; `create` makes the missing ones (mode 0755)."""
    fd = os.open(base, DIR_FLAGS & ~os.O_NOFOLLOW)  # the mount (or the test's fake tree)
    try:
        for part in parts:
            check_name(part)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def write(dir_fd: int, name: str, value: str) -> None:
    """One interface file of a cgroup set to `value` (the kernel checks it: a refused value is
    an OSError naming the file)."""
    fd = os.open(check_name(name), WRITE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"{name} = {value}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read(dir_fd: int, name: str) -> str:
    fd = os.open(check_name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 20).decode()
    finally:
        os.close(fd)


def exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def children(base: str, parts: Sequence[str]) -> list[str]:
    """The sub-folders of `base/parts…` ([] when it does not exist)."""
    try:
        with opened(base, parts) as fd:
            return sorted(e.name for e in os.scandir(fd) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


def pids(dir_fd: int) -> list[int]:
    return [int(line) for line in read(dir_fd, "cgroup.procs").split() if line.isdigit()]


def remove(base: str, parts: Sequence[str], settle: float = 3.0) -> list[str]:
    """The cgroup `base/parts…` emptied (its processes are a released seat's: SIGKILL) and
    removed; what could not be removed is named (a process that did not die in `settle` s)."""
    parent, name = list(parts[:-1]), check_name(parts[-1])
    try:
        with opened(base, parent) as fd:
            deadline = time.monotonic() + settle
            while True:
                try:
                    os.rmdir(name, dir_fd=fd)
                    return []
                except FileNotFoundError:
                    return []
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        return [f"{os.path.join(base, *parts)}: {exc.strerror}"]
                _kill_inside(fd, name)
                time.sleep(0.02)
    except FileNotFoundError:
        return []


def prune(base: str, parts: Sequence[str]) -> None:
    """`base/parts…` removed if it has no cgroup below it and no process (else left)."""
    try:
        with opened(base, list(parts[:-1])) as fd:
            os.rmdir(check_name(parts[-1]), dir_fd=fd)
    except OSError:
        pass


def _kill_inside(parent_fd: int, name: str) -> None:
    with opened_at(parent_fd, name) as fd:
        for pid in pids(fd):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def opened_at(parent_fd: int, name: str) -> Iterator[int]:
    fd = os.open(check_name(name), DIR_FLAGS, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)
