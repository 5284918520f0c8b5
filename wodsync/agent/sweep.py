"""What a seat's uid owns outside its home, removed before the seat's next occupant arrives.

Why: a seat (`studentN`) is handed from one workshop participant to the next, a stranger, under
the same uid. Whatever the previous occupant left where every account may write — a file or a
FIFO in /tmp, a setuid copy of a shell, a link waiting for someone to write through it, a SysV
shared memory segment, a crontab, an `at` job, a lingering user manager, a mailbox — still
belongs to that uid, so the next occupant can read it, or it runs as them. Emptying the home is
not enough; this module removes the rest.

Root must never follow a path a student controls: the places swept are written by every
account, and a student may plant a symlink or swap a folder for one while root works. So the
walk takes every step relative to a directory fd opened with O_NOFOLLOW, examines entries with
lstat semantics, deletes with unlinkat/rmdir relative to that fd (a link is removed, never its
target), never enters another filesystem (a mount a student made with FUSE may never answer;
one an admin made is not the seat's), and never changes an owner or a mode. Folders are
descended whoever owns them (another student's world-writable folder may hold this uid's
files), but only entries the uid owns are removed. In a folder of a system account (root's
checkouts, caches, package builds: most of a busy /tmp) that neither its group nor others may
write, the seat cannot have made anything, so only its subfolders are looked at (one may be
world-writable): its files cost a name read, not a stat, and do not count against the bound.
The walk is bounded in depth and entries: what a bound left unswept is reported, never
silently skipped.

Call it after the seat's processes ended (`run.kill_uid`): a live process could recreate what
was removed, or keep a shared memory segment attached.

Standard library only: shipped to hosts and imported there from memory (python3 >= 3.9).
"""

from __future__ import annotations

import errno
import functools
import os
import pwd
import re
import stat
from itertools import islice
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from wodsync.agent.run import CommandFailed, run

DEFAULT_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")
"""Folders every account may write to. /dev/mqueue holds POSIX message queues (when mounted);
POSIX shared memory and semaphores are files in /dev/shm."""
CRONTABS_DIR = "/var/spool/cron/crontabs"
"""Debian's cron: one file per user, named after the user."""
AT_DIRS = ("/var/spool/cron/atjobs", "/var/spool/cron/atspool")
"""Debian's `at`: job and output files, owned by the user who queued them."""
LINGER_DIR = "/var/lib/systemd/linger"
"""systemd-logind: a file named after a user keeps their user manager running after logout."""
MAIL_DIR = "/var/mail"
SYSVIPC_DIR = "/proc/sysvipc"
MOUNTINFO = "/proc/self/mountinfo"

MAX_DEPTH = 64
"""Folders below a root the walk enters (it holds one fd per level); deeper ones are reported."""
MAX_ENTRIES = 200000
"""Entries examined per root before the walk stops and says so."""
MAX_SKIMMED = 4000000
"""Names read per root in folders the seat cannot write (only their subfolders are examined)
before the walk stops and says so."""
FIRST_UID = 1000
"""Below this, system accounts: never swept."""
REFUSED_UIDS = (65534, 65535, 0xFFFFFFFF)
"""nobody / the overflow uid (what unmapped ids show as), and the two "no uid" values."""
IPC_TIMEOUT = 10

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
SHM_DEST = 0o1000
"""Set in a segment's mode once it is marked for removal but still attached."""
IPC_KINDS = (
    # (file under SYSVIPC_DIR, ipcrm flag, id column, what it is called in a report)
    ("shm", "-m", "shmid", "shared memory segment"),
    ("msg", "-q", "msqid", "message queue"),
    ("sem", "-s", "semid", "semaphore array"),
)


