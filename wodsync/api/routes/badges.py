"""`/badges/…`: the public side of the badges — a page per awarded badge, its Open Badges 2.0
documents and its signed assertion, the issuer's profile and public key. No token: a badge is
meant to be shown to anyone; its id (128 random bits) is what the participant shares, and no
page lists badges or shows an e-mail.

The public base URL of every link is `catalog/badges.yaml`'s `public_url`, else the URL the
request came to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from wodsync.api.deps import SessionsDep
from wodsync.badges import openbadges as ob
from wodsync.badges.images import medal_svg
from wodsync.badges.keys import BadgesNotConfigured, public_pem, signing_key
from wodsync.badges.page import render_page
from wodsync.sessions.service import SessionService

router = APIRouter(prefix="/badges", tags=["badges"])
PAGE_POLICY = "default-src 'none'; img-src * data:; style-src 'unsafe-inline'"
JWS_TYPE = "application/jose"  # RFC 7515's media type of a compact JWS


def _settings(service: SessionService, request: Request) -> tuple[ob.Issuer, ob.Urls]:
    found = service.deployment().catalog.badges
    base = (found.public_url if found and found.public_url else str(request.base_url))
    if found is None:
        return ob.Issuer(), ob.Urls(base)
    return ob.Issuer(found.issuer.name, found.issuer.url, found.issuer.email), ob.Urls(base)


@router.get("/issuer")
def issuer(service: SessionsDep, request: Request) -> Any:
    """The issuer's Open Badges profile, naming its public key."""
    who, urls = _settings(service, request)
    return ob.issuer_profile(who, urls)


@router.get("/key")
def key(service: SessionsDep, request: Request) -> Any:
    """The public key every assertion is signed with (a CryptographicKey, PEM)."""
    _, urls = _settings(service, request)
    return ob.cryptographic_key(public_pem(signing_key(service.deployment().secrets)), urls)


@router.get("/class/{kind}/{badge}")
def badge_class(kind: str, badge: str, service: SessionsDep, request: Request) -> Any:
    """A badge class (a workshop's badge, or a special level) that has been awarded."""
    _, urls = _settings(service, request)
    return ob.badge_class(service.store.badges.latest(kind, badge), urls)


@router.get("/class/{kind}/{badge}/image.svg")
def badge_image(kind: str, badge: str, service: SessionsDep) -> Response:
    """The drawn image of a badge class the catalog gives no image."""
    found = service.store.badges.latest(kind, badge)
    return Response(medal_svg(found.title, found.kind), media_type="image/svg+xml")


@router.get("/{badge_id}", response_class=HTMLResponse)
def page(badge_id: str, service: SessionsDep, request: Request) -> HTMLResponse:
    """The public verification page: who, which badge, when, the image, how to verify."""
    who, urls = _settings(service, request)
    found = service.store.badges.get(badge_id)
    try:
        signing_key(service.deployment().secrets)
        signed = True
    except BadgesNotConfigured:
        signed = False
    html = render_page(found, who, urls, signed)
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY,
                                       "X-Content-Type-Options": "nosniff"})


@router.get("/{badge_id}/assertion.json")
def assertion_json(badge_id: str, service: SessionsDep, request: Request) -> Any:
    """The assertion as JSON, to read (what `/assertion` carries signed)."""
    _, urls = _settings(service, request)
    return ob.assertion(service.store.badges.get(badge_id), urls)


@router.get("/{badge_id}/assertion", response_class=PlainTextResponse)
def assertion_signed(badge_id: str, service: SessionsDep, request: Request) -> Response:
    """The signed assertion: a JWS (compact, RS256) whose payload is the assertion."""
    _, urls = _settings(service, request)
    found = service.store.badges.get(badge_id)
    signed = ob.sign(ob.assertion(found, urls), signing_key(service.deployment().secrets))
    return PlainTextResponse(signed, media_type=JWS_TYPE)
