"""API tokens with roles: who may call which part of the API, and how a token is kept.

Why roles: the registration portal needs CREATE, read, EXTEND and CLEANUP, never PURGE or a
reconcile; CI's plan previews need the facts only. One token for everything let a leaked portal
token end every session. A token now has one role:

- `portal`: create, read, extend and clean up sessions;
- `operator`: everything (RESET, PURGE, status, a manual reconcile, the facts);
- `facts`: read the published facts.

Why several at once: rotation without a 401. A new token is made (`wodsync token new`), the
client switched to it, then the old one revoked; both are valid in between.

Why SHA-256 and not a slow KDF: a slow hash (bcrypt, scrypt, argon2) protects *guessable*
secrets against an offline search after the table leaks. A token here is 32 random bytes from
the OS (256 bits): no search finds one from its digest, slow or fast, and a fast digest keeps
every request cheap (a slow one per request would also be a lever for denial of service). The
value itself is printed once and never stored, logged or put on a command line.

The environment's `WODSYNC_API_TOKEN` and `WODSYNC_FACTS_TOKEN` (or the same names in the
secrets file) stay valid, as the roles `operator` and `facts` (`legacy`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TOKEN_BYTES = 32
PREFIX = "wodsync_"  # says what a token is when found in a file or a paste
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Role(enum.StrEnum):
    PORTAL = "portal"
    OPERATOR = "operator"
    FACTS = "facts"


ROLE_HELP = {Role.PORTAL: "create, read, extend and clean up sessions",
             Role.OPERATOR: "everything: RESET, PURGE, status, reconcile, facts",
             Role.FACTS: "read the published facts"}
# The controller's own secrets that are tokens, and the role each stands for.
LEGACY = {"WODSYNC_API_TOKEN": Role.OPERATOR, "WODSYNC_FACTS_TOKEN": Role.FACTS}


class TokenError(Exception):
    """A token name or role that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class Caller:
    """Who presented a valid token: its name (a stored token's, or the legacy variable's) and
    its role. Never the value."""

    name: str
    role: Role


@dataclass(frozen=True)
class Known:
    """A token the API accepts: its name, role and digest (from the store or the secrets)."""

    name: str
    role: Role
    digest: str = field(repr=False)


def new_value() -> str:
    """A fresh token: 256 random bits, URL-safe, with a prefix that says what it is."""
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(value: str) -> str:
    """The SHA-256 of a token, hex: what is stored and compared."""
    return hashlib.sha256(value.encode()).hexdigest()


def check_name(name: str) -> str:
    if not re.match(NAME_RE, name):
        raise TokenError(f"token name {name!r} must match {NAME_RE} (e.g. portal-2026-12)")
    return name


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise TokenError(f"role {role!r} is not one of {', '.join(Role)}") from None


def match(presented: str, known: list[Known]) -> Caller | None:
    """The caller whose token is `presented`, or None. The presented value is hashed and its
    digest compared with every known digest in constant time (no early exit)."""
    given = digest(presented).encode()
    found: Caller | None = None
    for k in known:
        if hmac.compare_digest(given, k.digest.encode()) and found is None:
            found = Caller(k.name, k.role)
    return found


class TokenBook:
    """The stored tokens as the API checks them: read from the store (`load`) at most every
    `ttl` seconds, and at once after `reload` (SIGHUP, or a change made by this process). So
    a request costs no query, a token made or revoked by `wodsync token` in another process is
    seen within `ttl` by every process on the store, and at once by one sent SIGHUP."""

    def __init__(self, load: Callable[[], list[Known]], ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load, self.ttl, self._clock = load, ttl, clock
        self._lock = threading.Lock()
        self._known: list[Known] = []
        self._read_at: float | None = None

    def known(self) -> list[Known]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._known, self._read_at = self._load(), now
            return self._known

    def reload(self) -> int:
        """Read the store again now; the number of stored tokens."""
        with self._lock:
            self._read_at = None
        return len(self.known())