def sweep(uid: int, user: str, roots: Sequence[str] = DEFAULT_ROOTS,
          keep: Sequence[str] = ()) -> List[str]:
    """Remove what `uid` owns outside its home; return what could not be removed (human-readable
    lines, empty when all went). Never follows a link; never touches what another uid owns.
    The folders `keep` names (the seat's home and the homes' root, trusted paths from the
    account database) are neither entered nor removed, wherever they are: a home is emptied
    by its own step, or kept for a RESET.

    Every part is tried whatever failed before (a half-swept seat is worse than a report);
    only a uid or name that must never be swept raises (ValueError), before anything is done.
    """
    _check_seat(uid, user)
    mounts = _mount_points()
    done: Set[Tuple[int, int]] = set(_identities(keep))
    left: List[str] = []
    for root in tuple(roots) + tuple(AT_DIRS):
        left += _guarded(root, functools.partial(_walk, uid, root, mounts, done))
    for folder in (CRONTABS_DIR, LINGER_DIR, MAIL_DIR):
        left += _guarded(folder, functools.partial(_remove_name, folder, user))
    left += _guarded(SYSVIPC_DIR, lambda: _sweep_ipc(uid))
    return left


def _walk(uid: int, root: str, mounts: Dict[str, Optional[int]],
          done: Set[Tuple[int, int]]) -> List[str]:
    """One root walked for `uid` (a part of the sweep)."""
    return _Walk(uid, root, mounts, done).run(done)


def _identities(paths: Sequence[str]) -> List[Tuple[int, int]]:
    """(device, inode) of each folder in `paths` that exists (a link is not followed)."""
    found = []
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            found.append((st.st_dev, st.st_ino))
    return found


def _guarded(where: str, step: Callable[[], List[str]]) -> List[str]:
    """One part's report; an unexpected failure becomes a line, and the next part still runs."""
    try:
        return step()
    except Exception as exc:
        return [f"{where}: not swept: {type(exc).__name__}: {exc}"]


# -- what may be swept ------------------------------------------------------------------------

def _check_seat(uid: object, user: object) -> None:
    """Refuse system accounts, malformed names, and a name and uid that are not one account
    (sweeping student3's crontab with student4's uid would be a caller's bug)."""
    if not isinstance(uid, int) or isinstance(uid, bool):
        raise ValueError(f"a uid must be an int, not {uid!r}")
    if uid < FIRST_UID or uid in REFUSED_UIDS or uid >= 0xFFFFFFFF:
        raise ValueError(f"refusing to sweep uid {uid}: a system account")
    if not isinstance(user, str) or not user or user in (".", "..") \
            or "/" in user or "\0" in user:
        raise ValueError(f"a user name must be one path segment, not {user!r}")
    try:
        named = pwd.getpwnam(user)
    except KeyError:
        named = None
    if named is not None and named.pw_uid != uid:
        raise ValueError(f"user {user} has uid {named.pw_uid}, not {uid}")
    if named is None:
        try:
            other = pwd.getpwuid(uid).pw_name
        except KeyError:
            return  # the account is gone already: what it left is still swept
        raise ValueError(f"uid {uid} belongs to {other}, not {user}")


