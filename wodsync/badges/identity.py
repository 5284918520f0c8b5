"""Who a badge belongs to: one person under the spellings of one address, and the hashed
recipient an Open Badges assertion carries.

Why one function: WoD counts completed workshops per e-mail, and a person who registers as
`Ada@Example.org` and then `ada+wod@example.org` is one participant. The special badges count
by `fold_email`, and the registration portal's "one live session per e-mail" rule folds
addresses the same way: both import it from here.
"""

from __future__ import annotations

import hashlib
import secrets

SALT_BYTES = 16


def fold_email(address: str) -> str:
    """The address as one person: trimmed, lowercased, without a `+tag` in its local part
    (`Ada+wod@Example.org` → `ada@example.org`). An address without `@` is only trimmed and
    lowercased (validation is the caller's)."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local.split('+', 1)[0]}@{domain}"


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def hashed_identity(email: str, salt: str) -> str:
    """Open Badges' hashed recipient: `sha256$` and the hex SHA-256 of the address followed by
    the salt. The address is hashed as the participant gave it, trimmed: the one they will
    claim the badge with."""
    digest = hashlib.sha256((email.strip() + salt).encode()).hexdigest()
    return f"sha256${digest}"
