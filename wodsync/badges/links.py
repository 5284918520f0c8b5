"""The badges a session earned, as links: what the ended mail and the session page show.

`badges_for_session(store, session_id)` is the hook the mail and the portal call. With
`conn`, it reads inside an open transaction — an ended mail enqueued in the transaction that
ends the session sees the badges that very move awarded (`Badges.on_end` runs first: the store
registers it when it opens).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from wodsync.badges.openbadges import Urls
from wodsync.store import Store


@dataclass(frozen=True)
class BadgeLink:
    name: str     # the badge's title ("Python 101 - …", "Apprentice")
    image: str    # its image URL
    url: str      # its public verification page


def badges_for_session(store: Store, session_id: str, base_url: str = "",
                       conn: Connection | None = None) -> list[BadgeLink]:
    """The badges ending `session_id` awarded (its workshop's, then any special one), with
    URLs under `base_url` (the public URL mails link to; "" : root-relative, for a page of
    this server)."""
    urls = Urls(base_url)
    return [BadgeLink(name=b.title, image=urls.image(b.kind, b.badge, b.image),
                      url=urls.page(b.id))
            for b in store.badges.for_session(session_id, conn)]
