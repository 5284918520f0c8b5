"""What `wodsync import` adds so that an imported catalog can deploy: the kernels its notebooks
ask for, a hosts skeleton, the appliance declarations, the values nobody wrote down, and the
operator's checklist.

WoD's data says which workshops exist, not where they run: the hub hosts, their addresses and
keys, the hub token, the appliances and the values WoD's scripts computed per seat live in
Ansible inventories and private files. Each such gap becomes a placeholder
(`catalog.placeholders`: an error in `validate` until filled) and a line of the checklist, so
nothing is guessed and nothing is forgotten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodsync.catalog.kernelcheck import kernelspec
from wodsync.catalog.placeholders import ADDRESS, placeholder
from wodsync.catalog.recipes import BY_KERNEL, DEFAULT_KERNELS
from wodsync.diagnostics import Diagnostic

# WoD's backend variables that name the hub host: per host here.
HOST_VARIABLES = {"WODBEFQDN": "the hub host's name as students' notebooks show it (WoD: the "
                               "backend FQDN)",
                  "WODBEEXTFQDN": "the hub host's public name, for links students open from "
                                  "outside (WoD: the backend's external FQDN)"}
UNDEFINED_RE = re.compile(r"^'([^']+)' is not defined")
PER_WORKSHOP_RE = re.compile(r"^(.+)-(WKSHP-[A-Za-z0-9_-]+)$")
SECRET_HINT = re.compile(r"(TOK|TOKEN|PWD|PASSWORD|SECRET|KEY)$", re.I)


@dataclass
class Checklist:
    """What the operator must still decide, in the order to do it."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def text(self) -> str:
        return "\n".join(f"[ ] {item}" for item in self.items)


def infer_kernels(folder: Path, label: Path, diagnostics: list[Diagnostic]) -> list[str]:
    """The recipes a workshop's notebooks need, from their kernelspecs (python3 is every
    hub's); a kernelspec no recipe provides is a warning at the notebook."""
    recipes: set[str] = set()
    for path in sorted(folder.rglob("*.ipynb")):
        if path.is_symlink() or not path.is_file():
            continue
        found = kernelspec(path.read_text(encoding="utf-8", errors="replace"))
        if found is None or found[0] in DEFAULT_KERNELS:
            continue
        name, line, col = found
        recipe = BY_KERNEL.get(name)
        if recipe:
            recipes.add(recipe.name)
        else:
            diagnostics.append(Diagnostic(str(label / path.relative_to(folder)), line, col,
                                          "kernel", f"kernel '{name}' has no recipe; declare "
                                          "how to install it in the workshop's kernels",
                                          "warning"))
    return sorted(recipes)


def host_skeleton(location: str, pool: str) -> dict[str, Any]:
    """A hub host of `location` for the operator to complete (`validate` names the gaps)."""
    return {"address": ADDRESS, "location": location, "pool": pool,
            "hub": {"token": {"secret": hub_token_secret(location)}},
            "variables": {name: placeholder(why) for name, why in HOST_VARIABLES.items()}}


def hub_token_secret(location: str) -> str:
    return "HUB_" + re.sub(r"[^A-Za-z0-9]", "_", location).upper() + "_TOKEN"


def appliance_declarations(key: str, mode: str, location: str, pool: str,
                           seats: int) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The workshop's `appliance` for WoD's mono/multiappliance (`none`, `mono`, `multi`) and
    the skeletons of its appliance hosts (`role: appliance`, no hub): one `shared` for mono,
    one per seat for multi (`per_seat`, as WoD's base address + seat offset). Where this
    wodsync has no appliance hosts yet (`catalog.models.Appliance`), WoD's label is kept."""
    from wodsync.catalog import models

    if mode == "none" or not hasattr(models, "Appliance"):
        return mode, {}
    base = f"appliance-{key.removeprefix('WKSHP-')}"[:50]
    names = [base] if mode == "mono" else [f"{base}-{n}" for n in range(1, seats + 1)]
    hosts = {name: {"address": ADDRESS, "role": "appliance", "location": location,
                    "pool": pool} for name in names}
    return {"hosts": names, "mode": "shared" if mode == "mono" else "per_seat"}, hosts


def undefined_names(found: list[Diagnostic]) -> dict[str, set[str]]:
    """Workshop key → the variable names its templates use and nobody defines."""
    names: dict[str, set[str]] = {}
    for d in found:
        m = UNDEFINED_RE.match(d.message) if d.code == "undefined-variable" else None
        parts = d.path.split("/")
        if m and len(parts) > 3 and parts[:2] == ["catalog", "workshops"]:
            names.setdefault(parts[2], set()).add(m[1])
    return names


def per_seat_why(name: str) -> str:
    kind = "a token" if SECRET_HINT.search(name) else "a value"
    return (f"{kind} WoD's create script computed for each seat (an appliance's port, token or "
            "address): declare it in the workshop's seat_values (computed from SEAT_OFFSET, or "
            "written by its create hook) and remove it here, or write its value here")


STRING_LINE_RE = re.compile(r'^(\s*)"(.*)"(,?)\s*$')
BARE_QUOTE_RE = re.compile(r'(?<!\\)"')
KEY_LINE_RE = re.compile(r'^\s*"(?:[^"\\]|\\.)*"\s*:')  # `"key": …`, not a string item


def escape_stray_quotes(text: str) -> tuple[str, list[int]]:
    """A notebook's text with the quotes escaped that break a one-line JSON string (WoD wrote
    `"… the built-in "panic" function …",` in a cell's source), and the 1-based lines
    changed; a line is changed only when that makes it a valid JSON string."""
    lines = text.split("\n")
    changed = []
    for i, line in enumerate(lines):
        m = STRING_LINE_RE.match(line)
        if not m or KEY_LINE_RE.match(line) or not BARE_QUOTE_RE.search(m[2]) \
                or _is_json_string(m[2]):
            continue
        fixed = BARE_QUOTE_RE.sub(r'\\"', m[2])
        if _is_json_string(fixed):
            lines[i] = f'{m[1]}"{fixed}"{m[3]}'
            changed.append(i + 1)
    return "\n".join(lines), changed


def _is_json_string(inner: str) -> bool:
    try:
        return isinstance(json.loads(f'"{inner}"'), str)
    except ValueError:
        return False
