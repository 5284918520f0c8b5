"""Per host, the deployment that host last applied: what a CREATE on it is made from.

Why: the newest valid revision is not on every host at once — a slow host is still applying
it, a host whose apply failed (a refused pool-prefix rename) stays on the one before. A CREATE
made from the newest catalog on such a host asks for accounts, a workshop or hooks the host
does not have (a 502 with a raw `KeyError: getpwnam()`). So the reconcile loop records here
the deployment each host converged to, and the session service creates on a host from that
host's own deployment.

A host that has not converged in this process (a restarted daemon) falls back to the store's
`last_applied_revision`: the deployment now held when it is that revision, else that revision's
export, validated once and kept. Without either the host refuses CREATEs (`HostNotApplied`)
until it has applied a revision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from wodsync.sessions.service import HostNotApplied
from wodsync.source.revision import Current, Deployment
from wodsync.store import Store


class AppliedRevisions:
    """The deployment each host last applied; `load(revision)` gives an older deployment from
    its export (None when it is gone or no longer validates)."""

    def __init__(self, store: Store, current: Current,
                 load: Callable[[str], Deployment | None]) -> None:
        self.store, self.current, self.load = store, current, load
        self._by_host: dict[str, Deployment] = {}
        self._loaded: dict[str, Deployment] = {}   # revisions loaded for the fallback
        self._lock = threading.Lock()

    def record(self, host: str, deployment: Deployment) -> None:
        """The host converged to `deployment` (its reconcile ended Ready)."""
        with self._lock:
            self._by_host[host] = deployment

    def known(self, host: str) -> Deployment | None:
        """The deployment the host converged to in this process, if it did."""
        with self._lock:
            return self._by_host.get(host)

    def revisions(self) -> set[str]:
        """Revisions some host is on: their exports must stay."""
        with self._lock:
            return {d.revision for d in self._by_host.values()}

    def deployment(self, host: str) -> Deployment:
        """The host's deployment, or HostNotApplied saying why there is none (the daemon
        serves before its hosts converge). NotDeployed when nothing is deployed at all."""
        current = self.current()
        with self._lock:
            known = self._by_host.get(host)
        found = known or self._fallback(host, current)
        if not found.artifact.folder.is_dir():
            raise HostNotApplied(
                f"host {host} is on revision {found.revision[:12]}, whose export is gone; "
                f"it gets revision {current.revision[:12]} at its next reconcile")
        return found

    def _fallback(self, host: str, current: Deployment) -> Deployment:
        status = self.store.status.host(host)
        revision = status.last_applied_revision if status else None
        if revision is None:
            raise HostNotApplied(f"host {host} has not applied a revision yet")
        if revision == current.revision:
            return current
        with self._lock:
            loaded = self._loaded.get(revision)
        if loaded is None:
            loaded = self.load(revision)
            if loaded is None:
                raise HostNotApplied(
                    f"host {host} has not applied a revision yet in this process, and the "
                    f"revision it last applied ({revision[:12]}) is no longer exported")
            with self._lock:
                self._loaded[revision] = loaded
        return loaded
