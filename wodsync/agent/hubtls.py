"""The hub's TLS certificate and key on the host: are they fit to serve, and what is their
digest (the service kind restarts the hub when it changes: a certificate renewed in place).

Root reads these files, so no one but root may have a say in what it reads: every link on the
way and every folder of the resolved path must be root's and writable by root alone, the key
readable by root alone. Nothing of the files' content leaves the host but one SHA-256 over
both (the key is high-entropy: its digest tells nothing of it).
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import List, Optional, Tuple, TypedDict

MAX_BYTES = 1 << 20


class TlsProbe(TypedDict):
    cert: str
    key: str


class TlsFacts(TypedDict):
    """`digest` over the certificate and the key (None when one could not be read), and what
    is wrong with them (empty: fit to serve)."""

    digest: Optional[str]
    problems: List[str]


def _path_problem(path: str) -> Optional[str]:
    """Why root should not read `path`: a link or a folder on its way someone else controls."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        here = "/" + "/".join(parts[:i])
        st = os.lstat(here)
        # A sticky folder (/tmp) lets others add entries, never replace root's.
        shared = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (shared and not stat.S_ISLNK(st.st_mode)):
            return f"{here} is not root's alone (owner uid {st.st_uid}, " \
                   f"mode {stat.S_IMODE(st.st_mode):04o})"
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != 0:
        return f"{path} is a link owned by uid {link.st_uid}"
    real = os.path.realpath(path)
    return None if real == path else _path_problem(real)


def _read(path: str, what: str, private: bool) -> Tuple[Optional[bytes], Optional[str]]:
    """The file's bytes, or why it is not fit: missing, not a regular file, not root's, a key
    others may read, a certificate others may write."""
    try:
        problem = _path_problem(path)
        if problem:
            return None, f"{what} {path}: {problem}"
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, f"{what} {path} does not exist"
    except OSError as exc:
        return None, f"{what} {path} cannot be read: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{what} {path} is not a regular file"
        if st.st_uid != 0:
            return None, f"{what} {path} is owned by uid {st.st_uid}, not root"
        if private and mode & 0o077:
            return None, f"{what} {path} has mode {mode:04o}: others may read the private " \
                         "key (chmod 600)"
        if mode & 0o022:
            return None, f"{what} {path} has mode {mode:04o}: others may replace it (chmod 644)"
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES or b"-----BEGIN " not in data:
        return None, f"{what} {path} is not a PEM file"
    return data, None


def check(probe: TlsProbe) -> TlsFacts:
    cert, cert_problem = _read(probe["cert"], "certificate", private=False)
    key, key_problem = _read(probe["key"], "key", private=True)
    problems = [p for p in (cert_problem, key_problem) if p]
    if cert is None or key is None:
        return {"digest": None, "problems": problems}
    return {"digest": hashlib.sha256(cert + b"\0" + key).hexdigest(), "problems": problems}
