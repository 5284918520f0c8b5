"""Live sessions' passwords sealed with a key kept outside the database; ended ones blanked.

Why sealed and not hashed: WoD's portal mails a participant's credentials at CREATE and again in
the "expiring" mail an hour before the end, so the password must be readable while the session
is live — and only then: once a session is over (ended, failed, or releasing its seat: no
participant any more) its password is blanked in the same transaction as the move. Why a key
outside the database: a copy of the database alone (a backup, a file a student managed to read)
then shows no password.

The key is `WODSYNC_STORE_KEY` from the environment — 32 random bytes in urlsafe base64, the
format of a Fernet key; every controller sharing one PostgreSQL needs the same — else the file
`<state>/store.key` (beside the database for a `sqlite:///` URL opened without a state folder),
created 0600 the first time a password is sealed. A stored password is `v1:<key id>:<token>`:
a Fernet token (AES-128-CBC and HMAC-SHA256, from `cryptography`), tagged with a short id of the
key that sealed it so that a wrong key is named — at open, not row by row — and with a version
so that what an older wodsync wrote in clear is recognised. Opening a store brings every stored
password to this form (`upgrade`), and on SQLite then rewrites the file so that the old values'
bytes are gone from its free space and from the WAL (`scrub`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, String, column, select, table, update

from wodsync.store import files
from wodsync.store.models import (
    LIVE_STATES,
    PASSWORD_LENGTH,
    StoreError,
    reading,
    writing,
)

KEY_ENV = "WODSYNC_STORE_KEY"
KEY_FILE = "store.key"
VERSION = "v1"
GENERATE = "head -c 32 /dev/urandom | base64 | tr '+/' '-_'"
# PRAGMA user_version of a SQLite store whose file was rewritten once passwords were sealed:
# what an older wodsync left in free pages, cell gaps and the WAL is gone.
SCRUBBED = 1

_SEALED = re.compile(r"v1:([0-9a-f]{8}):([A-Za-z0-9_-]+=*)")
_VERSIONED = re.compile(r"v[0-9]+:")  # never the start of a password wodsync generated
# The column as stored, bypassing the sealing type: for `upgrade`, which reads what is there.
_RAW = table("sessions", column("id", String), column("state", String),
             column("password", String))
_LIVE = [s.value for s in LIVE_STATES]

log = logging.getLogger("wodsync.store")


class KeyUnavailable(StoreError):
    """No key to seal or open passwords with, or not the key they were sealed with."""


class PasswordUnreadable(StoreError):
    """A stored password the store's key cannot open."""


@dataclass(frozen=True, slots=True)
class Key:
    fernet: Fernet
    id: str
    raw: bytes = field(default=b"", repr=False)


def key_id(raw: bytes) -> str:
    """8 hex digits naming a key in messages and in sealed values; no use for guessing it."""
    return hashlib.sha256(b"wodsync store key\0" + raw).hexdigest()[:8]


def parse_key(text: str, source: str) -> Key:
    """The key written in `text` (urlsafe base64 of 32 bytes), or KeyUnavailable naming
    `source` — never the text itself."""
    try:
        fernet = Fernet(text.strip())
        raw = base64.urlsafe_b64decode(text.strip())
    except ValueError:  # binascii.Error and UnicodeError included
        raise KeyUnavailable(f"{source} does not hold a store key: it must be 32 random bytes "
                             f"in urlsafe base64, 44 characters (`{GENERATE}` prints "
                             "one)") from None
    return Key(fernet, key_id(raw), raw)


