"""The daemon's loops: the source (fetch, export, validate) and the reconcile (every host against
the last good revision), beside the session API and expiry loop, in one process.

A new commit is fetched every `interval` seconds, or at once when the webhook says so; it is
exported to an immutable folder and validated once into an artifact, and only a valid revision
ever becomes the one deployed (`Current`, shared with the session service) — an invalid one is
recorded with its located errors, the source's condition `Stalled`, while the hosts stay on the
last good revision, applied and self-healed, under their own condition. Every `resync`
seconds after its own last run, each host is observed and its drift fixed: every host is on
its own clock (`schedule`), a bounded pool runs the hosts due, and a slow or failing host
(backing off on its own) never delays another; a failed hub probe makes its host due at
once. On SIGTERM no new host job starts, the jobs in flight get `stop_timeout` seconds to
finish, then their agents are told to stop at a safe point. While the daemon is not the
writer (`writing` clear: its writer lock was lost, `wodsync.daemon.writer`), neither loop
starts a round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host
from wodsync.daemon.applied import AppliedRevisions
from wodsync.daemon.hosts import BACKOFF_BASE, HostRunner, Outcome
from wodsync.daemon.metrics import Metrics
from wodsync.daemon.probe import Prober
from wodsync.daemon.schedule import Schedule
from wodsync.diagnostics import Diagnostic
from wodsync.engine.desired import desired_state
from wodsync.engine.manager import Applier
from wodsync.engine.transport import Cancel
from wodsync.logs import FIELDS
from wodsync.secrets import Secrets
from wodsync.sessions.liveupdate import due
from wodsync.sessions.service import SessionService
from wodsync.source.git import GitSource, RevisionTooLarge, SourceError
from wodsync.source.revision import Artifact, Current, Deployment, diagnostic_json, load_artifact
from wodsync.store import Condition, Reason, RepositoryState, SessionState, Store, Trigger
from wodsync.store.models import utcnow
from wodsync.store.status import LIVE_SESSIONS_CODE, TOO_LARGE_CODE, message_of, reason_of

if TYPE_CHECKING:
    from wodsync.daemon.writer import WriterRole

log = logging.getLogger("wodsync.daemon")
# Recorded refusals of a head that are checked again: its size (limits may have been raised
# by a restart) and the live sessions it would orphan (they may have ended).
RECHECKED = frozenset({TOO_LARGE_CODE, LIVE_SESSIONS_CODE})
TICK = 0.25  # the reconcile loop's longest wait: a finished job's slot is used this soon


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
    probe: float = 15.0  # seconds between two hub probes of a host (0: no probes)


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
            store.identity, store.backend, settings.force_manager),
            sessions.connections.transport)  # the seat operations' connection and agent
        self.schedule = Schedule(settings.resync)
        # What each host applied; CREATEs on a host are made from it (`daemon.applied`).
        self.applied = AppliedRevisions(store, current, self._load_applied)
        sessions.host_deployment = self.applied.deployment
        self.prober = Prober(sessions.connections, self._probed_hosts, self.schedule.running,
                             self._hub_down, self.metrics.hub_up_set, settings.probe)
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
        # (session, revision) pairs the live update considered: each once per process
        self._updated: set[tuple[str, str]] = set()

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
            # the revisions hosts are on stay: CREATEs on them are made from their exports
            self.source.prune(self.settings.keep_revisions,
                              protect={head, *self.applied.revisions()})
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
        """The artifact becomes what hosts converge to and sessions are created from; a host
        it no longer lists is no longer reported (status, readiness, alerts)."""
        self.current.set(Deployment(artifact, self.secrets, self._allowance(artifact.revision)))
        if artifact.catalog is None:
            return
        for status in self.store.status.hosts():
            if status.host not in artifact.catalog.hosts:
                self.store.status.forget_host(status.host)
                log.info("host %s left the catalog at %s: its status is no longer reported "
                         "(its history is kept)", status.host, artifact.revision[:12])

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

    def _run_host(self, name: str, trigger: Trigger) -> Outcome | None:
        """One host's job against the deployment held when it starts; a host that converged
        is recorded as on that deployment (CREATEs on it are made from it)."""
        deployed = self.current.peek()
        if deployed is None or name not in deployed.catalog.hosts:
            return None
        self.schedule.started(name, deployed.revision)
        catalog = deployed.catalog
        outcome = self.runner.run(
            name, lambda: desired_state(catalog, name, self.secrets,
                                        self.sessions.live_seats(name)),
            deployed.revision, trigger, deployed.allow_deletions, self.cancel)
        if outcome is not None and outcome.condition == Condition.READY:
            self.applied.record(name, deployed)
            self._live_update(name, deployed)
        return outcome

    def _live_update(self, name: str, deployed: Deployment) -> None:
        """The host's active sessions on an older revision that `deployed` changes get it
        (`sessions.liveupdate`), once per session and revision: one that was not updated is
        tried again at the next revision, or on demand (`wodsync session update`)."""
        try:
            sessions = [s for s in self.store.sessions.find(state=SessionState.ACTIVE, host=name)
                        if (s.id, deployed.revision) not in self._updated]
            self._updated.update((s.id, deployed.revision) for s in sessions)
            todo = due(sessions, deployed, self._catalog_of(deployed)) if sessions else []
            if todo:
                for u in self.sessions.live.run(todo):
                    if u.error or u.skipped:
                        log.warning("host %s: live update of session %s to %s: %s", name,
                                    u.session, deployed.revision[:12], u.error or u.skipped)
        except Exception:  # the apply converged; an update that fails is logged, not fatal
            log.exception("host %s: live update failed", name)

    def _catalog_of(self, deployed: Deployment) -> Callable[[str], Catalog | None]:
        def catalog_of(revision: str) -> Catalog | None:
            if revision == deployed.revision:
                return deployed.catalog
            older = self._load_applied(revision)
            return older.catalog if older is not None else None
        return catalog_of

    def _retry_in(self, name: str, outcome: Outcome | None) -> float | None:
        """Seconds until a host that did not converge is tried again (its back-off, as the
        store records it); None for a host that converged (its next resync)."""
        if outcome is None or outcome.condition == Condition.READY:
            return None
        status = self.store.status.host(name)
        if status is None or status.next_attempt_at is None:
            return BACKOFF_BASE
        return (status.next_attempt_at - datetime.now(UTC)).total_seconds()

    def _job(self, name: str, trigger: Trigger) -> Outcome | None:
        """A pool thread's work: the host's job, then its clock set again, whatever happened."""
        outcome = None
        try:
            outcome = self._run_host(name, trigger)
        except Exception:  # one host's failure never stops the others
            log.exception("host %s: reconcile failed", name)
        finally:
            try:
                retry = self._retry_in(name, outcome)
            except Exception:  # the store is away: try again after the first back-off
                retry = BACKOFF_BASE
            self.schedule.finished(name, retry)
        return outcome

    def _load_applied(self, revision: str) -> Deployment | None:
        """An older revision a host is on, from its export (validated once more: this process
        has not loaded it); None when it is gone or no longer validates."""
        folder = self.source.revision_path(revision)
        if not folder.is_dir():
            return None
        artifact = load_artifact(folder, revision)
        return Deployment(artifact, self.secrets) if artifact.catalog is not None else None

    def _track_hosts(self) -> None:
        deployed = self.current.peek()
        if deployed is not None:
            self.schedule.hosts(deployed.catalog.hosts, Trigger.RESYNC)

    def reconcile_round(self, trigger: Trigger) -> None:
        """Every host not already running, now, against the deployed revision; returns when
        they are done. For a caller driving the rounds itself (a test, a one-off), not beside
        `reconcile_loop`, which runs the same jobs host by host on their own clocks."""
        self._track_hosts()
        self.schedule.due_now(trigger)
        with ThreadPoolExecutor(max_workers=max(1, self.settings.parallel)) as pool:
            jobs = {pool.submit(self._job, n, t) for n, t in self.schedule.take()}
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
        """Each host on its own clock (`schedule`): at most `parallel` host jobs at once, a
        host due is started as soon as a slot is free, whatever the others are doing. An
        event (a new revision, a manual reconcile) makes every host due now; a host still busy
        gets it when it finishes. While this daemon is not the writer nothing new starts."""
        parallel = max(1, self.settings.parallel)
        jobs: set[Future[Outcome | None]] = set()
        with ThreadPoolExecutor(max_workers=parallel,
                                thread_name_prefix="wodsync-host") as pool:
            while not self.stopping.is_set():
                jobs = {j for j in jobs if not j.done()}
                woke = self.wakeups.reconcile.wait(self._sleep(parallel - len(jobs)))
                if self.stopping.is_set():
                    break
                if woke:
                    self.wakeups.reconcile.clear()
                if not self.writing.is_set():
                    continue
                try:
                    self._track_hosts()
                    if woke:
                        self._event(self.wakeups.trigger)
                    for name, trigger in self.schedule.take(parallel - len(jobs)):
                        jobs.add(pool.submit(self._job, name, trigger))
                except Exception:  # a bad turn (the store away) must never kill the loop
                    log.exception("reconcile turn failed")
            jobs = {j for j in jobs if not j.done()}
            if jobs:
                self._finish_in_flight(jobs)

    def _event(self, trigger: Trigger) -> None:
        """Every host due now; a new revision (commit, webhook) names itself, so a host whose
        job already works on it is not run twice for it."""
        deployed = self.current.peek()
        news = trigger in (Trigger.COMMIT, Trigger.WEBHOOK)
        revision = deployed.revision if news and deployed is not None else None
        self.schedule.due_now(trigger, revision=revision)

    def _sleep(self, free: int) -> float:
        """How long the loop may wait for an event: until the next host is due when a slot is
        free, and never more than TICK (a finished job frees a slot for a host waiting)."""
        due = self.schedule.next_in() if free > 0 else None
        return TICK if due is None else min(TICK, max(0.01, due))

    def probe_loop(self) -> None:
        """Every `probe` seconds, each host's hub probed (`wodsync.daemon.probe`); a failed
        probe makes the host due now, trigger `probe`."""
        while not self.stopping.wait(self.settings.probe):
            if self.writing.is_set():
                try:
                    self.prober.round()
                except Exception:
                    log.exception("probe round failed")

    def _hub_down(self, name: str) -> None:
        self.schedule.due_now(Trigger.PROBE, [name])

    def _probed_hosts(self) -> dict[str, Host]:
        """The hosts as each applied them (its hub's ports), else as deployed now."""
        deployed = self.current.peek()
        if deployed is None:
            return {}
        hosts = dict(deployed.catalog.hosts)
        for name in hosts:
            applied = self.applied.known(name)
            if applied is not None and name in applied.catalog.hosts:
                hosts[name] = applied.catalog.hosts[name]
        return hosts

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
        loops = [(self.source_loop, "source"), (self.reconcile_loop, "reconcile")]
        if self.settings.probe > 0:
            loops.append((self.probe_loop, "probe"))
        for target, name in loops:
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
        self.prober.close()
