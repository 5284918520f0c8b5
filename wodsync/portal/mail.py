"""Where the portal meets the mail: the confirmation mail written in the registration's own
transaction, and the link builders the mail renderer calls when it sends (the secret links are
never kept in the outbox: `wodsync.mail.links`).
"""

from __future__ import annotations

from sqlalchemy import Connection

from wodsync.mail import links
from wodsync.mail.triggers import queued
from wodsync.portal.links import confirm_url, session_url
from wodsync.store.models import after_commit
from wodsync.store.outbox import enqueue
from wodsync.store.registrations import Registration


def enqueue_confirm(conn: Connection, registration: Registration) -> None:
    """The `confirm` mail of `registration`, in the caller's transaction: its context names the
    registration and what the mail shows, never the link's secret (built at send time)."""
    enqueue(conn, "confirm", registration.email, context={
        "registration": registration.id, "workshop": registration.workshop,
        "name": registration.name, "expires_at": registration.expires_at.isoformat()},
        key=f"confirm:{registration.id}")
    after_commit(conn, queued.set)  # a sender in this process wakes once the mail is there


def _session_link(request: links.LinkRequest) -> str | None:
    if request.store is None or request.session is None:
        return None
    return session_url(request.store, request.session.id, request.base_url or "")


def _anchor(anchor: str) -> links.LinkFn:
    def link(request: links.LinkRequest) -> str | None:
        url = _session_link(request)
        return f"{url}#{anchor}" if url else None
    return link


def _confirm_link(request: links.LinkRequest) -> str | None:
    registration = request.context.get("registration")
    if request.store is None or not registration:
        return None
    return confirm_url(request.store, str(registration), request.base_url or "")


def install_links() -> None:
    """Register the portal's link builders with the mail renderer: the session page, its extend
    and unregister forms (anchors of the page: a mailed link is a GET, the actions are the
    page's POST forms), and the confirmation link."""
    links.register("session", _session_link)
    links.register("extend", _anchor("extend"))
    links.register("unregister", _anchor("unregister"))
    links.register("confirm", _confirm_link)
