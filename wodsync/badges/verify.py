"""A third party's check of a signed Open Badges 2.0 assertion, as anyone may run it.

Why here: "anyone can verify" is only true if the steps are written down and run; this is them,
trusting nothing of the assertion until its signature holds: the key is fetched from the URL
the assertion names (`verification.creator`), its owner must be the badge class's issuer, the
issuer must name that key as its `publicKey`, and the JWS must verify (RS256) with it. The
recipient is then compared, if an address is given, with the salted hash. `wodsync badges
verify` runs it; nothing of the controller's store or keys is used.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from wodsync.badges.identity import hashed_identity
from wodsync.badges.openbadges import verify as verify_signature

MAX_DOCUMENT = 1024 * 1024
TIMEOUT_S = 15.0

Fetch = Callable[[str], dict[str, Any]]


class NotVerified(Exception):
    """The assertion cannot be trusted: the message says which step failed."""


@dataclass(frozen=True)
class Verified:
    assertion: dict[str, Any]
    badge_class: dict[str, Any]
    issuer: dict[str, Any]
    recipient_matches: bool | None   # None: no address was given to compare


def fetch_bytes(url: str, accept: str = "application/json") -> bytes:
    """A document over http(s), at most 1 MiB."""
    if not url.startswith(("https://", "http://")):
        raise NotVerified(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            body: bytes = answer.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise NotVerified(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_DOCUMENT:
        raise NotVerified(f"{url} is larger than {MAX_DOCUMENT} bytes")
    return body


def fetch_json(url: str) -> dict[str, Any]:
    """A JSON object over http(s)."""
    try:
        found = json.loads(fetch_bytes(url))
    except ValueError:
        raise NotVerified(f"{url} is not JSON") from None
    if not isinstance(found, dict):
        raise NotVerified(f"{url} is not a JSON object")
    return found


def verify_assertion(signed: str, fetch: Fetch = fetch_json,
                     email: str | None = None) -> Verified:
    """Check `signed` (a compact JWS) as Open Badges 2.0 says; raise `NotVerified`."""
    claimed = _claimed(signed.strip())
    creator = _get(claimed, "verification", "creator")
    key = fetch(creator)
    if key.get("type") != "CryptographicKey" or key.get("id") != creator:
        raise NotVerified(f"{creator} is not the CryptographicKey the assertion names")
    badge_class = fetch(_get(claimed, "badge")) if isinstance(claimed.get("badge"), str) \
        else claimed.get("badge") or {}
    issuer_url = badge_class.get("issuer")
    if key.get("owner") != issuer_url:
        raise NotVerified(f"the key belongs to {key.get('owner')}, not to the badge's issuer "
                          f"{issuer_url}")
    issuer = fetch(str(issuer_url))
    keys = issuer.get("publicKey")
    if creator not in (keys if isinstance(keys, list) else [keys]):
        raise NotVerified(f"the issuer {issuer_url} does not publish the key {creator}")
    try:
        assertion = verify_signature(signed.strip(), str(key.get("publicKeyPem", "")))
    except (JoseError, ValueError) as exc:
        raise NotVerified(f"the signature does not hold: {exc}") from None
    return Verified(assertion, badge_class, issuer, _recipient(assertion, email))


def _claimed(signed: str) -> dict[str, Any]:
    """The payload as it claims to be, read only to find the key (not trusted yet)."""
    try:
        found = json.loads(jws.extract_compact(signed.encode()).payload)
    except (JoseError, ValueError) as exc:
        raise NotVerified(f"not a compact JWS of a JSON assertion: {exc}") from None
    if not isinstance(found, dict) or found.get("type") != "Assertion":
        raise NotVerified("the JWS does not carry an Open Badges assertion")
    return found


def _get(document: dict[str, Any], *path: str) -> str:
    value: Any = document
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise NotVerified(f"the assertion has no {'.'.join(path)}")
    return value


def _recipient(assertion: dict[str, Any], email: str | None) -> bool | None:
    if email is None:
        return None
    recipient = assertion.get("recipient") or {}
    if not recipient.get("hashed"):
        return bool(recipient.get("identity") == email.strip())
    return bool(recipient.get("identity") == hashed_identity(email,
                                                             str(recipient.get("salt", ""))))
