"""The participant's pages as HTML (`wodsync.portal` decides, these pages show): Jinja2
templates shipped with the package (`api/templates/`), autoescaped, answered with headers
that keep a page with credentials out of caches, frames and other sites' reach; and the HTTP
status of each kind of refusal.

Why a nonce: the Content-Security-Policy allows no script or style but the page's own inline
block carrying this answer's nonce (the time-left countdown, the stylesheet); the pages work
without JavaScript. `Referrer-Policy: no-referrer` keeps the secret page link from reaching
the hub (or a workshop's image host) in a Referer header.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

CSRF_COOKIE = "wodsync_csrf"
# A portal refusal's kind (`wodsync.portal.screening.WHYS`) → the status of its page.
STATUS = {"invalid": 422, "unknown": 404, "taken": 409, "limited": 429, "gone": 410,
          "closed": 503, "failed": 502}

_ENV = Environment(loader=PackageLoader("wodsync.api", "templates"),
                   autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True)


def policy(nonce: str) -> str:
    return ("default-src 'none'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")


def page(template: str, status: int = 200, csrf: str | None = None,
         **context: Any) -> HTMLResponse:
    """`template` rendered with `context`, with the portal's security headers; `csrf` is the
    form token, set as the cookie the forms are checked against."""
    nonce = secrets.token_urlsafe(16)
    body = _ENV.get_template(template).render(nonce=nonce, csrf=csrf or "", **context)
    response = HTMLResponse(body, status_code=status)
    response.headers.update({
        "Content-Security-Policy": policy(nonce), "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY"})
    if csrf:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
    return response


def csrf_token(cookie: str | None) -> str:
    """The form token: the browser's, or a new one."""
    return cookie if cookie and 20 <= len(cookie) <= 64 else secrets.token_urlsafe(24)


def message(title: str, text: str, status: int, csrf: str | None = None,
            link: tuple[str, str] | None = ("/register", "See the workshops")) -> HTMLResponse:
    """A page that only says something (a refusal, an expired link, a 404)."""
    return page("message.html", status, csrf, title=title, text=text, link=link)
