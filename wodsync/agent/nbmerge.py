"""A cell-level three-way merge of notebooks, for live updates (standard library only).

Why not nbdime: the merge runs on the host, beside the student's file, in the same round trip
as the rest of the update, and the agent is shipped as standard-library code to any python3 a
host has; nbdime (with its own dependencies) is not there. The merge is deliberately narrow:
cells are compared by their type and source (a student running a cell changes its outputs, not
what it is); the changes of each side against the base are hunks of cells (difflib), and the
two sides merge only when no upstream hunk touches a local one. Anything else is a conflict:
the caller keeps the student's notebook and puts the upstream one beside it.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Dict, List, Optional, Tuple

Cell = Dict[str, Any]
Hunk = Tuple[int, int, List[Cell]]
"""Base cells [i1, i2) replaced by these cells."""


def parse(data: bytes) -> Optional[Dict[str, Any]]:
    """A notebook (nbformat 4) as JSON, or None when it is not one."""
    try:
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) \
            or not all(isinstance(c, dict) for c in nb["cells"]):
        return None
    return nb


def _key(cell: Cell) -> str:
    source = cell.get("source", "")
    text = "".join(source) if isinstance(source, list) else str(source)
    return json.dumps([cell.get("cell_type"), text])


def _hunks(base: List[Cell], other: List[Cell]) -> Tuple[List[Hunk], Dict[int, int]]:
    """The other side's changes against the base, and base index → other index of the cells
    both have unchanged."""
    matcher = difflib.SequenceMatcher(None, [_key(c) for c in base], [_key(c) for c in other],
                                      autojunk=False)
    hunks: List[Hunk] = []
    same: Dict[int, int] = {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            same.update({i1 + k: j1 + k for k in range(i2 - i1)})
        else:
            hunks.append((i1, i2, other[j1:j2]))
    return hunks, same


def _touch(a: Hunk, b: Hunk) -> bool:
    """Two hunks change a cell in common, or insert at the same place (whose goes first?).
    Changes to neighbouring cells merge."""
    if a[0] == a[1] and b[0] == b[1]:
        return a[0] == b[0]
    return a[0] < b[1] and b[0] < a[1]


def _same_change(a: Hunk, b: Hunk) -> bool:
    """Both sides made the very same change (the student typed in the fix)."""
    return a[:2] == b[:2] and [_key(c) for c in a[2]] == [_key(c) for c in b[2]]


def merge(base: Dict[str, Any], local: Dict[str, Any],
          upstream: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The student's notebook with the upstream changes of cells the student left alone, or
    None on a conflict. Unchanged cells are the student's own (their outputs, ids, metadata);
    the notebook's metadata is the student's."""
    b_cells, l_cells, u_cells = base["cells"], local["cells"], upstream["cells"]
    local_hunks, same = _hunks(b_cells, l_cells)
    up_hunks, _ = _hunks(b_cells, u_cells)
    for up in up_hunks:
        for mine in local_hunks:
            if _touch(up, mine) and not _same_change(up, mine):
                return None
    kept = [h for h in local_hunks if not any(_touch(h, u) for u in up_hunks)]
    hunks = sorted(kept + up_hunks, key=lambda h: (h[0], h[1]))
    cells: List[Cell] = []
    i = 0
    for i1, i2, replacement in hunks:
        cells += [l_cells[same[k]] for k in range(i, i1)]
        cells += replacement
        i = max(i, i2)
    cells += [l_cells[same[k]] for k in range(i, len(b_cells))]
    return {**local, "cells": cells}


def dump(nb: Dict[str, Any]) -> bytes:
    """As Jupyter writes a notebook: one-space indents, unicode as is, a final newline."""
    return (json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()
