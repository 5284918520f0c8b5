"""The published shape of facts, declared by each kind beside its `observe` (standard library
only: the host imports it with the kinds).

A kind's facts may be published to pull requests (`authoring.facts`), so each field is given
a class here — a number, a flag, a name, a hex digest, free text or a session id — and the
controller decides from that class what may leave (text is scrubbed, session ids become
pseudonyms, unknown fields are dropped). These classes only declare; checking and scrubbing
are the controller's (`authoring.facts.check`), which the host never runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class Spec:
    """The class of one field of a kind's facts."""


@dataclass(frozen=True)
class Scalar(Spec):
    """`int`, `bool`, `name` (short text: a name or a path), `hex` (a lowercase digest),
    `text` (free text a command or the hub printed) or `session` (a session id)."""

    kind: str


@dataclass(frozen=True)
class Nullable(Spec):
    inner: Spec


@dataclass(frozen=True)
class ListOf(Spec):
    inner: Spec


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping whose keys are names (paths, accounts, packages) and values all alike."""

    inner: Spec


@dataclass(frozen=True)
class Record(Spec):
    """Known fields only: `required` must be there, `optional` may be; others are dropped."""

    required: Mapping[str, Spec]
    optional: Mapping[str, Spec] = field(default_factory=dict)


INT, BOOL, NAME = Scalar("int"), Scalar("bool"), Scalar("name")
DIGEST, TEXT, SESSION = Scalar("hex"), Scalar("text"), Scalar("session")
NAMES = ListOf(NAME)
HUB_API = Record({"ok": BOOL}, {"down": BOOL, "error": TEXT})
"""How a hub API listing went (`hubapi.listing` without its items)."""
