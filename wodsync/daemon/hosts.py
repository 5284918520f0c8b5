"""One host's reconciliation by the daemon: observe, plan, apply — then status, history, facts,
metrics and one log line, whatever happened.

Status is data, as Flux keeps it: a condition (`Ready`, `Reconciling`, `Stalled`) with a reason
and a message, the last attempted and last applied revisions, the last success and error, a
drift count. A host that fails is retried after a delay that doubles with each failure (capped),
so it never holds the others back and comes back by itself.

A job runs only while the daemon is the writer: `fence` (the writer lock asked on its own
connection) is called before the job writes its first status, right before the apply and
before the outcome is recorded; when it raises, the job stops there and records nothing — the
new writer observes the host afresh.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wodsync.catalog.models import Host
from wodsync.daemon.metrics import Metrics
from wodsync.engine.change import Action
from wodsync.engine.desired import DesiredHost
from wodsync.engine.manager import Applier
from wodsync.engine.reconcile import HostResult, host_job
from wodsync.engine.transport import Cancel, Transport, TransportError
from wodsync.logs import FIELDS
from wodsync.progress import Lines
from wodsync.store import Condition, Reason, Reconciliation, Result, Store, Trigger, WriterLost

BACKOFF_BASE = 10.0
BACKOFF_CAP = 600.0
log = logging.getLogger("wodsync.daemon")


def backoff(failures: int) -> float:
    """Seconds before the next try after `failures` failures in a row: 10, 20, 40 … 600."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Outcome:
    result: Result
    condition: Condition
    reason: Reason
    message: str
    counts: dict[str, int]


def classify(r: HostResult, drift: bool) -> Outcome:
    """What a host job came to, in status terms; `drift`: the job was a resync of a host
    already on its revision, so what it changed is drift it repaired."""
    plan = r.plan
    counts = {a.value: plan.count(a) if plan else 0 for a in Action}
    if r.error:
        return Outcome(Result.FAILED, Condition.STALLED, Reason.RECONCILE_FAILED, r.error, counts)
    assert plan is not None
    if plan.refused:
        return Outcome(Result.REFUSED, Condition.STALLED, Reason.DELETIONS_REFUSED, plan.refused,
                       counts)
    problems = plan.errors + [f"{f['phase']}: {f['error']}" for f in r.failures]
    if problems:
        return Outcome(Result.FAILED, Condition.STALLED, Reason.APPLY_FAILED,
                       "; ".join(problems), counts)
    if r.after and r.after.has_changes:
        return Outcome(Result.FAILED, Condition.STALLED, Reason.NOT_CONVERGED,
                       f"{len(r.after.changes)} changes still pending after the apply: "
                       f"{r.after.pending()}", counts)
    if not plan.has_changes:
        return Outcome(Result.NOOP, Condition.READY, Reason.UP_TO_DATE, "nothing to change",
                       counts)
    why = Reason.DRIFT_REPAIRED if drift else Reason.APPLIED
    return Outcome(Result.APPLIED, Condition.READY, why, "; ".join(r.applied), counts)


# The host's kept connection for the length of a job (`Connections.transport`): its persistent
# agent answers the job's requests.
Transports = Callable[[str, Host], AbstractContextManager[Transport]]


