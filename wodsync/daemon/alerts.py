"""Alerts: a host or the source Stalled longer than a threshold is told to the operators, once
per episode, and told again once when it is Ready.

Why in the daemon and not only in Prometheus: a WoD site often runs no alerting stack, and the
operators already get the seat guard's notices by mail. So the writer looks at the recorded
conditions every few seconds; an episode (Stalled since `since`, through its retries) that
passes `after` seconds becomes one `operator` mail to each of the catalog's operators, through
the outbox (deduplicated by its key), and one JSON POST to a generic webhook. The episode is
kept in the store (`alerts`), so a restart or a new writer never tells it twice; when the
subject is Ready again, one "resolved" goes the same ways.

The threshold is the daemon's setting (`--alert-after`), not the catalog's: the alert watches
the delivery of the catalog itself — a threshold in a catalog that cannot be fetched or does
not validate could not be changed — and how long to wait before waking someone is the
operators' policy, not the workshop authors'. The recipients are the catalog's
(`mail.yaml: operators`), as for every other operator notice. The webhook's URL and its
signing secret are controller secrets (`WODSYNC_ALERT_WEBHOOK_URL`,
`WODSYNC_ALERT_WEBHOOK_SECRET`: the environment file or the secrets file): many receivers'
URLs are themselves credentials. Deliveries go through a thread of their own, retried with
back-off, so a slow or dead receiver never holds a loop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from wodsync.authoring.scrub import scrub
from wodsync.background import Background
from wodsync.logs import FIELDS
from wodsync.mail.settings import MailSettings
from wodsync.store import Condition, Store
from wodsync.store.models import writing
from wodsync.store.outbox import enqueue

log = logging.getLogger("wodsync.alerts")
CHECK_EVERY_S = 5.0
SIGNATURE_HEADER = "X-Wodsync-Signature-256"
SOURCE = "source"
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_ATTEMPTS = 6
WEBHOOK_BACKOFF_S = 2.0
WEBHOOK_BACKOFF_CAP_S = 120.0
FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Subject:
    """What may stall, as status records it: `source` or `host:<name>`."""

    subject: str
    condition: str
    reason: str
    message: str
    since: datetime | None  # Stalled since (None: not in an episode)


@dataclass(frozen=True)
class Notice:
    """One alert, as the webhook receives it (`to_json`) and the mail tells it."""

    status: str  # firing | resolved
    subject: str
    reason: str
    message: str
    since: datetime
    at: datetime

    def to_json(self) -> dict[str, Any]:
        kind, _, name = self.subject.partition(":")
        return {"status": self.status, "subject": self.subject, "kind": kind,
                "name": name or kind, "reason": self.reason, "message": self.message,
                "since": _iso(self.since), "at": _iso(self.at),
                "stalledSeconds": round((self.at - self.since).total_seconds())}

    def title(self) -> str:
        what = self.subject.replace(":", " ", 1)
        minutes = (self.at - self.since).total_seconds() / 60
        if self.status == RESOLVED:
            return f"resolved: {what} is Ready again (Stalled {minutes:.0f} min)"
        return f"{what} Stalled for {minutes:.0f} min ({self.reason})"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Webhook(Background):
    """POSTs notices to the URL `target()` gives (None: no webhook), one after another, in
    order, each retried with back-off until delivered or given up."""

    def __init__(self, target: Callable[[], tuple[str | None, str | None]],
                 attempts: int = WEBHOOK_ATTEMPTS, backoff: float = WEBHOOK_BACKOFF_S) -> None:
        super().__init__("wodsync-alert-webhook")
        self.target, self.attempts, self.backoff = target, attempts, backoff
        self.pending: queue.Queue[Notice | None] = queue.Queue()

    def send(self, notice: Notice) -> None:
        if self.target()[0]:
            self.pending.put(notice)

    def _wake(self) -> None:
        self.pending.put_nowait(None)  # unblocks `get`

    def _run(self) -> None:
        while not self._stop.is_set():
            notice = self.pending.get()
            if notice is not None:
                self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        body = json.dumps(notice.to_json()).encode()
        fields = {"subject": notice.subject, "status": notice.status}
        for attempt in range(1, self.attempts + 1):
            url, secret = self.target()
            if not url:
                return
            problem = self._post(url, secret, body)
            if problem is None:
                log.info("alert webhook: %s %s delivered", notice.status, notice.subject,
                         extra={FIELDS: fields})
                return
            delay = min(WEBHOOK_BACKOFF_CAP_S, self.backoff * 2 ** (attempt - 1))
            last = attempt == self.attempts
            log.warning("alert webhook: %s %s: attempt %d failed: %s%s", notice.status,
                        notice.subject, attempt, problem,
                        "; given up" if last else f"; next in {delay:.0f} s",
                        extra={FIELDS: fields})
            if last or self._stop.wait(delay):
                return

    @staticmethod
    def _post(url: str, secret: str | None, body: bytes) -> str | None:
        """None when delivered; else why not (never the URL: it may hold a credential)."""
        headers = {"Content-Type": "application/json", "User-Agent": "wodsync-alerts"}
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        try:
            answer = requests.post(url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S,
                                   allow_redirects=False)
        except requests.RequestException as exc:
            return type(exc).__name__
        return None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"


class Alerts(Background):
    """Every `every` seconds: the episodes past `after` told, the ones over resolved."""

    def __init__(self, store: Store, source_key: tuple[str, str],
                 mail: Callable[[], MailSettings | None], webhook: Webhook, after: float,
                 every: float = CHECK_EVERY_S) -> None:
        super().__init__("wodsync-alerts")
        self.store, self.source_key, self.mail = store, source_key, mail
        # a short threshold (a test, an impatient site) is looked at often enough to keep it
        self.webhook, self.after, self.every = webhook, after, min(every, max(0.5, after / 4))

    def start(self) -> None:
        self.webhook.start()
        super().start()

    def stop(self, timeout: float = 60.0) -> None:
        super().stop(timeout)
        self.webhook.stop(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.check()
            except Exception:  # a bad round (the store away) must not end the alerts
                log.exception("alerts: round failed")

    def subjects(self) -> list[Subject]:
        """The source (this daemon's) and every host, as recorded."""
        found = []
        source = self.store.status.repository(*self.source_key)
        if source is not None:
            stalled = source.condition == Condition.STALLED
            found.append(Subject(SOURCE, source.condition.value, str(source.reason),
                                 source.message, source.since if stalled else None))
        for h in self.store.status.hosts():
            found.append(Subject(f"host:{h.host}", h.condition.value, h.reason,
                                 h.last_error or h.message, h.stalled_since))
        recorded = {s.subject for s in found}
        for alert in self.store.status.alerts():  # a host that left the catalog: over
            if alert.resolved_at is None and alert.subject not in recorded \
                    and alert.subject.startswith("host:"):
                found.append(Subject(alert.subject, Condition.READY.value, "Removed",
                                     "the host left the catalog", None))
        return found

    def check(self, now: datetime | None = None) -> list[Notice]:
        """One look: what was told now (firing or resolved)."""
        now = now or datetime.now(UTC)
        told = []
        for s in self.subjects():
            if s.since is not None:
                if (now - s.since).total_seconds() >= self.after and \
                        self.store.status.fire_alert(s.subject, s.since, s.message, now=now):
                    told.append(Notice(FIRING, s.subject, s.reason, scrub(s.message),
                                       s.since, now))
            elif s.condition == Condition.READY:
                episode = self.store.status.resolve_alert(s.subject, now=now)
                if episode is not None:
                    told.append(Notice(RESOLVED, s.subject, s.reason, scrub(s.message),
                                       episode.since, now))
        for notice in told:
            self._tell(notice)
        return told

    def _tell(self, notice: Notice) -> None:
        """A log line, the operators' mails (queued once per episode and status), the
        webhook."""
        (log.info if notice.status == RESOLVED else log.warning)(
            "alert: %s: %s", notice.title(), notice.message,
            extra={FIELDS: {"subject": notice.subject, "status": notice.status,
                            "reason": notice.reason}})
        settings = self.mail()
        if settings is not None and settings.operators:
            context = {"event": notice.title(), "details": notice.message}
            episode = f"{notice.subject}:{_iso(notice.since)}:{notice.status}"
            digest = hashlib.sha256(episode.encode()).hexdigest()[:32]
            with writing(self.store.engine) as conn:
                for n, address in enumerate(settings.operators):
                    enqueue(conn, "operator", address, context=context,
                            key=f"operator:alert:{digest}:{n}")
        self.webhook.send(notice)
