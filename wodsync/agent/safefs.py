"""Link-safe file work below student homes, for an agent that runs as root.

Why: a student owns their home and may plant a symlink or a hard link at any path root is
about to use, or swap one in while root works. Root following `~/WKSHP-X -> /some/root/dir`
once writes root's files there and gives them away; following `~/WKSHP-X/scripts ->
/etc/profile.d` hands the student a login script that root runs. So nothing here passes a path
below a home to a path-based call: every step is taken relative to a directory fd opened with
O_NOFOLLOW, files are created with O_EXCL, and owners and modes are set with fchown/fchmod on
the fd of what root itself just created (never on a file with more than one link). A home's
parent (home_root) is trusted: owned by root and writable by root only, which is checked.

Policy for a folder component that is not a real folder (a symlink, a file, a fifo): it is
removed with unlinkat (never followed) and replaced by a folder root creates and gives to the
seat, because the home is the seat's and a CREATE wants the folder there. A folder that exists
but is not the seat's (root-owned, another account's, on another mount) is refused with the
reason: something the student could not have made appeared in the home.

Standard library only: shipped to hosts and imported there from memory (python3 >= 3.9).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from contextlib import contextmanager, suppress
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

SkelEntry = Tuple[str, int, Optional[bytes]]
"""(relative path, mode, content; None for a folder), parents before their children."""
TreeFile = Tuple[str, bytes, int]
"""(path relative to the workshop folder, content, mode)."""
AclEntry = Tuple[int, int, int]
"""(tag, permission bits, id) as in the kernel's posix_acl_xattr_entry."""

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a fifo never blocks
RETRIES = 8
"""Attempts at one name: a name that changes more often under root is a student racing it."""
MAX_OPEN_DIRS = 64
"""Folder fds held along one path while writing; deeper paths are walked again from the home."""
MAX_DEPTH = 64
"""empty_dir moves folders deeper than this to the top instead of holding more fds."""
SCANS = 3
"""Listings of one folder while emptying it: entries a student keeps adding are then left."""
HOME_DIR_MODE = 0o755
"""Mode of folders root creates inside a home when the caller names none."""

ACL_ACCESS = "system.posix_acl_access"
ACL_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 16, 32
ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_HEADER, _ACL_ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


class SafeFsError(Exception):
    """A refusal or failure naming the path and the reason, for a one-line report."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidPath(SafeFsError, ValueError):
    """A relative path that could leave its folder or is malformed."""


class UnsafePath(SafeFsError):
    """Something in or around a home that root must not use."""


class NotEmpty(SafeFsError):
    """A home that still holds what its student made."""


class TreeCounts(NamedTuple):
    """What a write did: files written, existing names kept, folders made, names replaced."""

    written: int = 0
    kept: int = 0
    folders: int = 0
    replaced: int = 0


class EmptyResult(NamedTuple):
    """What emptying did: entries removed, and (path, reason) of what was left alone."""

    removed: int
    left: List[Tuple[str, str]]


# -- small helpers ----------------------------------------------------------------------------

def split_rel(rel: str) -> List[str]:
    """The segments of a relative path, refusing anything that could leave its folder."""
    if not isinstance(rel, str) or not rel:
        raise InvalidPath(repr(rel), "an empty path")
    if "\0" in rel:
        raise InvalidPath(repr(rel), "a NUL byte in a path")
    if rel.startswith("/"):
        raise InvalidPath(rel, "an absolute path where a relative one belongs")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(rel, "an empty, '.' or '..' segment")
        if len(os.fsencode(part)) > 255:
            raise InvalidPath(rel, "a name longer than 255 bytes")
    return parts


def _check_name(name: str) -> None:
    if len(split_rel(name)) != 1:
        raise InvalidPath(name, "a home name must be one path segment")


def _label(fd: int) -> str:
    """Where an fd points, for messages only (never used to reach a file)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"<fd {fd}>"


