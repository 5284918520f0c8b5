"""Observe → plan → apply for a set of hosts, in parallel with a bound.

Each host is handled by one worker with its own connection. A plan costs one round trip (the
observation); an apply one more (the batch), then an observation to report what is left. The
batch is applied exactly as planned: the agent, holding the host's lock, observes again the
kinds the batch touches and refuses when their facts moved since the plan was made — then the
host is observed and planned again (a saved plan is refused instead). One failing host never
stops the others: its error is part of the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from wodsync.agent.protocol import (
    ApplyAnswer,
    ApplyRequest,
    Failure,
    ManageRequest,
    ObserveAnswer,
    ObserveRequest,
)
from wodsync.engine import remote
from wodsync.engine.desired import DesiredHost
from wodsync.engine.kinds import KINDS
from wodsync.engine.manager import Applier, ManagerRecord
from wodsync.engine.plan import HostPlan, plan_host
from wodsync.engine.remote import HostError
from wodsync.engine.transport import Cancel, Transport, TransportError, connect
from wodsync.progress import Batch, Progress, agent_step

STALE_RETRIES = 2
LOCK_TIMEOUT = 30.0


@dataclass
class HostResult:
    host: str
    plan: HostPlan | None = None
    applied: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # apply phases on the host, s
    skipped: list[str] = field(default_factory=list)          # phases a stop request skipped
    after: HostPlan | None = None
    error: str | None = None
    facts: dict[str, Any] | None = None
    manager: ManagerRecord | None = None  # who manages the host (None: no daemon does)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures and not self.skipped and (
            self.plan is None or (self.plan.refused is None and not self.plan.errors))

    @property
    def converged(self) -> bool:
        return self.ok and not (self.after.has_changes if self.after else
                                self.plan is not None and self.plan.has_changes)


class StalePlan(Exception):
    """The host's facts moved since the plan was made (the message says which kinds)."""


@dataclass
class Observation:
    facts: dict[str, Any]
    digests: dict[str, str]
    manager: ManagerRecord | None = None
    timings: dict[str, float] = field(default_factory=dict)  # the agent's, per kind, s


def observe(transport: Transport, desired: DesiredHost,
            cancel: Cancel | None = None) -> Observation:
    request: ObserveRequest = {**desired.payload(), "probes": desired.probes()}
    answer: ObserveAnswer = remote.call(transport, "observe", request, cancel)
    return Observation(answer["facts"], answer["digests"], answer.get("manager"),
                       answer.get("timings", {}))


def batch_payload(desired: DesiredHost, plan: HostPlan,
                  lock_timeout: float = LOCK_TIMEOUT) -> ApplyRequest:
    """The batch for the agent: each kind's part, and the digests its facts must still have."""
    parts = {}
    for kind, module in KINDS.items():
        changes = plan.by_kind(kind)
        if changes:
            parts[kind] = module.batch(desired.want[kind], changes)
    probes = desired.probes()
    return {**desired.payload(), "batch": parts,
            "expect": {k: plan.digests[k] for k in parts if k in plan.digests},
            "probes": {k: probes[k] for k in parts}, "lock_timeout": lock_timeout}


def _apply(transport: Transport, desired: DesiredHost, plan: HostPlan, result: HostResult,
           cancel: Cancel | None, lock_timeout: float, applier: Applier,
           progress: Progress) -> None:
    batch = Batch({kind: len(plan.by_kind(kind)) for kind in KINDS if plan.by_kind(kind)})
    progress.update(desired.name, "applying", done=0, total=batch.total)
    payload = batch_payload(desired, plan, lock_timeout)
    payload["manager"] = applier.wire()
    done: ApplyAnswer = remote.call(transport, "apply", payload, cancel,
                                    agent_step(progress, desired.name, batch))
    if done["stale"]:
        raise StalePlan("the facts of " + ", ".join(done["stale"]) + " changed since the "
                        "plan was made")
    result.applied = done["log"]
    result.failures = done["failures"]
    result.timings = done["timings"]
    result.skipped = done.get("skipped", [])  # an agent's stale answer had none before


def _plan(transport: Transport, desired: DesiredHost, allow_deletions: int | None,
          cancel: Cancel | None, progress: Progress, phase: str,
          done: int | None = None) -> tuple[HostPlan, Observation]:
    progress.update(desired.name, phase, done=done)
    seen = observe(transport, desired, cancel)
    return plan_host(desired, seen.facts, seen.digests, allow_deletions), seen


def _outcome(result: HostResult) -> str:
    """The last step a host's display shows."""
    if result.error:
        return "failed: " + result.error.splitlines()[0][:120]
    if not result.ok:
        return "done with errors"
    return "converged" if result.converged else "changes left"


