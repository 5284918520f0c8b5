"""JSON Schemas generated from the models, for editors and other tools.

The Pydantic models stay the one definition of the format; `schemas/*.json` are derived files,
committed so an editor (yaml-language-server) can complete and check catalog files through the
modeline each file carries. `schema --check` keeps the committed copies honest in CI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from wodsync.catalog.guard import GuardFile
from wodsync.catalog.models import FILE_MODELS

# The catalog's file types; the guard's models live beside its rules (`catalog.guard`).
MODELS: dict[str, type[BaseModel]] = {**FILE_MODELS, "guard": GuardFile}

SCHEMAS_DIR = "schemas"


def schema_name(file_type: str) -> str:
    return f"{file_type}.schema.json"


def generate() -> dict[str, str]:
    """File name → JSON text of every catalog file type's schema."""
    out = {}
    for file_type, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://wodsync.dev/schemas/{schema_name(file_type)}"
        out[schema_name(file_type)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(root: Path) -> list[str]:
    """Write the schemas; return the files that changed."""
    target = root / SCHEMAS_DIR
    target.mkdir(parents=True, exist_ok=True)
    changed = stale(root)
    for name, text in generate().items():
        if name in changed:
            (target / name).write_text(text, encoding="utf-8")
    return changed


def stale(root: Path) -> list[str]:
    """Schema files that are missing or differ from what the models generate."""
    target = root / SCHEMAS_DIR
    return [name for name, text in generate().items()
            if not (target / name).is_file() or (target / name).read_text("utf-8") != text]


def modeline(root: Path, file: Path, file_type: str) -> str:
    """The yaml-language-server comment pointing `file` at its schema, relative to it."""
    rel = os.path.relpath(root / SCHEMAS_DIR / schema_name(file_type), file.parent)
    return f"# yaml-language-server: $schema={Path(rel).as_posix()}"