def _mount_id(fd: int) -> Optional[int]:
    """The mount an fd lies on: a bind mount of the same filesystem has the same st_dev."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _scan(fd: int, skip: Collection[str] = ()) -> List[Tuple[str, bool]]:
    """(name, is a real folder) of a folder's entries, links not followed."""
    with os.scandir(fd) as entries:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in entries if e.name not in skip]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_regular(dir_fd: int, name: str, limit: int) -> Optional[bytes]:
    """A regular file's bytes (at most limit + 1), or None when it is anything else."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_file(home_fd: int, rel: str, limit: int) -> Optional[bytes]:
    """A regular file below the home, read without following a link at any depth; None when
    it (or a folder on the way) is missing, a link or not a regular file; at most limit + 1
    bytes, so a caller can tell a file over its limit."""
    parts = split_rel(rel)
    fds: List[int] = []
    try:
        current = home_fd
        for part in parts[:-1]:
            try:
                current = os.open(part, DIR_FLAGS, dir_fd=current)
            except OSError:
                return None
            fds.append(current)
        return _read_regular(current, parts[-1], limit)
    finally:
        for fd in fds:
            os.close(fd)


def _os_error(where: str, exc: OSError) -> SafeFsError:
    return SafeFsError(where, exc.strerror or str(exc))


# -- homes ------------------------------------------------------------------------------------

def _open_root(home_root: Union[str, int]) -> Tuple[int, bool]:
    """The trusted parent of homes as an fd, and whether the caller of this helper closes it."""
    if isinstance(home_root, int):
        fd, owned, where = home_root, False, _label(home_root)
    else:
        where = home_root
        try:
            fd, owned = os.open(home_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), True
        except OSError as exc:
            raise _os_error(where, exc) from None
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
        if owned:
            os.close(fd)
        raise UnsafePath(where, f"a home root must be a folder owned by root and writable by "
                                f"root only (owner uid {st.st_uid}, mode "
                                f"{stat.S_IMODE(st.st_mode):o})")
    return fd, owned


def _open_at(root_fd: int, name: str, where: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        raise SafeFsError(where, "no such home") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(where, "is a symbolic link, not a home folder; refused") from None
        if exc.errno == errno.ENOTDIR:  # what Linux says for O_DIRECTORY on a symlink
            what = "a symbolic link" if _is_link(root_fd, name) else "not a folder"
            raise UnsafePath(where, f"is {what}, not a home folder; refused") from None
        raise _os_error(where, exc) from None


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_owner(fd: int, where: str, uid: int, gid: Optional[int]) -> None:
    st = os.fstat(fd)
    if st.st_uid != uid or (gid is not None and st.st_gid != gid):
        os.close(fd)
        raise UnsafePath(where, f"is owned by {st.st_uid}:{st.st_gid}, not by the seat "
                                f"{uid}:{gid if gid is not None else '*'}; refused")


def open_home(home: str, uid: int, gid: Optional[int] = None) -> int:
    """The home's folder fd (the caller closes it), refusing a link or a stranger's folder.

    Only the home's parent is reached by path; the home itself is opened relative to it with
    O_NOFOLLOW, so a symlink planted in its place is an error naming it.
    """
    if not isinstance(home, str) or not os.path.isabs(home):
        raise InvalidPath(str(home), "a home must be an absolute path")
    if any(part in (".", "..") for part in home.split("/")):
        raise InvalidPath(home, "a home path must not contain '.' or '..'")
    parent, name = os.path.split(os.path.normpath(home))
    _check_name(name)
    root_fd, _ = _open_root(parent)
    try:
        fd = _open_at(root_fd, name, home)
    finally:
        os.close(root_fd)
    _check_owner(fd, home, uid, gid)
    return fd


@contextmanager
def opened_home(home: str, uid: int, gid: Optional[int] = None) -> Iterator[int]:
    """open_home for a `with` block: the fd is closed however the block ends."""
    fd = open_home(home, uid, gid)
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_home(home_root: Union[str, int], name: str, uid: int, gid: int, mode: int = 0o700,
                acl_user_uid: Optional[int] = None) -> List[str]:
    """A home owned by its seat with `mode` (and rwx for acl_user_uid), created if missing.

    Returns what was done ("created", "owner", "mode", "acl"): nothing when already right, so
    a planner's second run writes nothing. A folder cannot be hard-linked, so fixing an
    existing home through its fd never touches anything else.
    """
    _check_name(name)
    root_fd, owned = _open_root(home_root)
    where = os.path.join(home_root if isinstance(home_root, str) else _label(root_fd), name)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            changes = ["created"]
        except FileExistsError:
            changes = []
        except OSError as exc:
            raise _os_error(where, exc) from None
        fd = _open_at(root_fd, name, where)
    finally:
        if owned:
            os.close(root_fd)
    try:
        fixed = _fix_home(fd, uid, gid, mode & 0o7777, acl_user_uid, where)
        return changes or fixed
    finally:
        os.close(fd)


def _fix_home(fd: int, uid: int, gid: int, mode: int, acl_user: Optional[int],
              where: str) -> List[str]:
    changes = []
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
            changes.append("owner")
        if acl_user is None:
            changes += _drop_acl(fd, mode)
        else:
            changes += _set_acl(fd, mode, acl_user)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            raise SafeFsError(where, "its filesystem does not support POSIX ACLs") from None
        raise _os_error(where, exc) from None
    return changes


def _drop_acl(fd: int, mode: int) -> List[str]:
    changes = []
    if read_acl(fd) is not None:
        os.removexattr(fd, ACL_ACCESS)
        changes.append("acl")
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
        changes.append("mode")
    return changes


def _set_acl(fd: int, mode: int, user: int) -> List[str]:
    """The ACL decides the rwx bits (the mask shows as the group bits); special bits are
    set by chmod, which would also reset the mask, so it goes first."""
    changes = []
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o7000 != mode & 0o7000:
        os.fchmod(fd, mode)
        changes.append("mode")
    wanted = _home_acl(mode, user)
    seen = stat.S_IMODE(os.fstat(fd).st_mode)
    if read_acl(fd) != wanted or seen != (mode & 0o7707) | 0o070:
        os.setxattr(fd, ACL_ACCESS, encode_acl(wanted))
        changes.append("acl")
    return changes


def _home_acl(mode: int, user: int) -> List[AclEntry]:
    return [(ACL_USER_OBJ, (mode >> 6) & 7, ACL_UNDEFINED_ID), (ACL_USER, 7, user),
            (ACL_GROUP_OBJ, (mode >> 3) & 7, ACL_UNDEFINED_ID), (ACL_MASK, 7, ACL_UNDEFINED_ID),
            (ACL_OTHER, mode & 7, ACL_UNDEFINED_ID)]


# -- POSIX ACLs -------------------------------------------------------------------------------

def encode_acl(entries: Sequence[AclEntry]) -> bytes:
    """The kernel's xattr form: a version 2 header, then (tag, perm, id) little-endian,
    sorted by tag and id as the kernel requires."""
    body = b"".join(_ACL_ENTRY.pack(tag, perm, ident) for tag, perm, ident in sorted(entries))
    return _ACL_HEADER.pack(ACL_VERSION) + body


def decode_acl(data: bytes) -> List[AclEntry]:
    """The entries of an xattr-form ACL; a malformed one raises ValueError."""
    size, step = _ACL_HEADER.size, _ACL_ENTRY.size
    if len(data) < size or (len(data) - size) % step:
        raise ValueError(f"a POSIX ACL of {len(data)} bytes is malformed")
    if _ACL_HEADER.unpack_from(data)[0] != ACL_VERSION:
        raise ValueError("a POSIX ACL of an unknown version")
    return [_ACL_ENTRY.unpack_from(data, off) for off in range(size, len(data), step)]


def read_acl(fd: int) -> Optional[List[AclEntry]]:
    """The access ACL of an fd, or None when its mode says everything (no extended ACL)."""
    try:
        return decode_acl(os.getxattr(fd, ACL_ACCESS))
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        raise


def home_mode(fd: int) -> Tuple[int, Dict[int, int]]:
    """(mode as if no ACL mask applied, {uid: effective rwx bits} of named ACL users).

    With an ACL, stat's group bits are the ACL mask: a 0700 home with an rwx ACL user reads
    0770. A planner comparing against 0700 needs the group entry's bits instead.
    """
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    acl = read_acl(fd)
    if not acl:
        return mode, {}
    by_tag = {tag: perm for tag, perm, _ in acl if tag not in (ACL_USER, ACL_GROUP)}
    mask = by_tag.get(ACL_MASK, 7)
    if ACL_GROUP_OBJ in by_tag:
        mode = (mode & ~0o070) | (by_tag[ACL_GROUP_OBJ] << 3)
    return mode, {ident: perm & mask for tag, perm, ident in acl if tag == ACL_USER}


# -- writing below a home ---------------------------------------------------------------------

class _Home:
    """A home's fd with what every step checks against: the seat, the device and the mount."""

    def __init__(self, fd: int, uid: int, gid: int) -> None:
        st = os.fstat(fd)
        self.fd, self.uid, self.gid = fd, uid, gid
        self.dev, self.mnt = st.st_dev, _mount_id(fd)
        self.label = _label(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise UnsafePath(self.label, f"is not a folder owned by the seat's uid {uid}")

    def where(self, rel: str) -> str:
        return f"{self.label}/{rel}" if rel else self.label

    def same_mount(self, fd: int, st: os.stat_result) -> bool:
        return st.st_dev == self.dev and (self.mnt is None or _mount_id(fd) == self.mnt)


class _Vanished(Exception):
    """A folder root was working in disappeared meanwhile: walk to it again from the home."""


class _Writer:
    """Folders and files below a home, each component entered relative to its parent's fd.

    The fds along the current path are kept (files grouped by folder enter each folder once);
    beyond MAX_OPEN_DIRS the oldest are closed and the path is walked again from the home.
    """

    def __init__(self, home: _Home, dir_mode: int) -> None:
        self.home, self.dir_mode = home, dir_mode & 0o777
        self.names: List[str] = []
        self.fds: List[Optional[int]] = []
        self.counts = {"written": 0, "kept": 0, "folders": 0, "replaced": 0}

    def result(self) -> TreeCounts:
        return TreeCounts(**self.counts)

    def close(self) -> None:
        self._pop_to(0)

    def put_folder(self, parts: Sequence[str], mode: Optional[int] = None) -> None:
        """Folder `parts` exists (made with `mode` if root makes it)."""
        self._retrying(parts, self.enter, parts, mode)

    def put_file(self, parts: Sequence[str], data: bytes, mode: int, keep: bool) -> None:
        """File `parts` written anew, or kept as it is when it exists and `keep` is set."""
        self._retrying(parts, self._put_file, parts, data, mode, keep)

    def _put_file(self, parts: Sequence[str], data: bytes, mode: int, keep: bool) -> None:
        dir_fd = self.enter(parts[:-1])
        self._write_file(dir_fd, parts[-1], "/".join(parts), data, mode, keep)

    def _retrying(self, parts: Sequence[str], step: Callable[..., object], *args: object) -> None:
        """A step again from the home when a folder vanished under it; OS errors name the
        path."""
        rel = "/".join(parts)
        for _ in range(RETRIES):
            try:
                step(*args)
                return
            except _Vanished:
                self._pop_to(0)
            except SafeFsError:
                raise
            except OSError as exc:
                raise _os_error(self.home.where(rel), exc) from None
        raise UnsafePath(self.home.where(rel), "its folder kept vanishing while root worked "
                                               "in it (a process racing root?); refused")

    def enter(self, parts: Sequence[str], last_mode: Optional[int] = None) -> int:
        """The fd of folder `parts` below the home, created (with last_mode) if missing."""
        keep = 0
        while keep < min(len(parts), len(self.names)) and parts[keep] == self.names[keep]:
            keep += 1
        self._pop_to(keep)
        if keep and self.fds[keep - 1] is None:
            self._pop_to(0)
        while len(self.names) < len(parts):
            depth = len(self.names)
            parent = self.fds[-1] if self.fds else self.home.fd
            assert parent is not None  # a vanished folder (None) was dropped just above
            mode = last_mode if last_mode is not None and depth == len(parts) - 1 \
                else self.dir_mode
            fd = self._open_dir(parent, parts[depth], "/".join(parts[:depth + 1]), mode)
            self.names.append(parts[depth])
            self.fds.append(fd)
            self._evict()
        return self.fds[-1] if self.fds else self.home.fd  # type: ignore[return-value]

    def _pop_to(self, n: int) -> None:
        while len(self.names) > n:
            self.names.pop()
            fd = self.fds.pop()
            if fd is not None:
                os.close(fd)

    def _evict(self) -> None:
        held = [i for i, fd in enumerate(self.fds) if fd is not None]
        if len(held) > MAX_OPEN_DIRS:
            os.close(self.fds[held[0]])  # type: ignore[arg-type]
            self.fds[held[0]] = None

    def _open_dir(self, parent: int, name: str, rel: str, mode: int) -> int:
        for _ in range(RETRIES):
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                made = self._make_dir(parent, name, rel, mode)
                if made is not None:
                    return made
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                self._unlink(parent, name)  # a link, file or fifo where a folder goes
                continue
            st = os.fstat(fd)
            if st.st_nlink == 0:  # removed between open and fstat
                os.close(fd)
                continue
            return self._checked(fd, rel, st)
        raise UnsafePath(self.home.where(rel), "kept changing while root worked on it "
                                               "(a process racing root?); refused")

    def _make_dir(self, parent: int, name: str, rel: str, mode: int) -> Optional[int]:
        """mkdirat, then fchown/fchmod on the fd only when it is provably the one just made:
        root-owned, still 0700 and empty. Anything swapped in meanwhile must be the seat's."""
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            return None
        except FileNotFoundError:
            raise _Vanished() from None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        st = os.fstat(fd)
        if st.st_nlink == 0:  # removed again already
            os.close(fd)
            return None
        fresh = st.st_uid == 0 and st.st_nlink == 2 and not st.st_mode & 0o077 \
            and self.home.same_mount(fd, st) and not os.listdir(fd)
        if not fresh:
            return self._checked(fd, rel, st)
        os.fchown(fd, self.home.uid, self.home.gid)
        os.fchmod(fd, mode & 0o777)
        self.counts["folders"] += 1
        return fd

    def _checked(self, fd: int, rel: str, st: os.stat_result) -> int:
        """A folder root descends into must be the seat's and on the home's mount."""
        reason = None
        if not self.home.same_mount(fd, st):
            reason = "is on another filesystem or mount; root does not write there"
        elif st.st_uid != self.home.uid:
            reason = (f"is owned by uid {st.st_uid}, not by the seat's uid {self.home.uid}: "
                      f"something the student did not make is in the home; refused")
        if reason:
            os.close(fd)
            raise UnsafePath(self.home.where(rel), reason)
        return fd

    def _unlink(self, parent: int, name: str) -> None:
        try:
            os.unlink(name, dir_fd=parent)
        except (FileNotFoundError, IsADirectoryError):
            return  # gone, or a folder now: the next attempt sees which
        self.counts["replaced"] += 1

    def _write_file(self, dir_fd: int, name: str, rel: str, data: bytes, mode: int,
                    keep: bool) -> None:
        """O_EXCL create, write, then fchown/fchmod the new file's fd. An existing name is
        kept untouched or unlinked first: never opened for writing, never chowned."""
        for _ in range(RETRIES):
            try:
                fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                if keep:
                    self.counts["kept"] += 1
                    return
                self._clear(dir_fd, name, rel)
                continue
            except FileNotFoundError:
                raise _Vanished() from None
            try:
                self._fill(fd, rel, data, mode)
            finally:
                os.close(fd)
            self.counts["written"] += 1
            return
        raise UnsafePath(self.home.where(rel), "kept reappearing while root replaced it "
                                               "(a process racing root?); refused")

    def _fill(self, fd: int, rel: str, data: bytes, mode: int) -> None:
        _write_all(fd, data)
        if os.fstat(fd).st_nlink != 1:
            raise UnsafePath(self.home.where(rel), "gained a second link while root wrote it; "
                                                   "left root-owned")
        os.fchown(fd, self.home.uid, self.home.gid)
        os.fchmod(fd, mode & 0o777)

    def _clear(self, dir_fd: int, name: str, rel: str) -> None:
        """Whatever holds a file's name goes; a folder there is emptied without following."""
        try:
            os.unlink(name, dir_fd=dir_fd)
            self.counts["replaced"] += 1
            return
        except FileNotFoundError:
            return
        except IsADirectoryError:
            pass
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return  # changed meanwhile: the next attempt sees what is there
            raise
        fd = self._checked(fd, rel, os.fstat(fd))
        try:
            left = _Emptier(fd, self.home.dev, self.home.mnt).run().left
        finally:
            os.close(fd)
        if left:
            raise UnsafePath(self.home.where(rel), f"a folder where a file goes could not be "
                                                   f"emptied ({left[0][0]}: {left[0][1]})")
        with suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=dir_fd)
            self.counts["replaced"] += 1


