"""Who may read the store's files on disk: the account that runs wodsync, and nobody else.

Why: the controller often shares its machine with the seats it hands out (the demo does), and
the store holds every live session's password, e-mail and name. A world-readable state folder,
database or write-ahead log lets any student `grep -a` them. So the state folder is 0700, the
SQLite database, its `-wal`, `-shm` and `-journal` 0600 — created that way, never 0644 for a
moment (the database file is made 0600 before SQLite opens it, and SQLite gives its WAL, SHM and
journal the database file's mode), and tightened whenever a file an older wodsync left looser
is found. Symbolic links among the database's companions are refused: tightening through one
would change the mode of whatever file it points to.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from wodsync.store.models import StoreError, StoreUnavailable

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
_OPEN_EXISTING = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URL, symbolic links resolved as SQLite does
    (its WAL lives beside the real file); None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).resolve()


def private_folder(path: Path, *, create: bool) -> None:
    """Make `path` (wodsync's state folder) 0700: created so, tightened when looser. A shared
    folder with the sticky bit (such as /tmp) is left as it is: wodsync must not take it over;
    the files it writes there are private all the same."""
    try:
        if create:
            path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        elif not path.exists():
            return
        info = path.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"the state folder {path} is not a folder")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and not mode & stat.S_ISVTX:
            path.chmod(mode & ~0o077)
    except OSError as exc:
        raise _unavailable(path, exc) from None


def private_database(path: Path) -> None:
    """Create the SQLite database file 0600 unless it exists, and take group and others' rights
    off it and off its companions (`-wal`, `-shm`, `-journal`) when an older wodsync left them
    readable. Call it before SQLite opens the file."""
    try:
        os.close(os.open(path, _CREATE_NEW, FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise _unavailable(path, exc) from None
    for each in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        tighten(each)


def tighten(path: Path) -> bool:
    """Take group and others' rights off the regular file at `path`, if it exists; True if it
    does. Refused (StoreError) for a symbolic link or anything that is not a regular file."""
    try:
        fd = os.open(path, _OPEN_EXISTING)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symbolic link: the store's files must be plain "
                             "files (remove the link)") from None
        raise _unavailable(path, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path} is not a regular file: the store cannot use it")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & ~0o077)
    except OSError as exc:
        raise _unavailable(path, exc) from None
    finally:
        os.close(fd)
    return True


def read_private(path: Path, limit: int = 4096) -> bytes | None:
    """The content of a private file (tightened first when looser), None if there is none."""
    if not tighten(path):
        return None
    try:
        with path.open("rb") as file:
            return file.read(limit)
    except OSError as exc:
        raise _unavailable(path, exc) from None


def create_private(path: Path, data: bytes) -> bool:
    """Write `data` to `path`, 0600, only if no such file exists — whole or not at all, even
    when others do the same at the same moment (a temporary file of its own, linked into
    place). True if this call created it."""
    try:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temp = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:  # mkstemp: O_EXCL, mode 0600
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                return False
            _sync_folder(path.parent)
            return True
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        raise _unavailable(path, exc) from None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unavailable(path: Path, exc: OSError) -> StoreUnavailable:
    return StoreUnavailable(f"cannot open the store's {path}: "
                            f"{exc.strerror or exc.__class__.__name__}")
