"""The plan's vocabulary: typed resource addresses, actions and changes.

A resource is addressed by its kind and its name (`account:student7`, `file:/etc/motd`), as
Terraform addresses resources; an action is one of create, update, delete — or no-op, which a
verbose plan prints with its reason, as pyinfra's `noop` does. A change carries the data its
kind needs to apply it, as a small frozen dataclass of that kind: never a secret (file contents
travel as digests; passwords and tokens never appear), so a plan can be printed, saved and
reviewed as it is.

Standard library only: the resource kinds import this module on the host too.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"

    @property
    def symbol(self) -> str:
        return {"create": "+", "update": "~", "delete": "-"}[self.value]


@dataclass(frozen=True, order=True)
class Address:
    """A resource: its kind (the module that owns it) and its name within the host."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Address:
        kind, sep, name = text.partition(":")
        if not sep or not kind:
            raise ValueError(f"not a resource address: {text!r}")
        return cls(kind, name)


@dataclass(frozen=True)
class Change:
    """One action on one resource; `data` is the kind's own record of what to do."""

    action: Action
    address: Address
    detail: str = ""
    data: Any = field(default=None, compare=True, repr=False)

    def line(self) -> str:
        suffix = f"  ({self.detail})" if self.detail else ""
        return f"  {self.action.symbol} {self.address}{suffix}"

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action.value, "address": str(self.address),
                "detail": self.detail, "data": data_to_json(self.data)}


@dataclass(frozen=True)
class Noop:
    """A resource already as desired, and why (printed by `plan --verbose`)."""

    address: Address
    reason: str

    def line(self) -> str:
        return f"  = {self.address} {self.reason}"


def data_to_json(data: Any) -> Any:
    """A change's data as JSON values (dataclasses become mappings, tuples lists)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return {f.name: data_to_json(getattr(data, f.name)) for f in dataclasses.fields(data)}
    if isinstance(data, (list, tuple)):
        return [data_to_json(v) for v in data]
    if isinstance(data, dict):
        return {str(k): data_to_json(v) for k, v in data.items()}
    return data


def data_from_json(cls: type | None, value: Any) -> Any:
    """The inverse of `data_to_json` for a kind's flat data class (lists stay lists)."""
    if cls is None or value is None:
        return value
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**value)