def write_tree(home_fd: int, folder: str, files: Sequence[TreeFile], uid: int, gid: int,
               keep_existing: bool, dir_mode: int = HOME_DIR_MODE) -> TreeCounts:
    """A workshop folder below a home, as a student's interference cannot redirect.

    Links and other non-folders on the way are replaced by folders root makes; files are
    created anew (keep_existing keeps a name that exists, link or not, untouched). Setuid,
    setgid and sticky bits are dropped: root never hands those out. Files grouped by folder
    are cheapest (each folder is entered once per group).
    """
    base = split_rel(folder)
    parsed = [(base + split_rel(rel), data, mode) for rel, data, mode in files]
    writer = _Writer(_Home(home_fd, uid, gid), dir_mode)
    try:
        writer.put_folder(base)
        for parts, data, mode in parsed:
            writer.put_file(parts, data, mode, keep_existing)
    finally:
        writer.close()
    return writer.result()


def fill_from_skel(home_fd: int, skel_entries: Sequence[SkelEntry], uid: int,
                   gid: int) -> TreeCounts:
    """What `useradd -m` would copy from /etc/skel, written link-safely. Meant for an empty
    home; entries that exist are kept (never overwritten), links in the way of a folder are
    replaced like in write_tree."""
    parsed = [(split_rel(rel), mode, data) for rel, mode, data in skel_entries]
    writer = _Writer(_Home(home_fd, uid, gid), 0o700)
    try:
        for parts, mode, data in parsed:
            if data is None:
                writer.put_folder(parts, mode)
            else:
                writer.put_file(parts, data, mode, True)
    finally:
        writer.close()
    return writer.result()