def _show(path: str) -> str:
    """A path for a report line: names a student chose may hold newlines or undecodable bytes."""
    return path if path.isprintable() else ascii(path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- mounts -----------------------------------------------------------------------------------

def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def _mount_points() -> Dict[str, Optional[int]]:
    """Every mount point of this mount namespace, with the uid of a FUSE mount's owner.

    Known up front so that the walk never stats a mount point: a FUSE server a student runs
    may never answer, and stat on its root would then hang the seat's release for good.
    """
    try:
        with open(MOUNTINFO, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    found: Dict[str, Optional[int]] = {}
    for line in lines:
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
        except ValueError:
            continue
        point = os.fsdecode(_unescape(fields[4]))
        found.setdefault(point, None)  # (a FUSE mount stacked below keeps its owner)
        if len(fields) > dash + 3 and fields[dash + 1].startswith(b"fuse"):
            for option in fields[dash + 3].split(b","):
                if option.startswith(b"user_id=") and option[8:].isdigit():
                    found[point] = int(option[8:])
    return found


# -- the walk ---------------------------------------------------------------------------------

def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def _names(fd: int, limit: int) -> List[str]:
    """At most `limit` names of a folder: a folder of millions is not read past the bound."""
    with os.scandir(fd) as entries:
        return [entry.name for entry in islice(entries, max(limit, 0))]


def _subfolders(fd: int, limit: int) -> Tuple[List[str], int]:
    """The names of a folder's subfolders (by the type the listing gives; an unknown type
    counts as a folder, and `_visit` checks each one without following it), reading at most
    `limit` names; and how many names were read."""
    read, found = 0, []
    with os.scandir(fd) as entries:
        for entry in islice(entries, max(limit, 0)):
            read += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    found.append(entry.name)
            except OSError:
                found.append(entry.name)
    return found, read


def _closed(st: os.stat_result, uid: int) -> bool:
    """A folder of a system account that the seat cannot write into: nothing in it can be the
    seat's doing, but a subfolder may be open to it."""
    return st.st_uid != uid and st.st_uid < FIRST_UID \
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class _Folder:
    """One open folder of the walk: its fd, its path (for reports and mount lookups only),
    its name in its parent, whether the seat owns it, and the names still to look at."""

    __slots__ = ("fd", "name", "owned", "path", "todo")

    def __init__(self, fd: int, path: str, name: Optional[str], owned: bool, todo: List[str]):
        self.fd, self.path, self.name, self.owned, self.todo = fd, path, name, owned, todo


class _Walk:
    """Everything one uid owns below one root, removed depth-first, iteratively."""

    def __init__(self, uid: int, root: str, mounts: Dict[str, Optional[int]],
                 kept: Optional[Set[Tuple[int, int]]] = None) -> None:
        self.uid, self.root, self.mounts = uid, root, mounts
        self.kept = kept if kept is not None else set()
        self.dev = -1
        self.seen = 0
        self.skimmed = 0
        self.left: List[str] = []

    def report(self, path: str, what: str) -> None:
        self.left.append(f"{_show(path)}: {what}")

    def run(self, done: Set[Tuple[int, int]]) -> List[str]:
        """The root itself is trusted (root's own configuration): its path is resolved once,
        and the same folder reached by two roots is walked once."""
        real = os.path.realpath(self.root)
        try:
            fd = os.open(real, DIR_FLAGS)
        except FileNotFoundError:
            return []  # not on this host (no /dev/mqueue mounted, `at` not installed)
        except OSError as exc:
            return [f"{_show(self.root)}: not swept: {_reason(exc)}"]
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in done:
            os.close(fd)
            return []
        done.add((st.st_dev, st.st_ino))
        self.dev = st.st_dev
        stack = [_Folder(fd, real, None, False, [])]
        try:
            stack[0].todo = self._listing(fd, real, st)
            self._walk(stack)
        finally:
            for folder in stack:
                os.close(folder.fd)
        return self.left

    def _walk(self, stack: List[_Folder]) -> None:
        while stack:
            folder = stack[-1]
            if not folder.todo:
                stack.pop()
                try:
                    if stack and folder.owned:
                        self._rmdir(stack[-1], folder)
                finally:
                    os.close(folder.fd)
                continue
            if self.seen >= MAX_ENTRIES:
                self.report(self.root,
                            f"stopped after {MAX_ENTRIES} entries: the rest was not swept")
                return
            self.seen += 1
            child = self._visit(folder, folder.todo.pop(), len(stack))
            if child is not None:
                stack.append(child)

    def _visit(self, folder: _Folder, name: str, depth: int) -> Optional[_Folder]:
        """An entry is examined without following it; what the uid owns that is not a folder
        goes at once, a folder is entered whoever owns it (it may hold the uid's files) — unless
        only its owner, another account, may pass through it (mode without group or other
        `x`; an ACL shows in the group bits): whatever of the uid lies in there, the uid
        itself — and so the seat's next occupant — cannot reach, and such folders (every
        pytest or systemd private tmp, another student's 0700 folder) are most of a busy
        /tmp."""
        path = _join(folder.path, name)
        if path in self.mounts:  # never stat'ed: see _mount_points
            if self.mounts[path] == self.uid:
                self.report(path, f"a FUSE mount of uid {self.uid}: left alone (unmount it)")
            return None
        try:
            st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # gone meanwhile
        except OSError as exc:
            self.report(path, f"could not be examined: {_reason(exc)}")
            return None
        mine = st.st_uid == self.uid
        if st.st_dev != self.dev:
            if mine:
                self.report(path, "on another filesystem (a mount point): left alone")
            return None
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in self.kept:
                return None  # a home (or the homes' root): never the sweep's
            if not (mine or st.st_mode & (stat.S_IXGRP | stat.S_IXOTH)):
                return None  # nobody but its owner passes: nothing of the uid is reachable
            return self._enter(folder, name, path, depth, mine)
        if mine:
            self._unlink(folder, name, path)
        return None

    def _enter(self, folder: _Folder, name: str, path: str, depth: int,
               mine: bool) -> Optional[_Folder]:
        if depth > MAX_DEPTH:
            self.report(path, f"deeper than {MAX_DEPTH} folders: not swept")
            return None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=folder.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link or a file
                self.report(path, "changed while being swept: left alone")
            else:
                self.report(path, f"could not be opened: {_reason(exc)}")
            return None
        try:
            st = os.fstat(fd)  # what was opened decides, not what was seen before
            if st.st_dev != self.dev:
                if mine or st.st_uid == self.uid:
                    self.report(path, "became a mount point while being swept: left alone")
                os.close(fd)
                return None
            todo = self._listing(fd, path, st)
        except OSError as exc:
            os.close(fd)
            self.report(path, f"could not be listed: {_reason(exc)}")
            return None
        except BaseException:
            os.close(fd)
            raise
        return _Folder(fd, path, name, st.st_uid == self.uid, todo)

    def _listing(self, fd: int, path: str, st: os.stat_result) -> List[str]:
        """The names of an opened folder to examine: all of them, or only the subfolders of a
        folder the seat cannot write (`_closed`), each kind within its bound."""
        if not _closed(st, self.uid):
            return _names(fd, MAX_ENTRIES + 1 - self.seen)
        if self.skimmed > MAX_SKIMMED:
            return []  # said once, below
        todo, read = _subfolders(fd, MAX_SKIMMED + 1 - self.skimmed)
        self.skimmed += read
        if self.skimmed > MAX_SKIMMED:
            self.report(path, f"stopped after reading {MAX_SKIMMED} names in folders the seat "
                              "cannot write: the rest was not swept")
        return todo

    def _unlink(self, folder: _Folder, name: str, path: str) -> None:
        try:
            os.unlink(name, dir_fd=folder.fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            self.report(path, "changed while being swept: left alone")
        except OSError as exc:
            self.report(path, f"not removed: {_reason(exc)}")

    def _rmdir(self, parent: _Folder, folder: _Folder) -> None:
        """A folder of the uid, once walked: removed when empty, else reported with what it
        still holds (another account's files are never removed to make room)."""
        try:
            os.rmdir(folder.name, dir_fd=parent.fd)  # type: ignore[arg-type]
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                self.report(folder.path, f"folder of uid {self.uid} kept: it still holds "
                                         f"{_holdings(folder.fd)}")
            elif exc.errno == errno.EBUSY:
                self.report(folder.path, "a mount point: left alone")
            else:
                self.report(folder.path, f"not removed: {_reason(exc)}")


def _holdings(fd: int, shown: int = 3) -> str:
    """A few entries of a folder with their owners, for a report."""
    found: List[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if len(found) == shown:
                    found.append("...")
                    break
                try:
                    owner = str(entry.stat(follow_symlinks=False).st_uid)
                except OSError:
                    owner = "?"
                found.append(f"{_show(entry.name)} (uid {owner})")
    except OSError as exc:
        return f"entries that could not be listed ({_reason(exc)})"
    return ", ".join(found) or "entries that appeared while it was swept"


# -- files named after the user ---------------------------------------------------------------

def _remove_name(folder: str, name: str) -> List[str]:
    """A crontab, a linger flag or a mailbox: named after the user, so it is the seat's
    whoever owns it. Removed with unlinkat (a link goes, its target stays); a folder there is
    reported, not entered."""
    path = _join(folder, name)
    try:
        fd = os.open(folder, DIR_FLAGS)
    except FileNotFoundError:
        return []  # the daemon is not installed here
    except OSError as exc:
        return [f"{folder}: not swept: {_reason(exc)}"]
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return [f"{_show(path)}: a folder, not a file: left alone"]
    except OSError as exc:
        return [f"{_show(path)}: not removed: {_reason(exc)}"]
    finally:
        os.close(fd)
    return []


# -- SysV IPC ---------------------------------------------------------------------------------

def owned_ipc(text: str, id_column: str, uid: int) -> List[Dict[str, str]]:
    """Rows of a /proc/sysvipc table whose owner or creator is `uid`, as {column: value}.

    Columns are found by the header's names, not their positions: kernels added columns
    (rss and swap for shm) and may add more. A header without the columns raises ValueError.
    """
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    missing = [c for c in (id_column, "uid", "cuid") if c not in header]
    if missing:
        raise ValueError(f"no {', '.join(missing)} column in the header {' '.join(header)!r}")
    rows = []
    for line in lines[1:]:
        values = line.split()
        if len(values) < len(header):
            continue  # a short line: nothing to act on (zip's strict= is not in python 3.9)
        row = {column: values[i] for i, column in enumerate(header)}
        try:
            if int(row["uid"]) == uid or int(row["cuid"]) == uid:
                rows.append(row)
        except ValueError:
            continue  # a garbled line: nothing to act on
    return rows


def _read_ipc(kind: str, id_column: str, uid: int) -> Optional[List[Dict[str, str]]]:
    """The uid's rows of one table; None when the kernel has no SysV IPC of that kind."""
    try:
        with open(os.path.join(SYSVIPC_DIR, kind), encoding="ascii", errors="replace") as f:
            return owned_ipc(f.read(), id_column, uid)
    except FileNotFoundError:
        return None


def _sweep_ipc(uid: int) -> List[str]:
    """Every segment, queue and semaphore array the uid owns or created, removed by id with
    util-linux's ipcrm; then the tables are read again and whatever stayed is reported."""
    left = []
    for kind, flag, column, what in IPC_KINDS:
        try:
            rows = _read_ipc(kind, column, uid)
        except (OSError, ValueError) as exc:
            left.append(f"{SYSVIPC_DIR}/{kind}: could not be read: {exc}")
            continue
        if not rows:
            continue
        failed = {}
        for row in rows:
            try:
                run(["ipcrm", flag, row[column]], timeout=IPC_TIMEOUT)
            except CommandFailed as exc:
                failed[row[column]] = str(exc)
        try:
            still = _read_ipc(kind, column, uid) or []
        except (OSError, ValueError) as exc:
            left.append(f"{SYSVIPC_DIR}/{kind}: could not be read again: {exc}")
            continue
        for row in still:
            left.append(_ipc_left(row, kind, column, what, uid, failed))
    return left


def _ipc_left(row: Dict[str, str], kind: str, column: str, what: str, uid: int,
              failed: Dict[str, str]) -> str:
    ident = row[column]
    try:
        dest = kind == "shm" and int(row.get("perms", "0"), 8) & SHM_DEST
    except ValueError:
        dest = False
    if dest:
        return (f"{what} {ident} of uid {uid}: marked for removal; it goes when its "
                f"{row.get('nattch', '?')} attachments end")
    return f"{what} {ident} of uid {uid}: not removed: {failed.get(ident, 'still there')}"
