"""Completion of a session: executed code cells over code cells of the workshop's notebooks.

The host reads the notebooks in the seat's home (without following links) and sends them cut
down to what this needs — cell types and execution counts; they are read here with nbformat,
which validates their shape, so a notebook a student broke counts as not done rather than
crashing a CLEANUP.
"""

from __future__ import annotations

from typing import Any

import nbformat


def _notebook(reduced: dict[str, Any]) -> Any:
    cells = []
    for c in reduced.get("cells", []):
        if c.get("cell_type") == "code":
            cells.append(nbformat.v4.new_code_cell(execution_count=c.get("execution_count")))
        elif c.get("cell_type") in ("markdown", "raw"):
            cells.append(nbformat.v4.new_markdown_cell())
    nb = nbformat.v4.new_notebook(cells=cells)
    nbformat.validate(nb)
    return nb


def completion(notebooks: dict[str, dict[str, Any]]) -> float | None:
    """Percent of code cells executed, over every notebook read; None when there is none."""
    total = executed = 0
    for reduced in notebooks.values():
        try:
            nb = _notebook(reduced)
        except (nbformat.ValidationError, TypeError, ValueError):
            continue
        for cell in nb.cells:
            if cell.cell_type == "code":
                total += 1
                executed += isinstance(cell.execution_count, int)
    return round(100.0 * executed / total, 1) if total else None
