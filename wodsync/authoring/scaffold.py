"""`wodsync new workshop`: a new workshop folder that validates from the first commit.

The scaffold picks a free seat range (inside the pool of every host of the location and clear
of every other workshop there), writes a small notebook using the per-seat variables, and checks
the result with the same validation CI runs; a scaffold that would not validate is removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from wodsync.catalog import validate
from wodsync.catalog.loader import WORKSHOP_FILE, WORKSHOPS_DIR, Catalog
from wodsync.catalog.models import SeatRange
from wodsync.catalog.schema import modeline
from wodsync.catalog.yamlfile import dump_yaml
from wodsync.diagnostics import Diagnostic


class ScaffoldError(Exception):
    """The workshop cannot be scaffolded; the message says why."""


def free_seats(catalog: Catalog, location: str, size: int) -> SeatRange:
    """The lowest `size` seats free in `location` and inside the pools of all its hosts."""
    pools = [catalog.pools[h.pool] for h in catalog.hosts_in(location).values()
             if h.pool in catalog.pools] or list(catalog.pools.values())
    if not pools:
        raise ScaffoldError("no student pool is defined in catalog/students.yaml")
    low, high = max(p.first for p in pools), min(p.last for p in pools)
    taken = sorted((ws.seats for ws in catalog.workshops.values() if ws.location == location),
                   key=lambda r: r.first)
    first = low
    for used in taken:
        if used.first - first >= size:
            break
        first = max(first, used.last + 1)
    if first + size - 1 > high:
        raise ScaffoldError(f"no {size} free seats left in location '{location}'")
    return SeatRange(first=first, last=first + size - 1)


def _notebook(title: str) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [
            f"# {title}\n", "\n",
            "Welcome, {{ STUDENT }}! You are seat {{ STDID }} of this workshop.\n"]},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": ["print('Hello from seat {{ STDID }}')"]},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3",
                                                      "display_name": "Python 3",
                                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1) + "\n"


def new_workshop(root: Path, key: str, location: str | None, size: int,
                 title: str | None) -> tuple[Path, list[Diagnostic]]:
    """Create `catalog/workshops/<key>/`; on validation errors in it, remove it and report."""
    catalog, before = validate(root)
    folder = root / WORKSHOPS_DIR / key
    if folder.exists():
        raise ScaffoldError(f"{folder.relative_to(root)} already exists")
    if location is None:
        if not catalog.locations:
            raise ScaffoldError("no location is defined in catalog/locations.yaml")
        location = sorted(catalog.locations)[0]
    elif location not in catalog.locations:
        raise ScaffoldError(f"unknown location '{location}'")
    seats = free_seats(catalog, location, size)
    name = title or key.removeprefix("WKSHP-").replace("-", " ")
    workshop = {"name": name, "description": f"Hands-on workshop: {name}.", "active": False,
                "capacity": size, "priority": 1,
                "seats": {"first": seats.first, "last": seats.last},
                "location": location, "duration": 2, "category": ["Open Source"],
                "kernels": ["python3"]}
    folder.mkdir(parents=True)
    path = folder / WORKSHOP_FILE
    path.write_text(dump_yaml(workshop, modeline(root, path, "workshop")), encoding="utf-8")
    (folder / "0-ReadMeFirst.ipynb").write_text(_notebook(name), encoding="utf-8")
    _, after = validate(root)
    prefix = f"{WORKSHOPS_DIR}/{key}/"
    new = [d for d in after if d.path.startswith(prefix) and d not in before and d.is_error]
    if new:
        shutil.rmtree(folder)
    return folder, new
