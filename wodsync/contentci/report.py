"""The outcome of `wodsync test` for a person (text), a program (JSON) and a CI job summary
(Markdown, appended next to the plan preview by the pull-request workflow)."""

from __future__ import annotations

from typing import Any

from wodsync.contentci.ci import ContentReport


def as_json(reports: list[ContentReport]) -> dict[str, Any]:
    return {"passed": all(r.passed for r in reports),
            "workshops": [r.as_json() for r in reports]}


def text(report: ContentReport) -> list[str]:
    """One line for the workshop, one per notebook, one per error."""
    verdict = "passed" if report.passed else "FAILED"
    lines = [f"{report.workshop} on {report.host} (seat {report.user or '-'}): {verdict} in "
             f"{report.seconds:.1f} s"]
    if report.score is not None:
        lines.append(f"  checks: score {report.score}")
    for n in report.notebooks:
        lines.append(f"  {n.path}: {n.ran}/{n.code_cells} code cells in {n.seconds:.1f} s"
                     + ("" if n.error is None else " — error"))
    lines += [f"  ✗ {e}" for e in report.errors]
    if report.released:
        lines.append("  seat released: the host is as it was")
    return lines


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(reports: list[ContentReport]) -> str:
    """A job summary section: a table of the workshops, then every located error."""
    out = ["### wodsync content CI", ""]
    if not reports:
        return "\n".join([*out, "No workshop changed: nothing to run.", ""])
    out += ["| workshop | host | notebooks | result | seconds |", "|---|---|---|---|---|"]
    for r in reports:
        cells = f"{sum(n.ran for n in r.notebooks)}/{sum(n.code_cells for n in r.notebooks)}"
        out.append(f"| {_cell(r.workshop)} | {_cell(r.host)} | {len(r.notebooks)} "
                   f"({cells} code cells) | {'✅ passed' if r.passed else '❌ failed'} | "
                   f"{r.seconds:.1f} |")
    failed = [(r.workshop, e) for r in reports for e in r.errors]
    if failed:
        out += ["", "Errors:", ""] + [f"- `{_cell(e)}`" for _, e in failed]
    return "\n".join([*out, ""])
