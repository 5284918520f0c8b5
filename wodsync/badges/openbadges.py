"""Open Badges 2.0 documents of an awarded badge, and its signed assertion (a JWS, RS256).

Why 2.0 signed: an assertion a participant can keep and share as one string, checked by anyone
with the issuer's public key — no call to us needed to trust it once the key is known — and the
version every badge backpack and verifier reads. The documents (IMS Global, Open Badges 2.0):

- the **assertion** (`/badges/{id}/assertion.json`; signed: `/badges/{id}/assertion`): the
  recipient hashed (`sha256$…` of the e-mail and a salt per badge), the badge class, the award
  time, the public page as evidence, and `verification: {type: SignedBadge, creator: <key>}`;
- the **badge class** (`/badges/class/{kind}/{badge}`): name, description, image, criteria,
  issuer;
- the **issuer profile** (`/badges/issuer`): name, URL, e-mail and its `publicKey`;
- the **cryptographic key** (`/badges/key`): `owner` the issuer, `publicKeyPem`.

A verifier decodes the JWS, fetches `verification.creator`, checks that its owner is the
assertion's issuer and that the issuer lists it as `publicKey`, then checks the signature with
`publicKeyPem` — and compares the recipient's hash with the address it was given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.jwk import RSAKey

from wodsync.badges.identity import hashed_identity
from wodsync.badges.specials import BY_KEY
from wodsync.store.badges import Badge

CONTEXT = "https://w3id.org/openbadges/v2"
ALGORITHM = "RS256"
DEFAULT_ISSUER = "Workshops-on-Demand"


@dataclass(frozen=True)
class Issuer:
    name: str = DEFAULT_ISSUER
    url: str = ""        # its home page ("" : the public base URL)
    email: str | None = None


@dataclass(frozen=True)
class Urls:
    """Where each document is public, under the controller's public base URL."""

    base: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", self.base.rstrip("/"))

    @property
    def issuer(self) -> str:
        return f"{self.base}/badges/issuer"

    @property
    def key(self) -> str:
        return f"{self.base}/badges/key"

    def page(self, badge_id: str) -> str:
        return f"{self.base}/badges/{badge_id}"

    def assertion(self, badge_id: str) -> str:
        return f"{self.base}/badges/{badge_id}/assertion"

    def badge_class(self, kind: str, badge: str) -> str:
        return f"{self.base}/badges/class/{kind}/{badge}"

    def image(self, kind: str, badge: str, ref: str) -> str:
        """The badge's image: a URL as given; a path, as WoD's portal resolves `badgeImg`
        (`/x` under the base, `x` under `/img/badges/`); none: the drawn one."""
        if ref.startswith(("http://", "https://")):
            return ref
        if ref.startswith("/"):
            return self.base + ref
        if ref:
            return f"{self.base}/img/badges/{ref}"
        return f"{self.badge_class(kind, badge)}/image.svg"


def description(badge: Badge) -> str:
    if badge.kind == "special":
        return (f"Awarded for completing {BY_KEY[badge.badge].completed} different "
                "Workshops-on-Demand." if badge.badge in BY_KEY else badge.title)
    return f"Awarded for the Workshops-on-Demand workshop {badge.title} ({badge.badge})."


def badge_class(badge: Badge, urls: Urls) -> dict[str, Any]:
    return {"@context": CONTEXT, "type": "BadgeClass",
            "id": urls.badge_class(badge.kind, badge.badge), "name": badge.title,
            "description": description(badge),
            "image": urls.image(badge.kind, badge.badge, badge.image),
            "criteria": {"narrative": badge.criteria}, "issuer": urls.issuer}


def issuer_profile(issuer: Issuer, urls: Urls) -> dict[str, Any]:
    profile = {"@context": CONTEXT, "type": "Issuer", "id": urls.issuer, "name": issuer.name,
               "url": issuer.url or urls.base + "/", "publicKey": urls.key}
    if issuer.email:
        profile["email"] = issuer.email
    return profile


def cryptographic_key(public_pem: str, urls: Urls) -> dict[str, Any]:
    return {"@context": CONTEXT, "type": "CryptographicKey", "id": urls.key,
            "owner": urls.issuer, "publicKeyPem": public_pem}


def assertion(badge: Badge, urls: Urls) -> dict[str, Any]:
    """The assertion: the recipient only as a salted hash of their e-mail."""
    assert badge.awarded_at is not None
    return {"@context": CONTEXT, "type": "Assertion", "id": f"urn:uuid:{_uuid(badge.id)}",
            "recipient": {"type": "email", "hashed": True, "salt": badge.salt,
                          "identity": hashed_identity(badge.email, badge.salt)},
            "badge": urls.badge_class(badge.kind, badge.badge),
            "issuedOn": badge.awarded_at.isoformat(timespec="seconds"),
            "evidence": {"id": urls.page(badge.id),
                         "narrative": evidence(badge)},
            "verification": {"type": "SignedBadge", "creator": urls.key}}


def evidence(badge: Badge) -> str:
    done = "" if badge.completion is None else f", {badge.completion:g} % completed"
    return f"Session {badge.session_id} of {badge.workshop}{done}."


def sign(document: dict[str, Any], key: RSAKey) -> str:
    """The JWS compact serialization of `document`, signed RS256."""
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return jws.serialize_compact({"alg": ALGORITHM}, payload, key, algorithms=[ALGORITHM])


def verify(signed: str, public_pem: str) -> dict[str, Any]:
    """The assertion inside `signed` if `public_pem`'s key signed it (RS256 only); raises
    `joserfc.errors.BadSignatureError` (or a decoding error) otherwise."""
    key = RSAKey.import_key(public_pem)
    found = jws.deserialize_compact(signed, key, algorithms=[ALGORITHM])
    document: dict[str, Any] = json.loads(found.payload)
    return document


def _uuid(hex32: str) -> str:
    h = hex32.lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
