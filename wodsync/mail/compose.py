"""Turning an outbox row into the message sent: its context, its templates, its headers.

Why at send time: the outbox keeps no secret, so what a mail shows of one (the password, the
session page's secret link) is read now, from the session as it is now — and a mail whose
session no longer allows it (the credentials of a session that ended meanwhile) is dropped with
the reason instead of sent. The same context, with sample values, is what `validate` checks the
templates against and what `wodsync mail preview` shows, so a template that validates renders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from wodsync.mail import context as extras
from wodsync.mail import links
from wodsync.mail.settings import MailSettings
from wodsync.mail.templates import MailTemplates, load_templates, split_subject
from wodsync.render.jinja import render_text
from wodsync.render.sandbox import BoundedSandbox, within
from wodsync.store import Session, SessionNotFound, SessionState, Store
from wodsync.store.models import reading
from wodsync.store.outbox import Mail

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog

RENDER_SECONDS = 5.0
SECRET_KINDS = ("credentials", "expiring")  # mails that show the password
DEFAULT_BRAND = "Workshops-on-Demand"
SAMPLE_BASE = "https://wod.example.org"
HEADER_POLICY = policy.default.clone(max_line_length=998)
KEY_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class Drop:
    """A mail not to send, and why (kept as the row's `last_error`)."""

    reason: str


class HtmlSandbox(BoundedSandbox):
    """The workshops' sandbox, escaping what it prints: a participant's name is text, never
    markup, in an HTML mail."""

    def __init__(self) -> None:
        super().__init__()
        self.autoescape = True


@cache
def html_environment() -> HtmlSandbox:
    return HtmlSandbox()


def _compile(source: str, name: str, html: bool) -> Any:
    from wodsync.render.jinja import compile_template

    if not html:
        return compile_template(source, name)
    env = html_environment()
    code = within(RENDER_SECONDS, lambda: env.compile(source, name=name, filename=name))
    return env.template_class.from_code(env, code, env.make_globals(None))


def render_parts(templates: MailTemplates, kind: str,
                 ctx: Mapping[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of a `kind` mail for `ctx`; template errors propagate."""
    text_src, html_src = templates.source(kind, "txt"), templates.source(kind, "html")
    text = render_text(_compile(text_src.text, text_src.rel, False), ctx)
    html = render_text(_compile(html_src.text, html_src.rel, True), ctx)
    subject, body = split_subject(text)
    return _one_line(subject or f"{kind} notice"), body, html


def _one_line(value: str) -> str:
    """A header value on one line: a subject rendered from a name cannot add a header."""
    return " ".join(value.split())[:250]


def message_id(mail_id: int, key: str | None, domain: str) -> str:
    """The same for every attempt at one mail, unique across mails: a receiver that got a
    retried mail twice (sent, then the process died before marking it) can tell."""
    tail = KEY_CHARS.sub(".", key).strip(".") if key else "mail"
    return f"<{mail_id}.{tail}@{domain}>"


def build_message(settings: MailSettings, to: str, subject: str, text: str, html: str,
                  msg_id: str, now: datetime) -> EmailMessage:
    """multipart/alternative: the text first, the HTML last (the one clients prefer).

    Header lines up to RFC 5322's 998 characters: a long subject folded right after
    `Subject:` reads back with a leading space in some parsers (Python's among them)."""
    msg = EmailMessage(policy=HEADER_POLICY)
    msg["Subject"] = subject
    msg["From"] = settings.from_
    msg["To"] = to
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


# -- the context -----------------------------------------------------------------------------


def _absolute(ref: str | None, base: str | None) -> str | None:
    """An image or page of the catalog as a URL a mail client can fetch."""
    if not ref or re.match(r"^https?://", ref):
        return ref
    return f"{base or SAMPLE_BASE}/{ref.lstrip('/')}"


def _workshop(catalog: Catalog, key: str | None, base: str | None) -> dict[str, Any]:
    ws = catalog.workshops.get(key) if key else None
    replay = next((r for r in catalog.replays if ws is not None and r.id == ws.replay), None)
    return {
        "key": key or "",
        "name": ws.name if ws else (key or ""),
        "description": ws.description if ws else "",
        "duration": ws.duration if ws else None,
        "presenter": ws.presenter if ws else None,
        "image": _absolute(ws.workshop_image, base) if ws else None,
        "badge_image": _absolute(ws.badge_image, base) if ws else None,
        "replay_url": replay.video if replay else None,
    }


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else None


def _hours(hours: float) -> str:
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def _session(session: Session | None, hub: str | None) -> dict[str, Any] | None:
    if session is None:
        return None
    return {
        "id": session.id, "username": session.username, "state": session.state.value,
        "hub_url": hub, "started_at": _when(session.started_at),
        "ends_at": _when(session.ends_at), "completion": session.completion,
        "score": session.score,
        "duration_hours": session.duration_hours,
        "duration_text": _hours(session.duration_hours),
    }


def _brand(catalog: Catalog, settings: MailSettings | None) -> dict[str, Any]:
    variables = {k: v for k, v in catalog.variables.items() if isinstance(v, str)}
    return {"name": variables.get("BRANDING") or DEFAULT_BRAND,
            "url": variables.get("BRANDINGURL") or (settings.portal_url if settings else None)}


def _feedback(catalog: Catalog, settings: MailSettings | None) -> str | None:
    survey = catalog.variables.get("SURVEYURL")
    return (settings.feedback_url if settings else None) or \
        (survey if isinstance(survey, str) else None)


@dataclass(frozen=True)
class Subject:
    """What a mail is about, for building its context."""

    kind: str
    to: str
    session: Session | None
    data: Mapping[str, Any]
    hub: str | None = None


def build_context(catalog: Catalog, settings: MailSettings | None, about: Subject,
                  link: Any) -> dict[str, Any]:
    """The names a `kind` template gets. `link(kind_of_link)` gives each link."""
    base = settings.base_url if settings else None
    session, data, kind = about.session, about.data, about.kind
    key = session.workshop if session else data.get("workshop")
    ctx: dict[str, Any] = {
        "kind": kind,
        "participant": {"name": session.name if session else str(data.get("name", "")),
                        "email": session.email if session else about.to},
        "workshop": _workshop(catalog, key, base),
        "session": _session(session, about.hub),
        "brand": _brand(catalog, settings),
        "data": dict(data),
    }
    ctx["links"] = {
        "session": link("session") if session else None,
        "extend": link("extend") if session else None,
        "unregister": link("unregister") if session else None,
        "confirm": link("confirm") if kind == "confirm" else None,
        "register": f"{base or SAMPLE_BASE}/",
        "feedback": _feedback(catalog, settings),
        "replay": ctx["workshop"]["replay_url"],
        "hub": about.hub,
    }
    if kind in SECRET_KINDS:
        ctx["password"] = session.password if session else ""
    if kind == "ended":
        ctx["badges"] = []
    if kind in ("failed", "operator"):
        ctx["event"] = str(data.get("event", ""))
        ctx["details"] = str(data.get("details") or "") or (
            session.error if session and kind == "operator" else None) or ""
    return ctx


def sample_session(catalog: Catalog, workshop: str | None) -> Session:
    """A session with sample values, for previews and the template checks."""
    now = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    ws = catalog.workshops.get(workshop or "")
    hours = ws.duration if ws else 2.0
    return Session(
        id="0123456789ab", workshop=workshop or "WKSHP-Sample", name="Ada Lovelace",
        email="ada@example.org", company="Example", location="emea", host="hub-1", seat=1,
        username="student1", slot=0, state=SessionState.ACTIVE, duration_hours=hours,
        created_at=now, started_at=now, ends_at=now + timedelta(hours=hours), ended_at=None,
        expiring_at=None, completion=80.0, revision="sample", error="sample error",
        password="Sample-Pass1", score=75)


def sample_context(catalog: Catalog, kind: str, workshop: str | None = None) -> dict[str, Any]:
    """The context of a `kind` mail with sample values (`workshop`: the catalog's first when
    not given)."""
    workshop = workshop or next(iter(sorted(catalog.workshops)), None)
    settings: MailSettings | None = getattr(catalog, "mail", None)
    session = None if kind == "confirm" else sample_session(catalog, workshop)
    base = (settings.base_url if settings else None) or SAMPLE_BASE
    about = Subject(kind, "ada@example.org", session,
                    {"workshop": workshop or "", "name": "Ada Lovelace", "event": "sample"},
                    "http://hub-1.example.org:8000/")
    ctx = build_context(catalog, settings, about, lambda link: f"{base}/{link}/sample")
    if kind == "ended":
        ctx["badges"] = [{"name": "Sample badge", "image": f"{base}/img/badge.png",
                          "url": f"{base}/badges/sample"}]
    return ctx


# -- composing a queued mail -------------------------------------------------------------------


def _refusal(kind: str, session: Session | None) -> str | None:
    """Why a mail may not be sent as the session is now (None: it may)."""
    if kind not in SECRET_KINDS:
        return None
    if session is None:
        return f"a {kind} mail needs its session"
    if session.state is not SessionState.ACTIVE or not session.password:
        return (f"session {session.id} is {session.state.value}: its credentials are no "
                "longer valid, the mail is not sent")
    return None


def compose(store: Store, catalog: Catalog, settings: MailSettings, mail: Mail,
            now: datetime | None = None) -> EmailMessage | Drop:
    """The message of an outbox row as the store and the catalog are now, or why not."""
    from wodsync.sessions.service import hub_url

    session = None
    if mail.session_id is not None:
        try:
            session = store.sessions.get(mail.session_id)
        except SessionNotFound:
            return Drop(f"session {mail.session_id} is no longer in the store")
    refused = _refusal(mail.kind, session)
    if refused:
        return Drop(refused)
    hub = hub_url(catalog, session.host) if session and session.host in catalog.hosts else None
    about = Subject(mail.kind, mail.to, session, mail.context, hub)

    def link(kind: str) -> str | None:
        return links.build(links.LinkRequest(kind, store, session, mail.context,
                                             settings.base_url))

    ctx = build_context(catalog, settings, about, link)
    with reading(store.engine) as conn:
        ctx.update(extras.extras(mail.kind, conn, session))
    templates = getattr(catalog, "mail_templates", None) or load_templates(catalog)[0]
    subject, text, html = render_parts(templates, mail.kind, ctx)
    return build_message(settings, mail.to, subject, text, html,
                         message_id(mail.id, mail.key, settings.message_domain),
                         now or datetime.now(UTC))
