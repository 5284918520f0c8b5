"""A seat's base: what the seat was given, the common ancestor of a live update's three-way
decision.

A student edits the files a CREATE wrote; a later revision changes them upstream. Whether a
file was edited locally, and how a notebook's cells merge, can only be told against what the
seat was given. So at CREATE (and after each live update) the host keeps, beside the seat's
record in the root-only seats folder, `<user>.base/`: `base.json` (the revision, the session,
the workshop and, per file, the sha256 of what was written) and a copy of each given notebook
under `blobs/<sha256>` (a name root chooses, never a student's path). The folder goes with the
seat's record (`records.drop`): a free seat has no base.

Standard library only: shipped to hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, Optional, Sequence, Tuple, TypedDict

BASE_SUFFIX = ".base"
NOTEBOOK = ".ipynb"


class Base(TypedDict):
    """What a seat was given: revision, session, workshop, and path → sha256 (paths relative
    to the workshop's folder in the home)."""

    revision: str
    session: str
    workshop: str
    files: Dict[str, str]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder(state_dir: str, user: str) -> str:
    return os.path.join(state_dir, "seats", user + BASE_SUFFIX)


def save(state_dir: str, user: str, base: Base,
         files: Sequence[Tuple[str, bytes]]) -> None:
    """The base replaced by `base`; `files` (path, bytes) supply the notebooks' copies. Blobs
    no longer named are removed; base.json is replaced atomically, after its blobs exist."""
    where = folder(state_dir, user)
    blobs = os.path.join(where, "blobs")
    os.makedirs(blobs, mode=0o700, exist_ok=True)
    os.chmod(where, 0o700)
    wanted = set()
    for rel, data in files:
        if rel.endswith(NOTEBOOK):
            name = digest(data)
            wanted.add(name)
            if not os.path.exists(os.path.join(blobs, name)):
                _write_atomic(blobs, name, data)
    _write_atomic(where, "base.json", json.dumps(base, sort_keys=True).encode())
    for name in os.listdir(blobs):
        if name not in wanted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(blobs, name))


def load(state_dir: str, user: str) -> Optional[Base]:
    """The seat's base, or None (none kept, or unreadable: no three-way decision is made)."""
    try:
        with open(os.path.join(folder(state_dir, user), "base.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return Base(revision=str(data.get("revision", "")), session=str(data.get("session", "")),
                workshop=str(data.get("workshop", "")),
                files={str(k): str(v) for k, v in data["files"].items()})


def blob(state_dir: str, user: str, sha: str) -> Optional[bytes]:
    """A given notebook's copy by its digest (None when not kept)."""
    if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
        return None
    try:
        with open(os.path.join(folder(state_dir, user), "blobs", sha), "rb") as f:
            return f.read()
    except OSError:
        return None


def drop(state_dir: str, user: str) -> None:
    """The base gone (the seat is free). The folder is root's, below root's state folder."""
    shutil.rmtree(folder(state_dir, user), ignore_errors=True)


def _write_atomic(where: str, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=where, prefix=".base-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(where, name))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