def _same(saved: HostPlan, fresh: HostPlan) -> str | None:
    """Why a saved plan no longer matches the host, or None."""
    moved = sorted(k for k in set(saved.digests) | set(fresh.digests)
                   if saved.digests.get(k) != fresh.digests.get(k))
    if moved:
        return "the facts of " + ", ".join(moved) + " changed since the plan was made"
    if [c.to_json() for c in saved.changes] != [c.to_json() for c in fresh.changes]:
        return "the plan computed now differs from the saved one (the catalog or secrets moved)"
    return None


def _admitted(transport: Transport, desired: DesiredHost, applier: Applier,
              seen: Observation, fence: Callable[[], None] | None) -> str | None:
    """Why `applier` may not apply to this host (its manager record), or None; a daemon
    records itself as the host's manager first (under the host lock, on the host)."""
    payload = desired.payload()
    why = applier.refusal(desired.name, payload, seen.manager)
    if why is not None or not applier.needs_claim(desired.name, seen.manager):
        return why
    if fence is not None:
        fence()
    request: ManageRequest = {**payload, "manager": applier.wire()}
    record = remote.call(transport, "manage", request)
    applier.claimed_on(desired.name, record, seen.manager)
    return None


def host_job(desired: DesiredHost, *, apply: bool, allow_deletions: int | None = None,
             saved: HostPlan | None = None, transport: Transport | None = None,
             cancel: Cancel | None = None, lock_timeout: float = LOCK_TIMEOUT,
             fence: Callable[[], None] | None = None,
             applier: Applier | None = None,
             progress: Progress | None = None) -> HostResult:
    """Plan one host and, when asked, apply the plan (retrying when the host moved under it).
    `fence` is called right before each apply and raises when this controller may no longer
    write (the daemon's writer lock lost): the exception propagates, nothing is applied.
    `applier` is who applies (default: a caller without a store): a host another store's
    daemon manages refuses it unless it forces (`engine.manager`). `progress` is told each
    step (the agent's phases while it applies)."""
    progress = progress or Progress()
    applier = applier or Applier(None, "a wodsync apply without a store")
    result = _host_job(desired, apply, allow_deletions, saved, transport, cancel,
                       lock_timeout, fence, applier, progress)
    total = len(result.plan.changes) if result.plan else None
    progress.update(desired.name, _outcome(result), done=total if result.ok else None,
                    total=total)
    return result


def _host_job(desired: DesiredHost, apply: bool, allow_deletions: int | None,
              saved: HostPlan | None, transport: Transport | None, cancel: Cancel | None,
              lock_timeout: float, fence: Callable[[], None] | None, applier: Applier,
              progress: Progress) -> HostResult:
    result = HostResult(desired.name)
    own = transport is None
    transport = transport or connect(desired.name, desired.host)
    try:
        for attempt in range(STALE_RETRIES + 1):
            result.plan, seen = _plan(transport, desired, allow_deletions, cancel, progress,
                                      "observing")
            result.facts, result.manager = seen.facts, seen.manager
            if apply:
                result.error = _admitted(transport, desired, applier, seen, fence)
                if result.error:
                    return result
            if saved is not None:
                why = _same(saved, result.plan)
                if why:
                    result.error = f"refusing the saved plan: {why}"
                    return result
            if not (apply and result.plan.has_changes and result.plan.refused is None):
                return result
            if fence is not None:
                fence()
            try:
                _apply(transport, desired, result.plan, result, cancel, lock_timeout, applier,
                       progress)
                break
            except StalePlan as exc:
                if saved is not None or attempt == STALE_RETRIES:
                    result.error = f"refusing to apply: {exc}"
                    return result
        assert result.plan is not None
        result.after, after = _plan(transport, desired, allow_deletions, None, progress,
                                    "observing again",
                                    len(result.plan.changes) if result.plan else None)
        result.facts = after.facts  # what the host is now: published facts never lag
    except (TransportError, HostError) as exc:
        result.error = str(exc)
    finally:
        if own:
            with contextlib.suppress(Exception):
                transport.close()
    return result


@dataclass(frozen=True)
class Target:
    """A host to reconcile and how to compute its desired state — inside its own worker, so a
    host whose desired state cannot be computed (a missing secret) fails alone."""

    name: str
    build: Callable[[], DesiredHost]


def reconcile(targets: list[Target], *, apply: bool, parallel: int = 8,
              allow_deletions: int | None = None, saved: dict[str, HostPlan] | None = None,
              cancel: Cancel | None = None, lock_timeout: float = LOCK_TIMEOUT,
              applier: Applier | None = None,
              progress: Progress | None = None) -> list[HostResult]:
    """Plan (and optionally apply) every host; results in the order of `targets`."""
    def one(target: Target) -> HostResult:
        if cancel and cancel.soft.is_set():
            return HostResult(target.name, error="not started: the run was interrupted")
        try:
            desired = target.build()
        except Exception as exc:  # a host's own problem (secret, template) fails it alone
            return HostResult(target.name, error=str(exc))
        return host_job(desired, apply=apply, allow_deletions=allow_deletions,
                        saved=(saved or {}).get(target.name), cancel=cancel,
                        lock_timeout=lock_timeout, applier=applier, progress=progress)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, targets))
