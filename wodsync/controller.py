"""The controller's state for commands that work with sessions: the catalog deployed, the
store, the secrets and the open host connections, from the shared options
`--root`, `--state` (default `$WODSYNC_STATE`, else /var/lib/wodsync), `--db` and `--secrets`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from wodsync.engine.connections import Connections
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.revision import Artifact, Current, Deployment, RevisionCheck
from wodsync.store import Store, open_store

DEFAULT_STATE = "/var/lib/wodsync"


def state_dir(given: Path | None) -> Path:
    return given or Path(os.environ.get("WODSYNC_STATE") or DEFAULT_STATE)


@dataclass
class Controller:
    root: Path
    state: Path
    store: Store
    secrets: Secrets
    deployment: Deployment
    connections: Connections = field(default_factory=Connections)

    @cached_property
    def sessions(self) -> SessionService:
        return SessionService(self.store, Current(self.deployment), self.connections)

    def close(self) -> None:
        self.connections.close()
        self.store.close()


def working_tree_deployment(root: Path, secrets: Secrets) -> Deployment:
    """The catalog of a working tree, validated once; its revision is its commit or digest."""
    from wodsync.catalog import validate
    from wodsync.diagnostics import format_diagnostics, has_errors
    from wodsync.engine.planfile import Revision

    catalog, found = validate(root)
    errors = [d for d in found if d.is_error]
    if has_errors(found):
        raise ValueError("the catalog has errors:\n" + format_diagnostics(errors, "text"))
    revision = Revision.of(root)
    check = RevisionCheck(str(revision), True, [], [d for d in found if not d.is_error])
    return Deployment(Artifact(str(revision), revision.digest, root, check, catalog), secrets)


def open_controller(root: Path, state: Path | None, db: str | None,
                    secrets: Secrets) -> Controller:
    folder = state_dir(state)
    deployment = working_tree_deployment(root, secrets)
    store = open_store(db, state_dir=folder)
    return Controller(root, folder, store, secrets, deployment)