class Sealer:
    """Seals passwords for the database and opens them again, with the store's key.

    The key is read once when the store is opened (`find`); a missing key file is created the
    first time a password must be sealed — under a lock, and atomically against other
    processes — so a store that is only looked at never writes one.
    """

    def __init__(self, source: str, key: Key | None, path: Path | None) -> None:
        self.source = source
        self._key = key
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def find(cls, folder: Path | None, environ: Mapping[str, str] = os.environ) -> Sealer:
        """`WODSYNC_STORE_KEY` if set, else `<folder>/store.key` (read now when it exists)."""
        value = environ.get(KEY_ENV, "").strip()
        if value:
            return cls(KEY_ENV, parse_key(value, KEY_ENV), None)
        if folder is None:
            return cls(f"{KEY_ENV} (not set)", None, None)
        path = folder / KEY_FILE
        return cls(str(path), _read_key(path), path)

    @property
    def key_id(self) -> str | None:
        """The id of the key in use; None while there is none yet."""
        key = self._existing()
        return key.id if key else None

    def seal(self, password: str) -> str:
        """`v1:<key id>:<token>` for `password`, creating the key file if there is none."""
        key = self._existing() or self._create()
        sealed = f"{VERSION}:{key.id}:{key.fernet.encrypt(password.encode()).decode()}"
        if len(sealed) > PASSWORD_LENGTH:
            raise StoreError(f"a password of {len(password)} characters is too long to keep "
                             f"sealed in the store ({PASSWORD_LENGTH} characters once sealed)")
        return sealed

    def open(self, stored: str) -> str:
        """The password `stored` holds. A value without a version was written in clear by an
        older wodsync (the next open seals it): it is the password itself."""
        if not _VERSIONED.match(stored):
            return stored
        sealed = _SEALED.fullmatch(stored)
        if sealed is None:
            raise PasswordUnreadable("a session's password is stored in a form this wodsync "
                                     "does not know (written by a newer wodsync?)")
        key = self._usable(sealed[1], "a session's password was")
        try:
            return key.fernet.decrypt(sealed[2]).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise PasswordUnreadable(f"a session's password sealed with store key {key.id} does "
                                     f"not open with the key from {self.source}: the stored "
                                     "value was altered") from None

    def derive(self, purpose: str) -> bytes:
        """A key for `purpose` (the portal's links) derived from the store key, creating the
        key file if there is none: every controller sharing the store key derives the same,
        and the store key itself never leaves this object."""
        key = self._existing() or self._create()
        return hmac.new(key.raw, b"wodsync derived key\0" + purpose.encode(),
                        hashlib.sha256).digest()

    def check(self, sealed_with: dict[str, int]) -> None:
        """Raise KeyUnavailable unless every key id in `sealed_with` (id → live passwords
        sealed with it) is this store's key."""
        for kid, count in sorted(sealed_with.items()):
            self._usable(kid, f"{count} live session{'s' * (count > 1)}' password"
                              f"{' was' if count == 1 else 's were'}")

    def _usable(self, kid: str, what: str) -> Key:
        """The key, if it is the one `kid` names; else why not, as `what` … sealed with it."""
        key = self._existing()
        if key is None:
            where = f"{KEY_ENV} is not set" + (f" and {self._path} does not exist"
                                               if self._path else "")
            raise KeyUnavailable(
                f"{what} sealed with store key {kid}, and there is no key: {where}. Restore "
                f"the key file from the backup of the state folder, or set {KEY_ENV} to the "
                f"key the other controllers use{_lost(kid)}")
        if kid != key.id:
            raise KeyUnavailable(
                f"{what} sealed with store key {kid}, not with the key from {self.source} "
                f"(store key {key.id}): give wodsync the key {kid} ({KEY_ENV}, or the state "
                f"folder's {KEY_FILE}){_lost(kid)}")
        return key

    def _existing(self) -> Key | None:
        """The key, reading the file again when another process may have created it since."""
        if self._key is None and self._path is not None:
            with self._lock:
                if self._key is None:
                    self._key = _read_key(self._path)
        return self._key

    def _create(self) -> Key:
        if self._path is None:
            raise KeyUnavailable(f"no key to seal passwords with: set {KEY_ENV} (a PostgreSQL "
                                 "store opened without a state folder has no key file)")
        with self._lock:
            if self._key is None:
                text = base64.urlsafe_b64encode(os.urandom(32)).decode()
                if files.create_private(self._path, (text + "\n").encode()):
                    log.info("store: created the store key %s", self._path)
                self._key = _read_key(self._path)
            if self._key is None:  # removed again before it could be read back
                raise KeyUnavailable(f"the store key {self._path} vanished as it was created")
            return self._key


