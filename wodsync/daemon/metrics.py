"""The daemon's Prometheus metrics (prometheus-client), in a registry of their own.

Durations and counts are set by the loops as they go; conditions (a host Ready, the source
Ready, its revision and last fetch) and session metrics are read from the store when scraped
(collectors): they say exactly what status says, whoever set the condition and whichever
process serves them, and cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wodsync.store import Condition, OutboxState, SessionState, Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SessionCollector(Collector):
    def __init__(self, store: Store, capacities: Callable[[], dict[str, int]]) -> None:
        self.store, self.capacities = store, capacities

    def collect(self) -> Iterator[Any]:
        states = GaugeMetricFamily("wodsync_sessions", "Sessions by state.", labels=["state"])
        for state, count in self.store.sessions.counts_by_state().items():
            states.add_metric([state.value], count)
        yield states
        pending = self.store.sessions.find(state=SessionState.RELEASING)
        oldest = GaugeMetricFamily(
            "wodsync_release_pending_attempts_max", "Most attempts of a seat release that has "
            "not finished on its host (0: none pending).")
        oldest.add_metric([], max((s.release_attempts for s in pending), default=0))
        yield oldest
        free = GaugeMetricFamily("wodsync_free_seats", "Seats left by workshop (capacity minus "
                                 "live sessions).", labels=["workshop"])
        live = self.store.sessions.live_per_workshop()
        for key, capacity in sorted(self.capacities().items()):
            free.add_metric([key], max(0, capacity - live.get(key, 0)))
        yield free
        hot = GaugeMetricFamily("wodsync_hot_seats", "Hot seats of scheduled events by "
                                "state (ready, preparing, taken).", labels=["event", "state"])
        for event, c in sorted(self.store.hot.per_event().items()):
            for kind in ("ready", "preparing", "taken"):
                hot.add_metric([event, kind], getattr(c, kind))
        yield hot


class StatusCollector(Collector):
    """The hosts' and the source's conditions, from the status `wodsync status` prints."""

    def __init__(self, store: Store, url: str, branch: str) -> None:
        self.store, self.url, self.branch = store, url, branch

    def collect(self) -> Iterator[Any]:
        hosts = GaugeMetricFamily("wodsync_host_ready", "1 when the host is Ready (0: "
                                  "Reconciling or Stalled).", labels=["host"])
        for h in self.store.status.hosts():
            hosts.add_metric([h.host], 1 if h.condition == Condition.READY else 0)
        yield hosts
        source = self.store.status.repository(self.url, self.branch)
        ready = GaugeMetricFamily("wodsync_source_ready", "1 when the source is Ready (its "
                                  "head deployed), 0 when Stalled; absent before a fetch.")
        fetched = GaugeMetricFamily("wodsync_source_last_fetch_timestamp_seconds",
                                    "When the source was last fetched successfully.")
        revision = GaugeMetricFamily("wodsync_source_revision_info", "The revision deployed "
                                     "(the last good one), as a label.", labels=["revision"])
        if source is not None:
            ready.add_metric([], 1 if source.condition == Condition.READY else 0)
            if source.last_fetched_at is not None:
                fetched.add_metric([], source.last_fetched_at.timestamp())
            if source.last_good_revision:
                revision.add_metric([source.last_good_revision], 1)
        yield from (ready, fetched, revision)


class OutboxCollector(Collector):
    """The outbox by state, read from the store when scraped (shared by every sender)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        counts = self.store.outbox.counts()
        states = GaugeMetricFamily("wodsync_mail_outbox", "Mails of the outbox by state.",
                                   labels=["state"])
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states
        queued = GaugeMetricFamily("wodsync_mail_queued", "Mails waiting to be sent (queued "
                                   "or being sent).")
        queued.add_metric([], counts[OutboxState.QUEUED] + counts[OutboxState.SENDING])
        yield queued


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "wodsync_reconcile_duration_seconds", "Observe, plan and apply of one host.",
            ["host"], registry=r, buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
        self.last_applied = Gauge("wodsync_last_applied_timestamp_seconds",
                                  "When the host last converged.", ["host"], registry=r)
        self.drift = Counter("wodsync_drift_total", "Resyncs that found and fixed drift.",
                             ["host"], registry=r)
        self.source_fetch_failures = Counter(
            "wodsync_source_fetch_failures", "Fetches of the source that failed.", registry=r)
        self.hub_up = Gauge("wodsync_hub_up", "1 when the host's hub answered its last health "
                            "probe, 0 when it did not.", ["host"], registry=r)
        self.guard_actions = Counter(
            "wodsync_guard_actions", "Seat guard events by rule and action (report: a dry "
            "run or a report rule).", ["rule", "action"], registry=r)
        self.create_seconds = Histogram(
            "wodsync_session_create_seconds", "A CREATE, from the request to the seat usable.",
            registry=r, buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10))
        self.writer = Gauge("wodsync_writer", "1 while this daemon is the writer (holds the "
                            "writer lock), 0 while it is a standby.", registry=r)
        self.mail_sent = Counter("wodsync_mail_sent", "Mails handed to SMTP, by kind.",
                                 ["kind"], registry=r)
        self.mail_failed = Counter("wodsync_mail_failed", "Mails given up (failed), by kind.",
                                   ["kind"], registry=r)
        self.mail_retried = Counter("wodsync_mail_retried", "Sends that did not go through "
                                    "and wait for another attempt, by kind.", ["kind"],
                                    registry=r)

    def watch_sessions(self, store: Store, capacities: Callable[[], dict[str, int]]) -> None:
        self.registry.register(SessionCollector(store, capacities))

    def watch_status(self, store: Store, url: str, branch: str) -> None:
        self.registry.register(StatusCollector(store, url, branch))

    def watch_outbox(self, store: Store) -> None:
        self.registry.register(OutboxCollector(store))

    def mail_result(self, kind: str, outcome: str) -> None:
        """The sender's word on one mail (`wodsync.mail.sender.ResultFn`)."""
        counter = {"sent": self.mail_sent, "failed": self.mail_failed,
                   "retry": self.mail_retried}.get(outcome)
        if counter is not None:
            counter.labels(kind=kind).inc()

    def hub_up_set(self, host: str, up: bool) -> None:
        """A hub probe's result (`wodsync.daemon.probe`)."""
        self.hub_up.labels(host).set(1 if up else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
