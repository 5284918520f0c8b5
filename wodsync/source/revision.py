"""Is an exported revision deployable? Its located errors, as data the daemon can keep.

The daemon never deploys what does not validate: it checks each new export, records a bad
revision's errors (status `Stalled`, `file:line` for the author) and stays on the last good one.
So the verdict is a value that survives a restart and an API call: `RevisionCheck.to_json()`
gives the `{path, line, col, code, message}` objects the store keeps. Links of the commit that
the export refused to create (they point outside the revision) are reported here too, at their
path, since the loader only sees that something is missing there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodsync.diagnostics import Diagnostic
from wodsync.source.archive import refused_links

CATALOG_PARTS = ("catalog/", "hosts/", "templates/")
FIELDS = ("path", "line", "col", "code", "message")


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return {k: getattr(d, k) for k in FIELDS}


def diagnostic_from_json(data: dict[str, Any], severity: str = "error") -> Diagnostic:
    return Diagnostic(str(data["path"]), int(data["line"]), int(data["col"]), str(data["code"]),
                      str(data["message"]), "warning" if severity == "warning" else "error")


@dataclass(frozen=True)
class RevisionCheck:
    """The verdict on one revision: ok when it has no error (warnings do not block)."""

    sha: str
    ok: bool
    errors: list[Diagnostic]
    warnings: list[Diagnostic] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.sha, "ok": self.ok,
                "errors": [diagnostic_json(d) for d in self.errors],
                "warnings": [diagnostic_json(d) for d in self.warnings]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RevisionCheck:
        errors = [diagnostic_from_json(d) for d in data.get("errors", [])]
        warnings = [diagnostic_from_json(d, "warning") for d in data.get("warnings", [])]
        return cls(str(data["sha"]), not errors, errors, warnings)

    def text(self) -> str:
        """One `path:line:col: error[code]: message` line per finding, errors first."""
        return "\n".join(d.text() for d in [*self.errors, *self.warnings])

    @property
    def summary(self) -> str:
        """A one-line status message: the first error and how many more."""
        if not self.errors:
            return f"revision {self.sha[:12]} is valid"
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"revision {self.sha[:12]} is invalid: {self.errors[0].text()}{more}"


def _link_findings(folder: Path) -> list[Diagnostic]:
    found = []
    for link in refused_links(folder):
        in_catalog = link.path.startswith(CATALOG_PARTS)
        found.append(Diagnostic(
            link.path, 1, 1, "symlink",
            f"is a symbolic link to {link.target!r} that {link.reason}; it was not exported "
            "(wodsync never reads through links in the repository)",
            "error" if in_catalog else "warning"))
    return found


def check_revision(folder: Path, sha: str | None = None) -> RevisionCheck:
    """Validate an exported revision folder (`wodsync.catalog.validate`), never raising: a
    validator that fails is itself a reason not to deploy."""
    from wodsync.catalog import validate

    sha = sha or Path(folder).name
    try:
        _, found = validate(Path(folder))
    except Exception as exc:  # a crash must block the revision, not the daemon
        found = [Diagnostic(".", 1, 1, "internal-error",
                            f"validation failed: {type(exc).__name__}: {exc}")]
    found = sorted(set(found) | set(_link_findings(Path(folder))))
    errors = [d for d in found if d.is_error]
    return RevisionCheck(sha, not errors, errors, [d for d in found if not d.is_error])
