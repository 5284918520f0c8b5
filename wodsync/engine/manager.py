"""Who applies, as the host's manager record sees it (the host half: `agent.manager`).

Why a controller half: `plan` shows who manages each host, and an `apply` is refused before
it sends anything when the host's record says another store manages it — the agent checks
again under the host lock, which is what makes the refusal certain. A daemon claims each host
it reconciles (`manage`), once per host and process, so a host it manages says so even when
nothing was there to change.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
from dataclasses import dataclass, field

from wodsync.agent.manager import FORCE_FLAG, Caller, ManagerRecord, describe, refusal
from wodsync.agent.protocol import HostPayload

__all__ = ["FORCE_FLAG", "Applier", "ManagerRecord", "describe"]

log = logging.getLogger("wodsync.manager")


@dataclass
class Applier:
    """Who applies: its store's identity (None without a store), a description for a person
    (never a URL or a secret), whether it claims the hosts (the daemon) and whether it
    forces past another manager (logged here and on the host)."""

    store: str | None
    description: str
    claim: bool = False
    force: bool = False
    claimed: set[str] = field(default_factory=set)   # hosts this process recorded itself on
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def cli(cls, store: str | None, force: bool) -> Applier:
        """`wodsync apply` run by a person."""
        return cls(store, f"wodsync apply by {_user()} on {socket.gethostname()}", force=force)

    @classmethod
    def daemon(cls, store: str, backend: str, force: bool = False) -> Applier:
        return cls(store, f"wodsync daemon on {socket.gethostname()} ({backend} store)",
                   claim=True, force=force)

    def wire(self) -> Caller:
        return {"store": self.store, "description": self.description, "claim": self.claim,
                "force": self.force}

    def refusal(self, host: str, payload: HostPayload, record: ManagerRecord | None,
                ) -> str | None:
        """Why this applier may not change `host` (None: it may); a forced pass is logged."""
        unforced: Caller = {**self.wire(), "force": False}
        why = refusal(payload["state_dir"], record, unforced)
        if why is None:
            return None
        if self.force:
            log.warning("host %s: %s given: applying although it is managed by %s",
                        host, FORCE_FLAG, describe(record or {}))
            return None
        return f"host {host}: {why}"

    def needs_claim(self, host: str, record: ManagerRecord | None) -> bool:
        """A daemon records itself once per host and process, and again whenever the
        host's record is not its store's."""
        if not self.claim:
            return False
        with self._lock:
            mine = record is not None and record.get("store") == self.store
            return not (mine and host in self.claimed)

    def claimed_on(self, host: str, record: ManagerRecord, before: ManagerRecord | None,
                   ) -> None:
        with self._lock:
            self.claimed.add(host)
        if before is not None and before.get("store") != self.store:
            log.warning("host %s: taken over from %s (%s)", host, describe(before), FORCE_FLAG)
        elif before is None:
            log.info("host %s: now managed by this daemon (store %s)", host, self.store)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "an unknown user"
