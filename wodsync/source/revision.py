"""A revision's way to its users: validated once into an artifact, deployed through one holder.

The daemon never deploys what does not validate: it checks each new export once, records a bad
revision's errors (the source `Stalled`, `file:line` for the author) and stays on the last good
one. Validating yields an `Artifact`, as Flux's source-controller hands a revision over with its
digest: the revision, the folder, the loaded catalog and the verdict (`RevisionCheck`), so no
user loads the same revision again. The verdict is a value that survives a restart and an API
call: `RevisionCheck.to_json()` gives the `{path, line, col, code, message}` objects the store
keeps. Links of the commit that the export refused to create (they point outside the revision)
are reported here too, at their path, since the loader only sees that something is missing.

What is deployed now is a `Deployment` (the last good artifact, the secrets to render it and the
commit's deletion allowance) in one `Current` holder, shared by the reconcile loop and the
session service: the source swaps it, its users read it, nothing wraps it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodsync.catalog.loader import Catalog
from wodsync.diagnostics import Diagnostic
from wodsync.secrets import Secrets
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


@dataclass(frozen=True)
class Artifact:
    """One revision, validated once: what the source hands to the hosts and the sessions.

    `catalog` is the loaded catalog when the revision is valid (None otherwise: nothing may be
    deployed from it); `digest` is the digest of the files that shape a plan, the one a saved
    plan records, so a plan and a deployed revision can be compared."""

    revision: str
    digest: str
    folder: Path
    check: RevisionCheck
    catalog: Catalog | None

    @property
    def ok(self) -> bool:
        return self.check.ok

    @property
    def errors(self) -> list[Diagnostic]:
        return self.check.errors


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


def load_artifact(folder: Path, sha: str | None = None) -> Artifact:
    """Validate an exported revision folder (`wodsync.catalog.validate`) once, never raising:
    a validator that fails is itself a reason not to deploy."""
    from wodsync.catalog import validate  # looked up at each call: a test may replace it
    from wodsync.engine.planfile import tree_digest

    folder = Path(folder)
    sha = sha or folder.name
    catalog: Catalog | None
    try:
        catalog, found = validate(folder)
    except Exception as exc:  # a crash must block the revision, not the daemon
        catalog, found = None, [Diagnostic(".", 1, 1, "internal-error",
                                           f"validation failed: {type(exc).__name__}: {exc}")]
    found = sorted(set(found) | set(_link_findings(folder)))
    errors = [d for d in found if d.is_error]
    check = RevisionCheck(sha, not errors, errors, [d for d in found if not d.is_error])
    return Artifact(sha, tree_digest(folder), folder, check, catalog if check.ok else None)


def check_revision(folder: Path, sha: str | None = None) -> RevisionCheck:
    """The verdict alone (`load_artifact(…).check`), for callers that deploy nothing."""
    return load_artifact(folder, sha).check


@dataclass(frozen=True)
class Deployment:
    """What is deployed: a valid artifact, the secrets to render it, and the deletions its
    commit allows (`Wodsync-Allow-Deletions`, None without the trailer)."""

    artifact: Artifact
    secrets: Secrets
    allow_deletions: int | None = None

    def __post_init__(self) -> None:
        if self.artifact.catalog is None:
            raise ValueError(f"revision {self.artifact.revision[:12]} is invalid: it cannot "
                             "be deployed")

    @property
    def catalog(self) -> Catalog:
        assert self.artifact.catalog is not None  # checked when made
        return self.artifact.catalog

    @property
    def revision(self) -> str:
        return self.artifact.revision


class NotDeployed(Exception):
    """Nothing is deployed yet (a daemon whose source has no valid revision so far)."""


class Current:
    """The one holder of the current deployment: the source sets it, the reconcile loop and
    the session service read it. Calling it gives the deployment (or raises `NotDeployed`),
    so a fixed deployment's users take `lambda: deployment` the same way."""

    def __init__(self, deployment: Deployment | None = None) -> None:
        self._deployment = deployment
        self._lock = threading.Lock()

    def __call__(self) -> Deployment:
        deployment = self.peek()
        if deployment is None:
            raise NotDeployed("no valid revision is deployed yet")
        return deployment

    def peek(self) -> Deployment | None:
        """The deployment, or None before the first one."""
        with self._lock:
            return self._deployment

    def set(self, deployment: Deployment) -> None:
        with self._lock:
            self._deployment = deployment
