"""What a kind of mail's template gets besides the defaults, from other parts of wodsync.

Why a registry: the badges of an ended mail are the badges part's business; mail only merges
what it is given. A function registered for a kind is called when a mail of that kind is
rendered, inside a read transaction of the store, with the mail's session (None when it has
none), and returns names for the template (e.g. `{"badges": [...]}`). Nothing it returns is
kept in the outbox, so it may be computed from the latest state.

    from wodsync.mail import context

    def badges(conn, session):
        return {"badges": [{"name": ..., "image": ..., "url": ...}]}

    context.register_ended_extra(badges)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from wodsync.store import Session
from wodsync.store.outbox import KINDS

ExtraFn = Callable[[Connection, "Session | None"], Mapping[str, Any]]
_EXTRAS: dict[str, dict[str, ExtraFn]] = {}


def register_extra(kind: str, fn: ExtraFn, *, name: str | None = None) -> None:
    """Merge `fn`'s names into every `kind` mail's context. `name` (default: the function's
    qualified name) identifies it: registering the same name again replaces it."""
    if kind not in KINDS:
        raise ValueError(f"unknown mail kind {kind!r}: one of {', '.join(KINDS)}")
    _EXTRAS.setdefault(kind, {})[name or f"{fn.__module__}.{fn.__qualname__}"] = fn


def register_ended_extra(fn: ExtraFn, *, name: str | None = None) -> None:
    """`register_extra("ended", fn)`: the ended mail's badges (`badges`: a list of
    mappings with at least `name`, and `image`, `url` when known)."""
    register_extra("ended", fn, name=name)


def unregister_extra(kind: str, name: str) -> None:
    _EXTRAS.get(kind, {}).pop(name, None)


def extras(kind: str, conn: Connection, session: Session | None) -> dict[str, Any]:
    """Every registered function's names for a `kind` mail, merged in registration order."""
    merged: dict[str, Any] = {}
    for fn in list(_EXTRAS.get(kind, {}).values()):
        merged.update(fn(conn, session))
    return merged
