"""API tokens in the store: names, roles and digests (never a token's value).

Why in the store rather than a root-only file: every process serving the API on one store (the
daemon, `wodsync serve` replicas on PostgreSQL) must accept and refuse the same tokens, and a
revocation must reach them all without copying a file to each machine. `wodsync.tokens` says
what the roles mean and how a value becomes a digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from wodsync.store.models import StoreError, TokenRow, reading, table_of, utcnow, writing
from wodsync.tokens import Known, Role

TOKENS = table_of(TokenRow)


class TokenExists(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} exists already: revoke it first, or choose "
                         "another name")


class TokenNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no token named {name!r} (`wodsync token list` shows them)")


@dataclass(frozen=True)
class StoredToken:
    name: str
    role: Role
    created_at: datetime


class Tokens:
    """The API tokens of one store; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, role: Role, digest: str) -> StoredToken:
        """Record a new token by its digest; a name already used is refused."""
        at = utcnow()
        try:
            with writing(self.engine) as conn:
                conn.execute(insert(TOKENS).values(name=name, role=role.value, digest=digest,
                                                   created_at=at))
        except IntegrityError:
            raise TokenExists(name) from None
        return StoredToken(name, role, at)

    def revoke(self, name: str) -> None:
        """The token stops being valid (on every process, at its next look at the store)."""
        with writing(self.engine) as conn:
            if not conn.execute(delete(TOKENS).where(TOKENS.c.name == name)).rowcount:
                raise TokenNotFound(name)

    def all(self) -> list[StoredToken]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(TOKENS.c.name, TOKENS.c.role, TOKENS.c.created_at)
                                .order_by(TOKENS.c.created_at, TOKENS.c.name)).all()
        return [StoredToken(r.name, Role(r.role), r.created_at) for r in rows]

    def known(self) -> list[Known]:
        """Every valid token's name, role and digest: what requests are checked against."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(TOKENS.c.name, TOKENS.c.role, TOKENS.c.digest)).all()
        return [Known(r.name, Role(r.role), r.digest) for r in rows]
