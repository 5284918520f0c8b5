"""Who may register: address syntax (and, when asked, deliverability), throw-away domains, the
operator's allow and deny lists, and the folded key of the one-live-session rule.

Why libraries: `email-validator` knows the address grammar, internationalised domains and
the DNS check far better than a regular expression; `disposable-email-domains` is a list
maintained by the people who watch throw-away providers appear. A refusal is a `Refusal` whose
text is meant for the participant, never for a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from disposable_email_domains import blocklist
from email_validator import EmailNotValidError, validate_email

from wodsync.badges.identity import fold_email
from wodsync.catalog.models import PortalFile
from wodsync.store.sessions import Session

_SPAN_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_RATE_UNITS = {"second": timedelta(seconds=1), "minute": timedelta(minutes=1),
               "hour": timedelta(hours=1), "day": timedelta(days=1)}


class Refusal(Exception):
    """A participant's request refused; `str()` says why, in plain words for them. `why`
    names the kind of refusal (`WHYS`); the pages answer each with its HTTP status."""

    def __init__(self, message: str, why: str = "invalid", session: Session | None = None
                 ) -> None:
        super().__init__(message)
        assert why in WHYS, why
        self.why = why
        self.session = session  # the person's live session, when that is what stands in the way


# invalid: the input cannot be used; unknown: no such workshop; taken: a seat, a live session
# or a cap stands in the way; limited: too many attempts; gone: no longer possible; closed:
# the portal cannot take registrations now; failed: the seat could not be prepared.
WHYS = ("invalid", "unknown", "taken", "limited", "gone", "closed", "failed")


@dataclass(frozen=True, slots=True)
class Screened:
    """An address that passed: as the participant wrote it (normalised by email-validator),
    and its folded key."""

    email: str
    key: str


def span(text: str) -> timedelta:
    """`24h`, `30m`, `2d` (the catalog's pattern has checked the form)."""
    return int(text[:-1]) * _SPAN_UNITS[text[-1]]


def rate(text: str) -> tuple[int, timedelta]:
    """`3/hour` → (3, one hour)."""
    count, unit = text.split("/")
    return int(count), _RATE_UNITS[unit]


def fold(email: str) -> str:
    """The key of one person's address (`Ann+1@Example.org` and `ann@example.org` are one
    person): the badges' folding, so both rules count the same people."""
    return fold_email(email)


def _domains(domain: str) -> list[str]:
    """`a.b.example.org` and every parent down to `example.org`."""
    parts = domain.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1)]


def _matches(patterns: list[str], address: str, domain: str) -> bool:
    wanted = {p.casefold() for p in patterns}
    return address in wanted or any(d in wanted for d in _domains(domain))


def screen(settings: PortalFile, email: str) -> Screened:
    """The address, or a Refusal saying why it cannot register."""
    try:
        checked = validate_email(email.strip(), check_deliverability=settings.check_deliverability)
    except EmailNotValidError as exc:
        raise Refusal(f"This e-mail address cannot be used: {exc}") from None
    domain = checked.ascii_domain.casefold()
    key = fold(checked.ascii_email or checked.normalized)
    if any(d in blocklist for d in _domains(domain)):
        raise Refusal(f"Addresses at {domain} are throw-away addresses. Please register with an "
                      "address you keep: your credentials, reminders and badge are sent to it.")
    if _matches(settings.deny, key, domain):
        raise Refusal(f"Registrations with addresses at {domain} are not accepted here.")
    if settings.allow and not _matches(settings.allow, key, domain):
        raise Refusal("This portal only accepts addresses of the organisations it serves; "
                      f"{domain} is not one of them.")
    return Screened(checked.normalized, key)


_SPACES = re.compile(r"\s+")


def clean_text(value: str, limit: int) -> str:
    """A name or company as shown back: spaces collapsed, control characters dropped, cut to
    `limit` characters."""
    printable = "".join(c for c in value if c.isprintable() or c.isspace())
    return _SPACES.sub(" ", printable).strip()[:limit]
