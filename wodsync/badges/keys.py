"""The badges' signing key: an RSA private key in the secrets file, `WODSYNC_BADGES_KEY`,
granted to the controller's `badges` service (`services: [badges]`).

Why RSA (RS256): it is the one algorithm Open Badges 2.0 requires every verifier to support.
Why a service grant: the key is the secrets file's like the mail's SMTP password, read only by
the part granted it and never rendered anywhere; its public half is published at
`/badges/key`. Its value never reaches a message: a broken key is named, not shown.
"""

from __future__ import annotations

from joserfc.jwk import RSAKey

from wodsync.secrets import SecretError, Secrets

KEY_SECRET = "WODSYNC_BADGES_KEY"
SERVICE = "badges"
KEY_BITS = 3072


class BadgesNotConfigured(Exception):
    """Assertions cannot be signed: no key, or not a usable one (the message says which)."""


def new_key_pem(bits: int = KEY_BITS) -> str:
    """A new RSA private key, PKCS#8 PEM, for the secrets file (`wodsync badges key new`)."""
    pem = RSAKey.generate_key(bits, private=True).as_pem(private=True)
    return pem.decode()


def signing_key(secrets: Secrets) -> RSAKey:
    """The private key the assertions are signed with."""
    try:
        value = secrets.value(KEY_SECRET, "service", SERVICE)
    except SecretError as exc:  # names the secret and the grant, never a value
        raise BadgesNotConfigured(
            f"no badge signing key: {exc}; put the key in the secrets file as {KEY_SECRET} "
            f"with `services: [{SERVICE}]` (`wodsync badges key new FILE` writes one)") from None
    try:
        key = RSAKey.import_key(value)
    except Exception:  # the library's many parse errors: none may quote the value
        raise BadgesNotConfigured(f"{KEY_SECRET} is not an RSA private key in PEM") from None
    if not key.is_private:
        raise BadgesNotConfigured(f"{KEY_SECRET} is a public key: the private one is needed")
    return key


def public_pem(key: RSAKey) -> str:
    return key.as_pem(private=False).decode()