def read_skel(path: str = "/etc/skel") -> List[SkelEntry]:
    """/etc/skel read once: regular files and folders, parents first; links are skipped."""
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(path, exc) from None
    found: List[SkelEntry] = []
    todo = [(top, "")]
    try:
        while todo:
            fd, rel = todo.pop()
            try:
                for name, _ in sorted(_scan(fd)):
                    _read_skel_entry(fd, name, f"{rel}/{name}" if rel else name, found, todo)
            finally:
                os.close(fd)
    finally:
        for fd, _ in todo:
            os.close(fd)
    return found


def _read_skel_entry(fd: int, name: str, rel: str, found: List[SkelEntry],
                     todo: List[Tuple[int, str]]) -> None:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        todo.append((os.open(name, DIR_FLAGS, dir_fd=fd), rel))
        found.append((rel, stat.S_IMODE(st.st_mode), None))
    elif stat.S_ISREG(st.st_mode):
        data = _read_regular(fd, name, st.st_size)
        if data is not None:
            found.append((rel, stat.S_IMODE(st.st_mode), data))


# -- emptying ---------------------------------------------------------------------------------

class _Frame:
    """One folder being emptied: its fd, its path from the top, and the names still to do."""

    __slots__ = ("fd", "name", "pending", "rel", "scans", "skip")

    def __init__(self, fd: int, rel: str, name: Optional[str]) -> None:
        self.fd, self.rel, self.name = fd, rel, name
        self.skip: set[str] = set()
        self.pending = _scan(fd)
        self.scans = 1


