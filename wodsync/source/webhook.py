"""GitHub webhooks: is this request really from GitHub, and does it say the branch moved?

A webhook makes the daemon fetch at once instead of at its next interval. Anyone can POST to
the endpoint, so nothing is fetched until the body's HMAC-SHA256 (`X-Hub-Signature-256`, keyed
with `WODSYNC_WEBHOOK_SECRET`) matches, compared in constant time. The functions here are pure
(bytes in, values out) so the API layer only wires them to HTTP: it enforces `MAX_BODY_BYTES`
before reading, answers 401 when `verify_signature` is False, 200 to a `ping`, and triggers a
fetch for a `push` to the followed branch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

MAX_BODY_BYTES = 1 << 20  # GitHub caps payloads at 25 MB; a push to a catalog is far smaller
SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
SIGNATURE_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
ZERO_SHA = re.compile(r"0{40}(?:0{24})?")

Kind = Literal["ping", "push", "other"]


class WebhookError(ValueError):
    """A signed request whose body is not a webhook payload we can read (an HTTP 400)."""


@dataclass(frozen=True)
class WebhookEvent:
    """What a delivery says: `kind`; for a push, the `ref` and the new head `after` (None when
    the branch was deleted)."""

    kind: Kind
    ref: str | None = None
    after: str | None = None
    name: str = ""
    repository: str | None = None

    @property
    def branch(self) -> str | None:
        """`main` for `refs/heads/main`; None for a tag or no ref."""
        if self.ref and self.ref.startswith("refs/heads/"):
            return self.ref[len("refs/heads/"):]
        return None

    def moves(self, branch: str) -> bool:
        """True when this is a push to `branch` (so the daemon should fetch now)."""
        return self.kind == "push" and self.branch == branch


def signature(secret: bytes, body: bytes) -> str:
    """The header value GitHub sends for `body`: `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True only for a well-formed `sha256=<hex>` header matching the body's HMAC-SHA256.

    An empty secret verifies nothing: a daemon without a webhook secret accepts no webhook.
    """
    if not secret or not header:
        return False
    match = SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def _payload(body: bytes) -> Any:
    """The JSON payload, sent as `application/json` or form-encoded as `payload=<json>`."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(f"webhook body of {len(body)} bytes is over the limit of "
                           f"{MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
        if text.startswith("payload="):
            text = parse_qs(text, strict_parsing=True)["payload"][0]
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise WebhookError(f"webhook body is not a JSON payload: {exc}") from None


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def parse_event(event_name: str | None, body: bytes) -> WebhookEvent:
    """Read a (verified) delivery. A push must carry `ref` and `after`; anything else is
    `other`, ignored by the daemon. Raises `WebhookError` for an unreadable push or ping."""
    name = (event_name or "").strip().lower()
    if name not in ("ping", "push"):
        return WebhookEvent("other", name=name)
    data = _payload(body)
    if not isinstance(data, dict):
        raise WebhookError("webhook payload is not a JSON object")
    repo = data.get("repository")
    repository = _text(repo, "full_name") if isinstance(repo, dict) else None
    if name == "ping":
        return WebhookEvent("ping", name=name, repository=repository)
    ref, after = _text(data, "ref"), _text(data, "after")
    if not ref or after is None:
        raise WebhookError("push payload without 'ref' and 'after'")
    if data.get("deleted") is True or ZERO_SHA.fullmatch(after):
        after = None
    elif not re.fullmatch(r"[0-9a-f]{40}(?:[0-9a-f]{24})?", after):
        raise WebhookError(f"push payload: 'after' is not a commit id: {after[:80]!r}")
    return WebhookEvent("push", ref=ref, after=after, name=name, repository=repository)
