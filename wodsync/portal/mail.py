"""Where the portal meets the mail: the confirmation mail written in the registration's own
transaction, and the link builders the mail renderer calls when it sends (the secret links are
never kept in the outbox).

The mail package is optional here: without `wodsync.store.outbox` (an older tree) a
registration is still written, and its confirmation link can only be had from the store.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from sqlalchemy import Connection

from wodsync.portal.links import confirm_url, session_url
from wodsync.store.registrations import Registration

_log = logging.getLogger("wodsync.portal")


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def enqueue_confirm(conn: Connection, registration: Registration) -> None:
    """The `confirm` mail of `registration`, in the caller's transaction: its context names the
    registration and what the mail shows, never the link's secret (built at send time)."""
    outbox = _module("wodsync.store.outbox")
    if outbox is None:
        _log.warning("no outbox in this wodsync: registration %s gets no confirmation mail",
                     registration.id)
        return
    outbox.enqueue(conn, "confirm", registration.email, context={
        "registration": registration.id, "workshop": registration.workshop,
        "name": registration.name, "expires_at": registration.expires_at.isoformat()},
        key=f"confirm:{registration.id}")


def _session_link(request: Any) -> str | None:
    if request.store is None or request.session is None:
        return None
    return session_url(request.store, request.session.id, request.base_url or "")


def _anchor(anchor: str) -> Any:
    def link(request: Any) -> str | None:
        url = _session_link(request)
        return f"{url}#{anchor}" if url else None
    return link


def _confirm_link(request: Any) -> str | None:
    registration = (request.context or {}).get("registration")
    if request.store is None or not registration:
        return None
    return confirm_url(request.store, str(registration), request.base_url or "")


def install_links() -> None:
    """Register the portal's link builders with the mail renderer (when there is one): the
    session page, its extend and unregister forms (anchors of the page: a mailed link is a GET,
    the actions are the page's POST forms), and the confirmation link."""
    links = _module("wodsync.mail.links")
    if links is None:
        return
    links.register("session", _session_link)
    links.register("extend", _anchor("extend"))
    links.register("unregister", _anchor("unregister"))
    links.register("confirm", _confirm_link)
