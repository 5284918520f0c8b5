"""The secrets of the mailed links: a confirmation link per registration, a page link per
session, and the CSRF token of the session page's forms.

Why an HMAC and not a random token: the mail is rendered when it is sent, maybe by another
process, and must be able to build the link again from what the outbox keeps (the session or
registration id, never a secret). The key is derived from the store key (`Sealer.derive`), so
every controller sharing a store builds and accepts the same links and a copy of the database
alone forges none. A token is `<id>.<mac>`: the mac covers the kind of link and the id, so a
session link is not a confirmation link, and another session's id with this mac is a 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

from wodsync.store.models import StoreError, sealer_of

if TYPE_CHECKING:
    from wodsync.store import Store

PURPOSE = "portal links"
MAC_CHARS = 32  # 192 bits of the HMAC, in urlsafe base64


class Links:
    """Builds and checks tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, kind: str, ident: str) -> str:
        digest = hmac.new(self._key, f"{kind}\0{ident}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:MAC_CHARS]

    def token(self, kind: str, ident: str) -> str:
        return f"{ident}.{self._mac(kind, ident)}"

    def check(self, kind: str, token: str) -> str | None:
        """The id `token` carries when its mac is right for `kind`; None otherwise."""
        ident, dot, mac = token.partition(".")
        if not dot or not ident or len(ident) > 64:
            return None
        return ident if hmac.compare_digest(mac.encode(), self._mac(kind, ident).encode()) \
            else None

    def confirm_path(self, registration_id: str) -> str:
        return f"/confirm/{self.token('confirm', registration_id)}"

    def session_path(self, session_id: str) -> str:
        return f"/s/{self.token('session', session_id)}"


def links_of(store: Store) -> Links:
    """The links of `store`, keyed by its store key."""
    sealer = sealer_of(store.engine)
    if sealer is None:
        raise StoreError("this store was not opened by open_store: no key for the portal's "
                         "links")
    return Links(sealer.derive(PURPOSE))


def confirm_url(store: Store, registration_id: str, base_url: str = "") -> str:
    """The confirmation link of a registration (for its mail)."""
    return base_url.rstrip("/") + links_of(store).confirm_path(registration_id)


def session_url(store: Store, session_id: str, base_url: str = "") -> str:
    """The session page's link (for every mail about the session)."""
    return base_url.rstrip("/") + links_of(store).session_path(session_id)