def _lost(kid: str) -> str:
    """The way out when a key is gone for good: its passwords are gone with it (their
    participants have them in their mail), and nothing else is."""
    return (f". If key {kid} is lost for good, so are those passwords: blank them (UPDATE "
            f"sessions SET password = '' WHERE password LIKE '{VERSION}:{kid}:%') and open "
            "the store again")


def _read_key(path: Path) -> Key | None:
    data = files.read_private(path)
    if data is None:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return parse_key(text, str(path))


# -- opening a store ----------------------------------------------------------------------------


class _PasswordUpdate(NamedTuple):
    """One session row's stored password, `old` as read and `new` as it must be kept."""

    id: str
    old: str
    new: str


def upgrade(engine: Engine, sealer: Sealer) -> int:
    """Bring every stored password to what this wodsync keeps — live sessions' sealed with the
    store's key, the others' blank — in one transaction; how many rows changed (0 when the
    store is already so, which is every open but the first after an upgrade).

    Raises KeyUnavailable, before anything is written, when live passwords were sealed with
    another key or the key is missing: a wrong key must stop the controller at its start, not
    when a password is wanted.
    """
    with reading(engine) as conn:
        stored = conn.execute(select(_RAW).where(_RAW.c.password != "")).all()
    sealed_with: dict[str, int] = {}
    for row in stored:
        found = _SEALED.fullmatch(row.password)
        if row.state in _LIVE and found:
            sealed_with[found[1]] = sealed_with.get(found[1], 0) + 1
    sealer.check(sealed_with)
    updates = [_PasswordUpdate(r.id, r.password, _upgraded(r.state, r.password, sealer))
               for r in stored]
    updates = [u for u in updates if u.new != u.old]
    if not updates:
        return 0
    with writing(engine) as conn:
        for u in updates:  # each a compare-and-set: a move meanwhile has blanked it
            conn.execute(update(_RAW).where(_RAW.c.id == u.id, _RAW.c.password == u.old)
                         .values(password=u.new))
    blanked = sum(1 for u in updates if not u.new)
    log.info("store: sealed %d live sessions' passwords, blanked %d of sessions that are over",
             len(updates) - blanked, blanked)
    return len(updates)


def _upgraded(state: str, password: str, sealer: Sealer) -> str:
    if state not in _LIVE:
        return ""
    if _VERSIONED.match(password):
        return password  # sealed (its key was checked), or a newer form: left for its writer
    return sealer.seal(password)


def scrub(engine: Engine, changed: bool) -> bool:
    """On SQLite, once, and again whenever `upgrade` changed something: rewrite the database
    (VACUUM) and empty the WAL, so that no earlier value of a password is left in a free page,
    in the gap an updated cell left behind, or in an old WAL frame. True when done.

    `secure_delete` already zeroes what this wodsync frees, but not what an older one did. If
    the WAL cannot be emptied now (a reader holds an old snapshot) or the database is busy,
    nothing is marked done and the next open tries again.
    """
    if engine.dialect.name != "sqlite":
        return False
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if not changed and cursor.execute("PRAGMA user_version").fetchone()[0] >= SCRUBBED:
            return False
        cursor.execute("VACUUM")
        if cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            log.warning("store: the WAL of %s could not be emptied (a reader is busy): the "
                        "next open tries again", engine.url.database)
            return False
        cursor.execute(f"PRAGMA user_version = {SCRUBBED}")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True
    except sqlite3.OperationalError as exc:
        log.warning("store: %s could not be rewritten now (%s): the next open tries again",
                    engine.url.database, exc)
        return False
    finally:
        connection.close()
