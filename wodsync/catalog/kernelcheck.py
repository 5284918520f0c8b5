"""Which kernel each notebook asks for, and whether the hosts that serve it will have it.

A notebook names its kernel in `metadata.kernelspec.name`; a student opening it on a hub
without that kernelspec gets "no kernel" and a dead notebook. `validate` warns at the
notebook's kernelspec line when no host serving the workshop will provide it: python3 (every
hub's), or a kernel (a recipe or the catalog's own) of a workshop served there — the kernel
kind installs each workshop's kernels on every host of its locations, so one environment
shares them. Notebooks are read as they are in the repository: many of WoD's are not JSON
until rendered, so the kernelspec is then found by its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from wodsync.catalog.loader import WORKSHOPS_DIR, Catalog
from wodsync.catalog.models import Host, resolve_kernel
from wodsync.catalog.recipes import BY_KERNEL, DEFAULT_KERNELS
from wodsync.catalog.repofs import RepoFileError, read_repo_file
from wodsync.diagnostics import Diagnostic

CODE = "notebook-kernel"
MAX_NOTEBOOK_BYTES = 32 << 20
SPEC_RE = re.compile(r'"kernelspec"\s*:\s*\{[^{}]*?"name"\s*:\s*"(?P<name>[^"\\]+)"')


def kernelspec(text: str) -> tuple[str, int, int] | None:
    """(kernelspec name, line, column of the name) of a notebook's text, None without one."""
    name = None
    try:
        data = json.loads(text)
        spec = data.get("metadata", {}).get("kernelspec", {}) if isinstance(data, dict) else {}
        name = spec.get("name") if isinstance(spec, dict) else None
    except ValueError:
        pass
    for m in SPEC_RE.finditer(text):
        if name is None or m["name"] == name:
            start = m.start("name")
            line = text.count("\n", 0, start) + 1
            return m["name"], line, start - (text.rfind("\n", 0, start) + 1) + 1
    return (name, 1, 1) if isinstance(name, str) else None


def _served(catalog: Catalog, host: Host) -> set[str]:
    """Kernelspec names a host will have: python3 and every kernel of the workshops it serves."""
    names = set(DEFAULT_KERNELS)
    for ws in catalog.workshops.values():
        if host.location in (ws.location, *ws.alternate_locations):
            names.update(resolve_kernel(k).name for k in ws.kernels)
    return names


def providers(catalog: Catalog, key: str) -> dict[str, set[str]]:
    """Each hub host serving workshop `key` → the kernels it will have ({"": …} without one:
    what the workshop itself declares)."""
    ws = catalog.workshops[key]
    hosts = {name: host for loc in dict.fromkeys([ws.location, *ws.alternate_locations])
             for name, host in catalog.hosts_in(loc).items() if host.hub is not None}
    if not hosts:
        return {"": set(DEFAULT_KERNELS) | {resolve_kernel(k).name for k in ws.kernels}}
    return {name: _served(catalog, host) for name, host in sorted(hosts.items())}


def _advice(name: str) -> str:
    recipe = BY_KERNEL.get(name)
    return f"add `{recipe.name}` (a kernel recipe) to the workshop's kernels" if recipe else \
        "declare a kernel that installs it in the workshop's kernels"


def check_notebook_kernels(catalog: Catalog) -> Iterator[Diagnostic]:
    """A warning at each notebook whose kernel no host serving its workshop provides."""
    if not catalog.complete("host"):
        return
    for key in sorted(catalog.workshops):
        have = providers(catalog, key)
        for rel in catalog.folders[key].files:
            if not rel.endswith(".ipynb"):
                continue
            path = f"{WORKSHOPS_DIR}/{key}/{rel}"
            try:
                raw = read_repo_file(catalog.root, path, max_bytes=MAX_NOTEBOOK_BYTES)
            except RepoFileError:
                continue  # the template checks report an unreadable notebook
            found = kernelspec(raw.decode("utf-8", errors="replace"))
            if found is None:
                continue
            name, line, col = found
            lacking = [h for h, names in have.items() if name not in names]
            if not lacking:
                continue
            where = "the workshop declares" if lacking == [""] else \
                f"host{'s' if len(lacking) > 1 else ''} {', '.join(repr(h) for h in lacking)}" \
                " will have"
            yield Diagnostic(path, line, col, CODE, f"notebook kernel '{name}' is not among "
                             f"the kernels {where}: {_advice(name)}", "warning")
