"""`catalog/mail.yaml`: where and how wodsync sends its mails. Its presence turns mail on.

Why in the catalog: who a workshop's participants hear from (From, Reply-To), where the links
point (the portal) and who gets the operators' notices are the catalog's, reviewed in a pull
request like the rest; the SMTP password is not: it is a `{secret: NAME}` granted to the
`mail` service in the secrets file. The daemon's `--smtp HOST:PORT` overrides the server (a
local relay, the demo's sink) without a commit.

    smtp: {host: mail.example.org, port: 587, security: starttls, user: wod,
           password: {secret: SMTP_PASSWORD}}
    from: "Workshops-on-Demand <wod@example.org>"
    reply_to: support@example.org
    operators: [ops@example.org]
    portal_url: https://wod.example.org
    feedback_url: https://wod.example.org/feedback
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from wodsync.catalog.models import URL_RE, SecretRef, Strict

MAIL_FILE = "catalog/mail.yaml"
HOSTNAME_RE = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[?[0-9a-fA-F:.]+\]?$"
DOMAIN_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                       r"[A-Za-z0-9])?)*$")


def _address(value: str) -> str:
    """One address, bare or with a display name (`Name <a@b.c>`); never a list or a header
    with a line break in it (header injection)."""
    if any(c in value for c in "\r\n") or "," in parseaddr(value)[1]:
        raise ValueError(f"{value!r} must be one e-mail address on one line")
    address = parseaddr(value)[1]
    local, _, domain = address.rpartition("@")
    if not local or not DOMAIN_RE.match(domain):
        raise ValueError(f"{value!r} is not an e-mail address (name@domain, or "
                         "Name <name@domain>)")
    return value


Address = Annotated[str, StringConstraints(max_length=400), AfterValidator(_address)]
Url = Annotated[str, StringConstraints(pattern=URL_RE, max_length=2048)]


class Smtp(Strict):
    """The SMTP server mails are handed to."""

    host: Annotated[str, StringConstraints(pattern=HOSTNAME_RE, max_length=255)] = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    security: Literal["none", "starttls", "tls"] = Field(
        "none", description="none: plain SMTP; starttls: upgrade after connecting (587); "
                            "tls: TLS from the start (465).")
    user: Annotated[str, StringConstraints(min_length=1, max_length=320)] | None = None
    password: SecretRef | None = Field(
        None, description="A secret of the secrets file granted to `services: [mail]`.")
    timeout: Annotated[float, Field(gt=0, le=300)] = 30.0


class Sending(Strict):
    """How the outbox is worked through: retries with back-off, then `failed`."""

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    backoff_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_backoff_seconds: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = 120.0
    batch: Annotated[int, Field(ge=1, le=500)] = 20


class MailSettings(Strict):
    """`catalog/mail.yaml`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    smtp: Smtp = Smtp()
    from_: Address = Field(alias="from", description="The From of every mail.")
    reply_to: Address | None = None
    operators: list[Address] = Field(
        [], description="Who gets the failed-CREATE and abuse notices.")
    portal_url: Url | None = Field(None, description="Base of the links in the mails.")
    feedback_url: Url | None = None
    domain: Annotated[str, StringConstraints(pattern=DOMAIN_RE.pattern, max_length=253)] | \
        None = Field(None, description="Right side of the Message-IDs (default: the From's "
                                       "domain).")
    sending: Sending = Sending()

    @property
    def message_domain(self) -> str:
        return self.domain or parseaddr(self.from_)[1].rpartition("@")[2]

    @property
    def base_url(self) -> str | None:
        return self.portal_url.rstrip("/") if self.portal_url else None

    def with_server(self, host: str, port: int) -> MailSettings:
        """The same settings with another SMTP server (the daemon's `--smtp`)."""
        return self.model_copy(update={"smtp": self.smtp.model_copy(
            update={"host": host, "port": port})})
