"""The session page (`/s/{token}`): reached only through the secret link of the mails, it
shows the workshop, its state, the hub and the credentials while the session runs, the time
left, and the Extend and Unregister forms; after the end, completion, score, badges, replay and
feedback. Another session's link, or a tampered one, is a 404; an ended session shows no
credentials (the store has blanked them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from wodsync.api.deps import SessionsDep
from wodsync.api.pages import STATUS, csrf_token, message, page
from wodsync.api.routes.register import CookieDep, PageRoute, csrf_ok, portal_of
from wodsync.portal import badges
from wodsync.portal.journey import NotFound, Portal
from wodsync.portal.screening import Refusal
from wodsync.store import Session

router = APIRouter(prefix="/s", tags=["portal pages"], include_in_schema=False,
                   route_class=PageRoute)

CsrfForm = Annotated[str, Form(max_length=100)]


def _not_found() -> Response:
    return message("Not found", "There is no such page.", 404)


def session_page(portal: Portal, token: str, session: Session, csrf: str, status: int = 200,
                 refusal: str = "", notice: str = "") -> Response:
    ended = not session.live
    return page("session.html", status, csrf, page=f"/s/{token}", refusal=refusal,
                notice=notice, badges=badges.badge_links(portal.store, session) if ended
                else [], **portal.view(session))


@router.get("/{token}")
def show(token: str, request: Request, service: SessionsDep,
         cookie: CookieDep = None) -> Response:
    portal = portal_of(request, service)
    try:
        session = portal.session(token)
    except NotFound:
        return _not_found()
    return session_page(portal, token, session, csrf_token(cookie))


def _act(token: str, request: Request, service: SessionsDep, csrf: str, cookie: str | None,
         action: str) -> Response:
    portal = portal_of(request, service)
    try:
        session = portal.session(token)
    except NotFound:
        return _not_found()
    if not csrf_ok(csrf, cookie):
        return session_page(portal, token, session, csrf_token(cookie), 403,
                            refusal="This form had expired: please try again.")
    try:
        if action == "extend":
            portal.extend(session)
        else:
            portal.unregister(session)
    except Refusal as exc:
        return session_page(portal, token, portal.store.sessions.get(session.id),
                            csrf_token(cookie), STATUS[exc.why], refusal=str(exc))
    return RedirectResponse(f"/s/{token}", status_code=303)


@router.post("/{token}/extend")
def extend(token: str, request: Request, service: SessionsDep, csrf: CsrfForm = "",
           cookie: CookieDep = None) -> Response:
    """One step of extra time, within the workshop's self-service limit."""
    return _act(token, request, service, csrf, cookie, "extend")


@router.post("/{token}/unregister")
def unregister(token: str, request: Request, service: SessionsDep, csrf: CsrfForm = "",
               cookie: CookieDep = None) -> Response:
    """End the session now (CLEANUP); the page then shows the end."""
    return _act(token, request, service, csrf, cookie, "unregister")