class HostRunner:
    """Runs one host's job and records everything about it."""

    def __init__(self, store: Store, metrics: Metrics,
                 fence: Callable[[], None] | None = None,
                 applier: Applier | None = None,
                 transports: Transports | None = None) -> None:
        self.store, self.metrics = store, metrics
        self.fence = fence or (lambda: None)
        # Without `transports` each job opens a connection and starts an agent of its own
        # (an SSH handshake and a python3 start: most of a no-op job on a 2000-seat host).
        self.transports = transports
        # the daemon records itself as each host's manager (`engine.manager`)
        self.applier = applier or Applier.daemon(store.identity, store.backend)

    def run(self, name: str, build: Callable[[], DesiredHost], revision: str,
            trigger: Trigger, allow_deletions: int | None, cancel: Cancel) -> Outcome | None:
        """The job's outcome, or None when it did not run to its end: the daemon is stopping
        (`cancel.soft`: nothing new starts) or no longer the writer."""
        if cancel.soft.is_set():
            return None
        try:
            return self._fenced_run(name, build, revision, trigger, allow_deletions, cancel)
        except WriterLost as exc:
            log.warning("host %s: not reconciled: %s", name, exc, extra={FIELDS: {"host": name}})
            return None

    def _fenced_run(self, name: str, build: Callable[[], DesiredHost], revision: str,
                    trigger: Trigger, allow_deletions: int | None, cancel: Cancel) -> Outcome:
        self.fence()
        started, clock = datetime.now(UTC), time.monotonic()
        before = self.store.status.host(name)
        was_on = before is not None and before.last_applied_revision == revision
        self.store.status.update_host(name, condition=Condition.RECONCILING,
                                      reason=Reason.PROGRESSING, last_attempted_revision=revision,
                                      message=f"{trigger.value}: reconciling {revision[:12]}")
        try:
            desired = build()
        except Exception as exc:  # the host's own desired state failed: it alone is stalled
            result = HostResult(name, error=f"{type(exc).__name__}: {exc}")
        else:
            result = self._job(desired, allow_deletions, cancel)
        seconds = time.monotonic() - clock
        # Drift: a resync that changed a host already on this revision. A daemon's first run on
        # a host (a resync by its clock) that brings it a new revision is a deployment.
        outcome = classify(result, drift=trigger == Trigger.RESYNC and was_on)
        self.fence()
        drifted = outcome.reason == Reason.DRIFT_REPAIRED
        self._record(name, result, outcome, revision, trigger, started, seconds, drifted)
        return outcome

    def _job(self, desired: DesiredHost, allow_deletions: int | None,
             cancel: Cancel) -> HostResult:
        """Observe, plan, apply — on the host's kept connection when there is one (a host
        whose connection cannot even be made, a bad pinned key, fails alone)."""
        with contextlib.ExitStack() as stack:
            try:
                transport = stack.enter_context(self.transports(desired.name, desired.host)) \
                    if self.transports else None
            except TransportError as exc:
                return HostResult(desired.name, error=str(exc))
            return host_job(desired, apply=True, allow_deletions=allow_deletions,
                            transport=transport, cancel=cancel, fence=self.fence,
                            applier=self.applier,
                            progress=Lines(changes_only=True))  # a first install: minutes

    def _record(self, name: str, r: HostResult, o: Outcome, revision: str, trigger: Trigger,
                started: datetime, seconds: float, drifted: bool) -> None:
        now = datetime.now(UTC)
        last = r.after or r.plan
        if r.facts is not None and last is not None:
            self.store.status.put_facts(name, {"facts": r.facts, "digests": last.digests},
                                        revision=revision, observed_at=now)
        if o.condition == Condition.READY:
            self.store.status.update_host(
                name, now=now, condition=o.condition, reason=o.reason, message=o.message,
                last_applied_revision=revision, last_success_at=now, consecutive_failures=0,
                next_attempt_at=None, add={"drift_count": 1} if drifted else None)
        else:
            current = self.store.status.host(name)
            failures = (current.consecutive_failures if current else 0) + 1
            self.store.status.update_host(
                name, now=now, condition=o.condition, reason=o.reason, message=o.message,
                last_error=o.message, consecutive_failures=failures,
                next_attempt_at=now + timedelta(seconds=backoff(failures)))
        self.store.status.record_reconciliation(Reconciliation(
            host=name, revision=revision, trigger=trigger, started_at=started,
            duration_s=round(seconds, 3), result=o.result, created=o.counts["create"],
            changed=o.counts["update"], deleted=o.counts["delete"], message=o.message[:2000]))
        self._measure(name, o, seconds, drifted)
        self._log(name, o, revision, trigger, seconds, drifted)

    def _measure(self, name: str, o: Outcome, seconds: float, drifted: bool) -> None:
        m = self.metrics
        m.reconcile_seconds.labels(name).observe(seconds)
        if o.condition == Condition.READY:
            m.last_applied.labels(name).set(time.time())
        if drifted:
            m.drift.labels(name).inc()

    def _log(self, name: str, o: Outcome, revision: str, trigger: Trigger, seconds: float,
             drifted: bool) -> None:
        """One line per host per reconciliation; never a secret (messages come from plans
        and agents, which carry none)."""
        fields = {"host": name, "revision": revision[:12], "trigger": trigger.value,
                  "result": o.result.value, "created": o.counts["create"],
                  "changed": o.counts["update"], "deleted": o.counts["delete"],
                  "duration_s": round(seconds, 3), "drift": drifted}
        if o.condition != Condition.READY:
            fields["error"] = o.message[:500]
        (log.warning if o.condition != Condition.READY else log.info)(
            "reconciled %s: %s", name, o.result.value, extra={FIELDS: fields})
