"""Links that carry a secret (the session page, its extend button, the confirmation), built
when a mail is rendered, never kept in the outbox.

Why a registry: the portal owns those secrets and its routes; mail only needs "the link of this
kind for this mail". The portal registers one function per kind of link:

    from wodsync.mail import links

    def session_link(req: links.LinkRequest) -> str | None:
        return f"{req.base_url}/s/{secret_of(req.store, req.session)}"

    links.register("session", session_link)

Until a function is registered for a kind, the link is the portal's base URL (`portal_url` of
the mail settings; None without one), which reveals nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wodsync.store import Session, Store

# session: the participant's session page; extend: its extend action; unregister: its
# unregister action; confirm: the confirmation link of a registration (context holds what the
# portal needs to find it, e.g. its id — never the token).
LINK_KINDS = ("session", "extend", "unregister", "confirm")


@dataclass(frozen=True)
class LinkRequest:
    """What a link function gets: the store (to read its secret), the mail's session (None
    for a confirm mail), the mail's context, and the portal's base URL (no trailing /)."""

    kind: str
    store: Store | None
    session: Session | None
    context: Mapping[str, Any] = field(default_factory=dict)
    base_url: str | None = None


LinkFn = Callable[[LinkRequest], "str | None"]
_REGISTRY: dict[str, LinkFn] = {}


def register(kind: str, fn: LinkFn) -> None:
    """Build links of `kind` with `fn` from now on (a second registration replaces the first)."""
    if kind not in LINK_KINDS:
        raise ValueError(f"unknown kind of link {kind!r}: one of {', '.join(LINK_KINDS)}")
    _REGISTRY[kind] = fn


def unregister(kind: str) -> None:
    _REGISTRY.pop(kind, None)


def build(request: LinkRequest) -> str | None:
    """The link of `request.kind`: the registered function's, or the portal's base URL."""
    fn = _REGISTRY.get(request.kind)
    if fn is not None:
        return fn(request)
    return f"{request.base_url}/" if request.base_url else None