class _Emptier:
    """Removes everything below a folder fd, iteratively (no recursion limit, at most
    MAX_DEPTH fds: deeper folders are moved up to the top folder and done from there)."""

    def __init__(self, top_fd: int, dev: int, mnt: Optional[int]) -> None:
        self.top_fd, self.dev, self.mnt = top_fd, dev, mnt
        self.removed = 0
        self.left: List[Tuple[str, str]] = []

    def run(self) -> EmptyResult:
        stack = [_Frame(self.top_fd, "", None)]
        try:
            while stack:
                frame = stack[-1]
                if frame.pending:
                    name, is_dir = frame.pending.pop()
                    child = self._remove(frame, name, is_dir, len(stack), stack[0])
                    if child is not None:
                        stack.append(child)
                elif frame.scans < SCANS and self._rescan(frame):
                    continue
                else:
                    stack.pop()
                    if frame.name is not None:
                        os.close(frame.fd)
                        self._rmdir(stack[-1], frame)
        finally:
            for frame in stack[1:]:
                os.close(frame.fd)
        return EmptyResult(self.removed, self.left)

    def _rescan(self, frame: _Frame) -> bool:
        frame.scans += 1
        frame.pending = _scan(frame.fd, frame.skip)
        return bool(frame.pending)

    def _leave(self, frame: _Frame, name: str, reason: str) -> None:
        frame.skip.add(name)
        self.left.append((f"{frame.rel}/{name}" if frame.rel else name, reason))

    def _remove(self, frame: _Frame, name: str, is_dir: bool, depth: int,
                top: _Frame) -> Optional[_Frame]:
        if not is_dir:
            try:
                os.unlink(name, dir_fd=frame.fd)
                self.removed += 1
                return None
            except FileNotFoundError:
                return None
            except IsADirectoryError:
                pass
            except OSError as exc:
                self._leave(frame, name, _reason(exc))
                return None
        return self._descend(frame, name, depth, top)

    def _descend(self, frame: _Frame, name: str, depth: int, top: _Frame) -> Optional[_Frame]:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=frame.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # no folder (any more): a name
                self._unlink_changed(frame, name)
            else:
                self._leave(frame, name, _reason(exc))
            return None
        try:
            return self._enter(frame, name, fd, depth, top)
        except BaseException:
            os.close(fd)
            raise

    def _unlink_changed(self, frame: _Frame, name: str) -> None:
        try:
            os.unlink(name, dir_fd=frame.fd)
            self.removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            reason = "kept changing between folder and link" \
                if exc.errno == errno.EISDIR else _reason(exc)
            self._leave(frame, name, reason)

    def _enter(self, frame: _Frame, name: str, fd: int, depth: int,
               top: _Frame) -> Optional[_Frame]:
        st = os.fstat(fd)
        if st.st_dev != self.dev or (self.mnt is not None and _mount_id(fd) != self.mnt):
            os.close(fd)
            self._leave(frame, name, "a mount point: left alone")
            return None
        if depth > MAX_DEPTH:
            os.close(fd)
            self._lift(frame, name, top)
            return None
        return _Frame(fd, f"{frame.rel}/{name}" if frame.rel else name, name)

    def _lift(self, frame: _Frame, name: str, top: _Frame) -> None:
        """A folder too deep to hold fds for is renamed to the top folder and done later."""
        for _ in range(RETRIES):
            new = ".wodsync-deep-" + os.urandom(6).hex()
            try:
                os.rename(name, new, src_dir_fd=frame.fd, dst_dir_fd=top.fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    continue
                self._leave(frame, name, _reason(exc))
                return
            top.pending.append((new, True))
            return
        self._leave(frame, name, "could not be moved up to be emptied")

    def _rmdir(self, parent: _Frame, frame: _Frame) -> None:
        try:
            os.rmdir(frame.name, dir_fd=parent.fd)  # type: ignore[arg-type]
            self.removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._leave(parent, frame.name, _reason(exc))  # type: ignore[arg-type]


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EBUSY:
        return "a mount point: left alone"
    if exc.errno == errno.ENOTEMPTY:
        return "not emptied: it holds what was left alone or kept gaining entries"
    return exc.strerror or str(exc)


def empty_dir(home_fd: int) -> EmptyResult:
    """Everything inside a home removed without following a link or crossing into another
    mount (a mount point is left alone and reported). Entries vanishing meanwhile are fine."""
    st = os.fstat(home_fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(_label(home_fd), "is not a folder")
    return _Emptier(home_fd, st.st_dev, _mount_id(home_fd)).run()


def reset_home(home_fd: int, skel: Sequence[SkelEntry], uid: int,
               gid: int) -> Tuple[EmptyResult, TreeCounts]:
    """A home back to a fresh copy of /etc/skel (what a new session starts from)."""
    emptied = empty_dir(home_fd)
    return emptied, fill_from_skel(home_fd, skel, uid, gid)


# -- what the student made, and removing a home ------------------------------------------------

def _skel_tree(skel: Sequence[SkelEntry]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for rel, _, data in skel:
        node, parts = tree, split_rel(rel)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(parts[-1], {} if data is None else data)
    return tree


def _is_skel_copy(dir_fd: int, name: str, want: object) -> bool:
    """Whether an entry is an untouched copy of its /etc/skel counterpart (links never are)."""
    if want is None:
        return False
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True  # gone meanwhile: nothing the student keeps
    if isinstance(want, bytes):
        return stat.S_ISREG(st.st_mode) and st.st_size == len(want) \
            and _read_regular(dir_fd, name, len(want)) == want
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        inner = os.fstat(fd)
        if (inner.st_dev, inner.st_ino) != (st.st_dev, st.st_ino):
            return False
        return all(_is_skel_copy(fd, n, want.get(n)) for n, _ in _scan(fd))  # type: ignore
    finally:
        os.close(fd)


def own_entries(home_fd: int, skel: Sequence[SkelEntry]) -> List[str]:
    """Top-level names of a home that are not untouched copies of /etc/skel: what the student
    made or changed. Nothing is followed, and a fifo is never opened for reading."""
    tree = _skel_tree(skel)
    return sorted(n for n, _ in _scan(home_fd) if not _is_skel_copy(home_fd, n, tree.get(n)))


def count_own_entries(home_fd: int, skel: Sequence[SkelEntry]) -> int:
    """How many entries the student made: 0 means the home may go."""
    return len(own_entries(home_fd, skel))


def remove_home(home_root: Union[str, int], name: str,
                skel: Optional[Sequence[SkelEntry]] = None) -> bool:
    """Remove a home that holds nothing but untouched /etc/skel copies; False when absent.

    Only entries checked as skel copies are removed, so a file the student adds meanwhile
    makes the final rmdir fail (NotEmpty) instead of disappearing.
    """
    _check_name(name)
    root_fd, owned = _open_root(home_root)
    where = os.path.join(home_root if isinstance(home_root, str) else _label(root_fd), name)
    try:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            return False
        except OSError:
            fd = _open_at(root_fd, name, where)  # raises naming the link or file
        try:
            _remove_skel_copies(fd, where, read_skel() if skel is None else skel)
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=root_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise NotEmpty(where, "gained entries while being removed; kept") from None
            raise _os_error(where, exc) from None
        return True
    finally:
        if owned:
            os.close(root_fd)


def _remove_skel_copies(fd: int, where: str, skel: Sequence[SkelEntry]) -> None:
    """Checked first as a whole (nothing goes when anything is the student's), then each
    folder checked again right before it is emptied."""
    own = own_entries(fd, skel)
    if own:
        shown = ", ".join(own[:5]) + (", ..." if len(own) > 5 else "")
        raise NotEmpty(where, f"holds {len(own)} entries the student made ({shown}); kept")
    tree, st, mnt = _skel_tree(skel), os.fstat(fd), _mount_id(fd)
    for name, is_dir in _scan(fd):
        if not is_dir:
            _unlink_quietly(fd, name)
        elif _is_skel_copy(fd, name, tree.get(name)):
            _remove_folder(fd, name, f"{where}/{name}", st.st_dev, mnt)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _remove_folder(dir_fd: int, name: str, where: str, dev: int, mnt: Optional[int]) -> None:
    try:
        sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise NotEmpty(where, f"changed while being removed ({exc.strerror})") from None
    try:
        _Emptier(sub, dev, mnt).run()
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError as exc:
        raise NotEmpty(where, _reason(exc)) from None
