"""Completion counted on the host: executed code cells and code cells, per notebook.

A student owns their notebooks and may leave anything in them: `{"cells": 5}`, a notebook
nested ten thousand levels deep, eight megabytes of empty cells. Reading them must never stop a
release (the seat would stay with its password and processes) nor cost the controller memory,
so the host reads each notebook with bounds — its size, how many notebooks, how many bytes in
all — without following a link, parses it keeping only two values per cell, and sends back two
integers per notebook, or why it could not be counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Union

from wodsync.agent import safefs

NOTEBOOK_BYTES = 8 << 20      # a notebook larger than this is not counted
TOTAL_BYTES = 64 << 20        # all notebooks of one seat
MOST_NOTEBOOKS = 200

_CELL = "cell_type"

Counted = Union[list[int], dict[str, str]]
"""A notebook's [executed, code] cells, or {"error": why it was not counted}."""


def _reduce(pairs: list[tuple[str, Any]]) -> Any:
    """JSON objects as they are parsed: a cell becomes (type, executed), a notebook keeps only
    its cells, anything else is dropped at once — memory stays proportional to the cells."""
    keys = dict(pairs)
    if _CELL in keys:
        count = keys.get("execution_count")
        return (keys[_CELL], isinstance(count, int) and not isinstance(count, bool))
    if "cells" in keys:
        return {"cells": keys["cells"]}
    return None


def count(raw: bytes) -> tuple[int, int]:
    """(executed, code) of one notebook's bytes; ValueError when it is not a notebook."""
    try:
        top = json.loads(raw, object_pairs_hook=_reduce)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    cells = top.get("cells") if isinstance(top, dict) else None
    if not isinstance(cells, list):
        raise ValueError("no list of cells")
    code = executed = 0
    for cell in cells:
        if isinstance(cell, tuple) and cell[0] == "code":
            code += 1
            executed += cell[1]
    return executed, code


def count_home(home_fd: int, folder: str, notebooks: Sequence[str]) -> dict[str, Counted]:
    """rel → [executed, code] or {"error": why}, for the workshop's notebooks in the home."""
    found: dict[str, Counted] = {}
    total = 0
    for rel in notebooks[:MOST_NOTEBOOKS]:
        try:
            raw = safefs.read_file(home_fd, f"{folder}/{rel}", NOTEBOOK_BYTES)
            if raw is None:
                continue  # gone, or not a plain file: nothing to count
            if len(raw) > NOTEBOOK_BYTES or total + len(raw) > TOTAL_BYTES:
                found[rel] = {"error": "too large to count"}
                continue
            total += len(raw)
            found[rel] = list(count(raw))
        except Exception as exc:  # a student's file never stops a release
            found[rel] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return found
