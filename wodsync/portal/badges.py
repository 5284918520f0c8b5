"""The hook through which badges reach the session page: the badges helper registers a
function returning the badge links of a session; none are shown until one is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wodsync.store import Session, Store


@dataclass(frozen=True, slots=True)
class BadgeLink:
    name: str
    image: str | None
    url: str


BadgeSource = Callable[["Store", "Session"], list[BadgeLink]]
_SOURCES: list[BadgeSource] = []


def register(source: BadgeSource) -> None:
    """Show the badges `source` returns on the page of an ended session."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def badge_links(store: Store, session: Session) -> list[BadgeLink]:
    """Every registered source's badges of `session` (none by default)."""
    return [link for source in _SOURCES for link in source(store, session)]
