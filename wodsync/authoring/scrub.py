"""Free text and documents made safe to publish: secrets, credentials and session ids out.

Facts, statuses and messages the daemon publishes carry text a hub or a command printed; it may
hold a token in a URL or a password in a `name=value` pair. `scrub` removes what it can
recognise, `find_leaks` is the final guard against known secret values, and `pseudonym` keeps
a session id (half of a capability) out while keeping records of one session matched.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from wodsync.secrets import Secrets

TEXT_LIMIT = 500
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

SCRUBS = (
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@"), r"\1***@"),
    # an Authorization header's value
    (re.compile(r"(?i)\b(token|bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1\2***"),
    # name=value where the name says secret
    (re.compile(r"(?i)\b([\w-]*(?:token|secret|passw(?:or)?d|pwd|api[_-]?key|auth)[\w-]*)"
                r"(\s*[=:]\s*)([\"']?)[^\s\"'&,;]+"), r"\1\2\3***"),
    # a long opaque string of letters and digits (a token, a key)
    (re.compile(r"(?<![A-Za-z0-9_+=-])(?=[A-Za-z0-9_+=-]*[0-9])(?=[A-Za-z0-9_+=-]*[A-Za-z])"
                r"[A-Za-z0-9_+=-]{32,}"), "***"),
)


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """Free text made safe to publish: known secret values, credentials in URLs, tokens after
    `token`/`bearer`, `password=…`-like pairs and long opaque strings become `***`; control
    characters go and the text is cut to `TEXT_LIMIT` characters."""
    for value in sorted((v for v in known if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    for pattern, by in SCRUBS:
        text = pattern.sub(by, text)
    text = CONTROL.sub(" ", text)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"


def pseudonym(session: str) -> str:
    """A session id is a capability's half: published as a stable pseudonym, so the store's
    and the host's records of one session still match."""
    if session in ("", "?") or session.startswith("s-"):
        return session
    return "s-" + hashlib.sha256(session.strip().lower().encode()).hexdigest()[:16]


def find_leaks(document: Any, values: Iterable[str]) -> list[str]:
    """Where in a document a known secret value appears (JSON paths); a final guard."""
    wanted = [v for v in values if v and len(v) >= 4]
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(k, f"{path} key")
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and any(v in node for v in wanted):
            found.append(path)

    walk(document, "$")
    return found


def secret_values(secrets: Secrets | None) -> list[str]:
    """Every value a secrets file and the controller's environment could leak."""
    if secrets is None:
        return []
    values = [e.value for e in secrets.entries.values()]
    env = secrets.env or {}
    values += [v for k, v in env.items() if "TOKEN" in k or "SECRET" in k or "PASSW" in k]
    return [v for v in values if v]

