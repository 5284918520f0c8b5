"""The public verification page of an awarded badge (`/badges/{id}`).

Who (the name the participant gave — never their e-mail), which badge and workshop, when, the
image, and how anyone can check it: the page is the issuer's own record, and the signed
assertion it links to is checked with the published key. Autoescaped: a participant's name is
text, never markup.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

from wodsync.badges.openbadges import Issuer, Urls
from wodsync.badges.specials import BY_KEY
from wodsync.store.badges import Badge

_ENV = Environment(loader=PackageLoader("wodsync.badges", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True))


def what(badge: Badge) -> str:
    if badge.kind == "special":
        level = BY_KEY.get(badge.badge)
        count = f"{level.completed} different" if level else "several"
        return f"For completing {count} Workshops-on-Demand."
    done = "" if badge.completion is None else \
        f", with {badge.completion:g} % of its code cells run"
    return f"For the workshop {badge.title} ({badge.workshop}){done}."


def render_page(badge: Badge, issuer: Issuer, urls: Urls, signed: bool = True) -> str:
    """The page; `signed`: the server has a key, so the page links the signed assertion."""
    assert badge.awarded_at is not None
    return _ENV.get_template("badge.html").render(
        badge=badge, issuer=issuer, what=what(badge), signed=signed,
        image=urls.image(badge.kind, badge.badge, badge.image),
        awarded=badge.awarded_at.strftime("%d %B %Y"),
        assertion_url=urls.assertion(badge.id), key_url=urls.key, issuer_url=urls.issuer)
