"""The registration pages: the workshops with their forms (`/register`; `/` leads there), the
form's answer, and the confirmation link that creates the session (`/confirm/{token}`).

Public pages, no token: what guards them is the screening, the rate limits and the CSRF
double-submit cookie of the form; the rules themselves are `wodsync.portal.journey`'s.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from wodsync.api.deps import SessionsDep
from wodsync.api.pages import CSRF_COOKIE, STATUS, csrf_token, message, page
from wodsync.portal.journey import Expired, NotFound, Portal, time_left
from wodsync.portal.screening import Refusal
from wodsync.source.revision import NotDeployed


class PageRoute(APIRoute):
    """A participant's page: before a revision is deployed (the daemon's first minutes) it
    says so as a page, not as the API's JSON refusal."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def page_or_wait(request: Request) -> Response:
            try:
                answer: Response = await handler(request)
            except NotDeployed:
                return message("The workshops are on their way",
                               "This portal is starting. Please try again in a minute.", 503,
                               link=None)
            return answer

        return page_or_wait


router = APIRouter(tags=["portal pages"], include_in_schema=False, route_class=PageRoute)

CookieDep = Annotated[str | None, Cookie(alias=CSRF_COOKIE)]


def portal_of(request: Request, service: SessionsDep) -> Portal:
    """One Portal per application (its link key is derived once)."""
    found = getattr(request.app.state, "portal", None)
    if found is None or found.service is not service:
        found = request.app.state.portal = Portal(service)
    return found


def csrf_ok(form_token: str, cookie: str | None) -> bool:
    return bool(cookie) and hmac.compare_digest(form_token.encode(), (cookie or "").encode())


def _workshops(portal: Portal) -> list[dict[str, Any]]:
    catalog = portal.service.deployment().catalog
    live = portal.store.sessions.live_per_workshop()
    shown = []
    for key, w in sorted(catalog.workshops.items(), key=lambda kv: (kv[1].priority, kv[0])):
        if not w.active:
            continue
        image = w.workshop_image if w.workshop_image and w.workshop_image.startswith(
            ("https://", "http://", "/")) else None
        shown.append({"key": key, "title": w.name, "description": w.description,
                      "image": image, "duration": f"{w.duration:g} h",
                      "seats_left": max(0, w.capacity - live.get(key, 0)),
                      "presenter": w.presenter, "role": w.role,
                      "replay": portal.replay(key)})
    return shown


def workshops_page(portal: Portal, csrf: str, refusal: str = "", status: int = 200,
                   form: dict[str, str] | None = None) -> Response:
    return page("workshops.html", status, csrf, workshops=_workshops(portal),
                terms=portal.settings().terms, refusal=refusal, form=form or {})


@router.get("/")
def root() -> Response:
    return RedirectResponse("/register", status_code=307)


@router.get("/register")
def workshops(request: Request, service: SessionsDep, cookie: CookieDep = None) -> Response:
    """Every active workshop of the deployed catalog, each with its registration form."""
    return workshops_page(portal_of(request, service), csrf_token(cookie))


@router.post("/register")
def register(request: Request, service: SessionsDep,
             workshop: Annotated[str, Form(max_length=100)] = "",
             name: Annotated[str, Form(max_length=400)] = "",
             email: Annotated[str, Form(max_length=400)] = "",
             company: Annotated[str, Form(max_length=400)] = "",
             terms: Annotated[str, Form(max_length=10)] = "",
             csrf: Annotated[str, Form(max_length=100)] = "",
             cookie: CookieDep = None) -> Response:
    """The form: a registration and its confirmation mail, or the page again saying why not."""
    portal = portal_of(request, service)
    token = csrf_token(cookie)
    if not csrf_ok(csrf, cookie):
        return workshops_page(portal, token, "This form had expired: please send it again.",
                              403, {"workshop": workshop, "name": name, "email": email,
                                    "company": company})
    client = request.client.host if request.client else "unknown"
    try:
        registration = portal.register(workshop, name, email, company, terms == "yes", client)
    except Refusal as exc:
        return workshops_page(portal, token, str(exc), STATUS[exc.why],
                              {"workshop": workshop, "name": name, "email": email,
                               "company": company})
    return message("Check your mailbox",
                   f"We sent a link to {registration.email}. Click it within "
                   f"{time_left(registration.expires_at)} to get your seat in "
                   f"{portal.title(registration.workshop)}: the workshop starts then.",
                   200, token, link=None)


@router.get("/confirm/{token}")
def confirm(token: str, request: Request, service: SessionsDep) -> Response:
    """The mailed link: the session is created at the first click; every click leads to it."""
    portal = portal_of(request, service)
    try:
        session = portal.confirm(token)
    except NotFound:
        return message("Not found", "There is no such page.", 404)
    except Expired as exc:
        return message("This link has expired",
                       f"The link to confirm your registration for "
                       f"{portal.title(exc.registration.workshop)} has expired. Please "
                       "register again: you will get a new one.", 410)
    except Refusal as exc:
        return message("Your seat could not be given", str(exc), STATUS[exc.why])
    return RedirectResponse(portal.links.session_path(session.id), status_code=303)
