"""The plan's vocabulary: an action on a resource, and a host's list of them.

Kept apart from the diffing code so every resource type's planner (accounts and files in
`plan`, the hub in `plan_hub`, later seats and sessions) builds the same values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Op = Literal["create", "change", "delete"]
SYMBOL = {"create": "+", "change": "~", "delete": "-"}


@dataclass(frozen=True)
class Action:
    op: Op
    resource: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def line(self) -> str:
        suffix = f"  ({self.detail})" if self.detail else ""
        return f"  {SYMBOL[self.op]} {self.resource}{suffix}"


@dataclass
class HostPlan:
    host: str
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: str | None = None

    def count(self, op: Op) -> int:
        return sum(a.op == op for a in self.actions)

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "refused": self.refused, "notes": self.notes,
                "errors": self.errors,
                "actions": [{k: v for k, v in asdict(a).items() if k != "data"}
                            for a in self.actions],
                "summary": {op: self.count(op) for op in SYMBOL}}
