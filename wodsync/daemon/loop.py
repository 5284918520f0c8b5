"""The daemon's loops: the source (fetch, export, validate) and the reconcile (every host against
the last good revision), beside the session API and expiry loop, in one process.

A new commit is fetched every `interval` seconds, or at once when the webhook says so; it is
exported to an immutable folder and validated once into an artifact, and only a valid revision
ever becomes the one deployed (`Current`, shared with the session service) — an invalid one is
recorded with its located errors, the source's condition `Stalled`, while the hosts stay on the
last good revision, applied and self-healed, under their own condition. Every `resync`
seconds, with or without a new commit, each host is observed and its drift fixed. Hosts are
handled in parallel with a bound; a failing host backs off on its own. On SIGTERM no new host
job starts, the jobs in flight get `stop_timeout` seconds to finish, then their agents are
told to stop at a safe point. While the daemon is not the writer (`writing` clear: its writer
lock was lost, `wodsync.daemon.writer`), neither loop starts a round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from wodsync.catalog.loader import Catalog
from wodsync.daemon.hosts import HostRunner, Outcome
from wodsync.daemon.metrics import Metrics
from wodsync.diagnostics import Diagnostic
from wodsync.engine.desired import DesiredHost, desired_state
from wodsync.engine.manager import Applier
from wodsync.engine.transport import Cancel
from wodsync.logs import FIELDS
from wodsync.secrets import Secrets
from wodsync.sessions.service import SessionService
from wodsync.source.git import GitSource, RevisionTooLarge, SourceError
from wodsync.source.revision import Artifact, Current, Deployment, diagnostic_json, load_artifact
from wodsync.store import Condition, Reason, RepositoryState, Store, Trigger
from wodsync.store.models import utcnow
from wodsync.store.status import LIVE_SESSIONS_CODE, TOO_LARGE_CODE, message_of, reason_of

if TYPE_CHECKING:
    from wodsync.daemon.writer import WriterRole

log = logging.getLogger("wodsync.daemon")
# Recorded refusals of a head that are checked again: its size (limits may have been raised
# by a restart) and the live sessions it would orphan (they may have ended).
RECHECKED = frozenset({TOO_LARGE_CODE, LIVE_SESSIONS_CODE})


@dataclass
class Settings:
    interval: float = 60.0
    resync: float = 600.0
    parallel: int = 4
    stop_timeout: float = 120.0
    keep_revisions: int = 5
    fetch_backoff_cap: float = 600.0  # failed fetches: the interval doubled, at most this
    not_ready_after: float = 900.0  # /readyz 503 once the source has been Stalled this long
    alert_after: float = 900.0  # a host or the source Stalled this long: the operators told
    force_manager: bool = False  # take over hosts another store's daemon manages (logged)


@dataclass(frozen=True)
class Examined:
    """What one source round came to: whether the deployed revision changed, the source's
    reason (Ready only with `RevisionDeployed`) and message, and whether it is a failure to
    retry with back-off (a fetch or an export that failed) rather than a fact of the head."""

    changed: bool
    reason: Reason
    message: str
    transient: bool = False


@dataclass
class Wakeups:
    fetch: threading.Event = field(default_factory=threading.Event)
    reconcile: threading.Event = field(default_factory=threading.Event)
    trigger: Trigger = Trigger.COMMIT


class Daemon:
    """The source and reconcile loops around one `Current` deployment, which the session
    service reads too (the same holder: `sessions.deployment`)."""

    def __init__(self, source: GitSource, store: Store, secrets: Secrets,
                 sessions: SessionService, current: Current, settings: Settings,
                 fence: Callable[[], None] | None = None) -> None:
        self.source, self.store, self.secrets = source, store, secrets
        self.sessions = sessions
        self.current = current
        self.settings = settings
        self.metrics = Metrics()
        self.metrics.watch_status(store, *self.source_key())
        self.runner = HostRunner(store, self.metrics, fence, Applier.daemon(
            store.identity, store.backend, settings.force_manager))
        self.wakeups = Wakeups()
        self.stopping = threading.Event()
        self.cancel = Cancel()
        self.writing = threading.Event()  # set while this daemon is the writer
        self.writing.set()
        self.role: WriterRole | None = None  # DaemonProcess sets it (None: a test drives the loops)
        self._source_turn = threading.Lock()  # one source check at a time
        self._threads: list[threading.Thread] = []
        self._too_large: str | None = None  # the head this process refused for its size
        self._failures = 0  # failed fetches (or exports) in a row: the back-off
        self._held: Artifact | None = None  # the head held for live sessions, checked again

    # ---- the source -----------------------------------------------------------------------------

    def poke(self, trigger: Trigger = Trigger.WEBHOOK) -> None:
        """Fetch now (the webhook), or reconcile now (`manual`)."""
        self.wakeups.trigger = trigger
        self.wakeups.fetch.set()

    def check_source(self, trigger: Trigger) -> bool:
        """Fetch; a new valid head becomes the deployed revision. True when it changed.

        Whatever happens is recorded as the source's own condition (`record`): Ready with the
        head deployed, or Stalled with why — the fetch failed, the head does not validate, it
        cannot be exported, or it is held for live sessions — with the fetch's times. A fetch
        or an export that fails is an expected failure: one warning line, and the next try
        backs off (`fetch_delay`).
        """
        attempted = utcnow()
        try:
            head = self.source.fetch()
        except SourceError as exc:  # the remote moved or is down; the mirror unusable
            self._record(Examined(False, Reason.FETCH_FAILED, str(exc), transient=True),
                         attempted, fetched=False)
            return False
        try:
            examined = self._examine(head, trigger)
        except SourceError as exc:  # no space, a read-only state folder (ExportError): retried
            examined = Examined(False, Reason.EXPORT_REFUSED, str(exc), transient=True)
        self._record(examined, attempted, fetched=True)
        return examined.changed

    def _examine(self, head: str, trigger: Trigger) -> Examined:
        """What a fetched head comes to. Each head is validated once (`load_artifact`): its
        artifact carries the loaded catalog to the sessions check and the deployment. A head
        too large to export is refused before anything is written and recorded with its
        located error. A bad head already recorded is not checked again, except a size refusal
        recorded before this process started (its limits may have been raised) and a head held
        for the live sessions it would orphan (they may have ended since)."""
        url, branch = self.source_key()
        deployed = self.current.peek()
        known = self.store.status.repository(url, branch)
        if deployed and head == deployed.revision:
            if known and (known.errors or known.head_revision != head):  # pushed back to it
                self.store.status.update_repository(url, branch, head_revision=head, errors=[])
            return Examined(False, Reason.REVISION_DEPLOYED,
                            f"revision {head[:12]} is deployed")
        if known and known.head_revision == head and known.errors and (
                head == self._too_large
                or any(e.get("code") not in RECHECKED for e in known.errors)):
            return Examined(False, reason_of(known.errors),  # the same bad head: recorded
                            message_of(head, known.last_good_revision, known.errors))
        try:
            folder = self.source.export(head)
        except RevisionTooLarge as exc:
            self._too_large = head
            return self._refuse(url, branch, head, [exc.diagnostic()])
        held = self._held
        artifact = held if held and held.revision == head else load_artifact(folder, head)
        if artifact.catalog is None:
            return self._refuse(url, branch, head, artifact.errors)
        self._held = None
        refusal = self._held_for_sessions(url, branch, head, artifact.catalog)
        if refusal is not None:
            self._held = artifact  # its sessions may end: checked again, never loaded again
            return refusal
        self._deploy(artifact)
        self.store.status.update_repository(url, branch, head_revision=head,
                                            last_good_revision=head, errors=[])
        self._prune(head)
        log.info("source: revision %s is valid and deployed (%s)", head[:12], self._title(head))
        self.wakeups.trigger = trigger
        return Examined(True, Reason.REVISION_DEPLOYED, f"revision {head[:12]} is deployed")

    def _record(self, examined: Examined, attempted: datetime, fetched: bool) -> None:
        """The source's condition and fetch times in the store, the metrics, and for an
        expected failure one warning line with when it is tried next."""
        self._failures = self._failures + 1 if examined.transient else 0
        delay = self.fetch_delay()
        fetch: dict[str, Any] = {"last_fetch_at": attempted, "fetch_failures": self._failures,
                                 "next_fetch_at": utcnow() + timedelta(seconds=delay)}
        if fetched:
            fetch["last_fetched_at"] = attempted
        else:
            self.metrics.source_fetch_failures.inc()
        ready = examined.reason is Reason.REVISION_DEPLOYED
        url, branch = self.source_key()
        self.store.status.record_source(
            url, branch, Condition.READY if ready else Condition.STALLED, examined.reason,
            examined.message, **fetch)
        if examined.transient:
            log.warning("source: %s (%s; failure %d in a row, next try in %.0f s)",
                        examined.message, examined.reason.value, self._failures, delay,
                        extra={FIELDS: {"reason": examined.reason.value,
                                        "failures": self._failures, "retry_s": delay}})

    def fetch_delay(self) -> float:
        """Seconds until the next fetch: the interval, doubled with each failure in a row
        (fetch or export), capped; back to the interval after a success. A webhook still
        fetches at once."""
        s = self.settings
        if not self._failures:
            return s.interval
        return min(max(s.interval, s.fetch_backoff_cap), s.interval * 2 ** self._failures)

    def _title(self, sha: str) -> str:
        """The commit's first line, for the log (a commit unreadable now is no failure)."""
        try:
            return self.source.message(sha).splitlines()[0][:80]
        except (SourceError, IndexError):
            return ""

    def source_key(self) -> tuple[str, str]:
        name = self.source.name
        url, branch = name.rsplit("#", 1) if "#" in name else (name, "")
        return url, branch

    def source_state(self) -> RepositoryState | None:
        """The source's condition as recorded (None before its first fetch)."""
        return self.store.status.repository(*self.source_key())

    def _prune(self, head: str) -> None:
        """Old exports removed; a folder that cannot be cleaned is said, never fatal."""
        try:
            self.source.prune(self.settings.keep_revisions, protect={head})
        except SourceError as exc:
            log.warning("source: %s", exc)

    def _staying_on(self) -> str:
        deployed = self.current.peek()
        return deployed.revision[:12] if deployed else "nothing"

    def _refuse(self, url: str, branch: str, head: str, errors: list[Diagnostic]) -> Examined:
        """Record an invalid head: its located errors on the repository — the source `Stalled`
        (`InvalidRevision`, or `ExportRefused` when too large; the first error). The deployed
        revision stays as it is, and so do the hosts' conditions: they keep reconciling it."""
        located = [diagnostic_json(e) for e in errors]
        state = self.store.status.update_repository(url, branch, head_revision=head,
                                                    errors=located)
        log.warning("source: revision %s is invalid (%d errors, first: %s); staying on %s",
                    head[:12], len(errors), errors[0].text(), self._staying_on())
        return Examined(False, reason_of(located),
                        message_of(head, state.last_good_revision, located))

    def _allowance(self, sha: str) -> int | None:
        """The commit's `Wodsync-Allow-Deletions` trailer, if any."""
        try:
            return self.source.allow_deletions(sha)
        except SourceError as exc:
            log.warning("source: %s: ignored", exc)
            return None

    def _held_for_sessions(self, url: str, branch: str, head: str,
                           catalog: Catalog) -> Examined | None:
        """A valid head that removes a workshop (or a host) with live sessions is not deployed
        by accident: without an allowance that covers them it is held — recorded with the
        sessions it would orphan, the source Stalled (`LiveSessions`) — and checked again every
        interval (they may end meanwhile). With the allowance they are ended first, CLEANUP
        with the revision deployed now, whose hooks still know their workshop."""
        orphans = self.sessions.orphaned_by(catalog)
        if not orphans:
            return None
        allow = self._allowance(head)
        if allow is not None and allow >= len(orphans):
            for s in self.sessions.end_orphans(catalog):
                log.info("source: revision %s removes %s: session %s ended first (%s)",
                         head[:12], s.workshop, s.id, s.state.value)
            return None
        named = ", ".join(f"{s.id} ({s.workshop}, {s.username} on {s.host})"
                          for s in orphans[:10])
        message = (f"revision {head[:12]} removes workshops or hosts with {len(orphans)} live "
                   f"sessions: {named}; end them (wodsync session cleanup ID) or put "
                   f"'Wodsync-Allow-Deletions: {len(orphans)}' on the commit")
        self.store.status.update_repository(url, branch, head_revision=head, errors=[{
            "path": "catalog/workshops", "line": 1, "col": 1, "code": LIVE_SESSIONS_CODE,
            "message": message}])
        log.warning("source: %s; staying on %s", message, self._staying_on())
        return Examined(False, Reason.LIVE_SESSIONS, message)

    def _deploy(self, artifact: Artifact) -> None:
        """The artifact becomes what hosts converge to and sessions are created from."""
        self.current.set(Deployment(artifact, self.secrets, self._allowance(artifact.revision)))

    def restore(self) -> None:
        """After a restart: the last good revision the store remembers, if still exported
        (validated once more: this process has not loaded it yet)."""
        known = self.source_state()
        if known and known.last_good_revision:
            folder = self.source.revision_path(known.last_good_revision)
            if folder.exists():
                artifact = load_artifact(folder, known.last_good_revision)
                if artifact.catalog is not None:
                    self._deploy(artifact)
                else:
                    log.warning("source: the last good revision %s no longer validates: %s",
                                known.last_good_revision[:12], artifact.check.summary)

    def source_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.writing.wait(1.0):
                continue
            trigger = self.wakeups.trigger
            try:
                with self._source_turn:
                    changed = self.check_source(trigger)
            except Exception:  # a bad round (a full disk, a broken repository) is retried
                log.exception("source round failed")
                changed = False
            if changed or trigger in (Trigger.MANUAL, Trigger.RELOAD):
                self.wakeups.reconcile.set()
            self.wakeups.fetch.wait(self.fetch_delay())
            self.wakeups.fetch.clear()
            if not self.wakeups.fetch.is_set() and self.wakeups.trigger == trigger:
                self.wakeups.trigger = Trigger.COMMIT

    # ---- the hosts ------------------------------------------------------------------------------

    def _stalled_due(self, names: list[str]) -> list[str]:
        """Between resyncs, only stalled hosts whose back-off is over are tried again."""
        now = datetime.now(UTC)
        return [h.host for h in self.store.status.hosts()
                if h.host in names and h.condition == Condition.STALLED
                and h.next_attempt_at is not None and h.next_attempt_at <= now]

    def reconcile_round(self, trigger: Trigger, retries_only: bool = False) -> None:
        """Every host (or only the stalled ones due again) against the deployed revision."""
        deployed = self.current.peek()
        if deployed is None:
            return
        catalog = deployed.catalog
        names = sorted(catalog.hosts)
        if retries_only:
            names = self._stalled_due(names)

        def build(name: str) -> Callable[[], DesiredHost]:
            return lambda: desired_state(catalog, name, self.secrets,
                                         self.sessions.live_seats(name))

        with ThreadPoolExecutor(max_workers=max(1, self.settings.parallel)) as pool:
            jobs = {pool.submit(self.runner.run, n, build(n), deployed.revision, trigger,
                                deployed.allow_deletions, self.cancel) for n in names}
            while jobs:
                _, jobs = wait(jobs, timeout=0.5)
                if self.stopping.is_set() and jobs:
                    self._finish_in_flight(jobs)
                    return

    def _finish_in_flight(self, jobs: set[Future[Outcome | None]]) -> None:
        self.cancel.soft.set()
        _, pending = wait(jobs, timeout=self.settings.stop_timeout)
        if pending:
            log.warning("stopping: %d host batches still running after %.0f s: asking their "
                        "agents to stop at a safe point", len(pending),
                        self.settings.stop_timeout)
            self.cancel.hard.set()
            wait(pending, timeout=60)

    def reconcile_loop(self) -> None:
        last_resync = float("-inf")
        while not self.stopping.is_set():
            if not self.writing.wait(1.0):
                continue
            woke = self.wakeups.reconcile.wait(1.0)
            if self.stopping.is_set():
                return
            try:
                if woke:
                    self.wakeups.reconcile.clear()
                    last_resync = time.monotonic()
                    self.reconcile_round(self.wakeups.trigger)
                elif time.monotonic() - last_resync >= self.settings.resync:
                    last_resync = time.monotonic()
                    self.reconcile_round(Trigger.RESYNC)
                else:
                    self.reconcile_round(Trigger.RESYNC, retries_only=True)
            except Exception:  # a round must never kill the loop
                log.exception("reconcile round failed")

    # ---- the writer role -------------------------------------------------------------------------

    def pause(self) -> None:
        """The writer lock is lost: no new round and no new host job; the jobs in flight are
        told to stop at a safe point at once (their agents' stdin closed), and fenced."""
        self.writing.clear()
        self.cancel.soft.set()
        self.cancel.hard.set()

    def resume(self) -> None:
        """The lock is held again and the state re-read (`restore`, sessions recovered): fetch
        first — another writer may have deployed a newer revision meanwhile, and the hosts
        must never go back to an older one this process still holds — then write again."""
        self.cancel = Cancel()
        with self._source_turn:
            self.check_source(Trigger.COMMIT)
        self.writing.set()
        self.wakeups.reconcile.set()

    # ---- the process ----------------------------------------------------------------------------

    def start(self) -> None:
        """The loops, in threads (after `restore`, so the first round knows what is deployed)."""
        for target, name in ((self.source_loop, "source"), (self.reconcile_loop, "reconcile")):
            thread = threading.Thread(target=target, name=f"wodsync-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """SIGTERM: no new batch; the batch in flight finishes (bounded), then exit."""
        self.stopping.set()
        self.wakeups.fetch.set()
        self.wakeups.reconcile.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.stop_timeout + 90)
