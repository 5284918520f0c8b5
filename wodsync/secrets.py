"""Resolving `{secret: NAME}` references at run time, never from git.

Secrets come from the process environment first, then from a YAML secrets file kept outside the
repository (`--secrets FILE` or `$WODSYNC_SECRETS`). Validation never needs real values: it uses
a placeholder so CI can validate a catalog without any credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from wodsync.catalog.models import SecretRef, VarValue


class SecretError(Exception):
    """A referenced secret is not available; the message names it and where it was looked for."""


@dataclass
class Secrets:
    """Where secret values come from, in order: environment, then the secrets file."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    values: Mapping[str, str] = field(default_factory=dict)
    source: str = "environment"

    @classmethod
    def load(cls, path: Path | None = None) -> Secrets:
        path = path or (Path(os.environ["WODSYNC_SECRETS"])
                        if os.environ.get("WODSYNC_SECRETS") else None)
        if path is None:
            return cls()
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SecretError(f"{path}: a secrets file is a mapping of NAME: value")
        return cls(values={str(k): str(v) for k, v in data.items()},
                   source=f"environment or {path}")

    def resolve(self, ref: SecretRef) -> str:
        if ref.secret in self.env:
            return self.env[ref.secret]
        if ref.secret in self.values:
            return self.values[ref.secret]
        raise SecretError(f"secret {ref.secret} is not set (looked in the {self.source})")


class Placeholders(Secrets):
    """Stand-in values for validation and previews: no credentials needed."""

    def resolve(self, ref: SecretRef) -> str:
        return f"<secret {ref.secret}>"


def resolve_variables(variables: Mapping[str, VarValue], secrets: Secrets) -> dict[str, object]:
    return {k: secrets.resolve(v) if isinstance(v, SecretRef) else v
            for k, v in variables.items()}


def merge_variables(secrets: Secrets, *layers: Mapping[str, VarValue]) -> dict[str, object]:
    """Variables of several layers (global < host < workshop), later layers winning."""
    merged: dict[str, object] = {}
    for layer in layers:
        merged |= resolve_variables(layer, secrets)
    return merged
