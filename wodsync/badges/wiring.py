"""Where badges reach the rest: the store's award rules, the ended mail and the session page.

Why one place: the session service installs it (every process that ends sessions or renders
their mails has one), so a CLI CLEANUP awards as the daemon would, and the mail sender and the
participant's page show the badges the move awarded. The mail's and the portal's registries
replace or ignore a second registration, so installing again is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection

from wodsync.badges.links import badges_for_session
from wodsync.badges.rules import catalog_rules
from wodsync.source.revision import Deployment, NotDeployed
from wodsync.store import Session, Store

MAIL_EXTRA_NAME = "wodsync.badges"


def install(store: Store, deployment: Callable[[], Deployment]) -> None:
    """Award by the deployed catalog's rules; list the badges in ended mails and on the
    session page."""
    from wodsync.mail import context as mail_context
    from wodsync.portal import badges as page_badges

    store.badges.rules = catalog_rules(deployment)
    mail_context.register_ended_extra(_mail_extra(store, deployment), name=MAIL_EXTRA_NAME)
    page_badges.register(page_links)


def public_base(deployment: Callable[[], Deployment]) -> str:
    """Where mailed badge links point: `catalog/badges.yaml`'s `public_url`, else the mails'
    `portal_url` (the same server serves the portal and the badges); "" when neither is set."""
    try:
        catalog = deployment().catalog
    except NotDeployed:
        return ""
    if catalog.badges is not None and catalog.badges.public_url:
        return catalog.badges.public_url
    mail = getattr(catalog, "mail", None)
    return (mail.base_url or "") if mail is not None else ""


def _mail_extra(store: Store, deployment: Callable[[], Deployment]
                ) -> Callable[[Connection, Session | None], Mapping[str, Any]]:
    def badges(conn: Connection, session: Session | None) -> Mapping[str, Any]:
        if session is None:
            return {"badges": []}
        links = badges_for_session(store, session.id, public_base(deployment), conn)
        return {"badges": [asdict(link) for link in links]}

    return badges


def page_links(store: Store, session: Session) -> list[Any]:
    """The session page's badges: links to this server's own pages (root-relative)."""
    return list(badges_for_session(store, session.id))
