"""The daemon as one process: its parts built and wired together, served until SIGTERM.

Why a module of its own: `wodsync daemon` (the CLI) only parses options into `Options`; what
the process is made of lives beside the loops it starts. The store and its writer lock come
first (one writer per state: a second daemon on the same SQLite state stops, one on the same
PostgreSQL waits as a standby); then the source, one `Current` deployment holder that the
reconcile loop and the session service share (no cycle between them: both read the holder, only
the source loop sets it), the expiry loop, and the HTTP application serving both the sessions
and the daemon's endpoints. Shutdown runs in the reverse order once the server stops. SIGHUP
reads the secrets file and the API tokens again (`wodsync.reload`) and reconciles at once.

The writer lock is watched while the process serves (`wodsync.daemon.writer.WriterRole`): on its
loss the loops pause and expiry stops; once held again, the state is re-read exactly as at the
start (`_start_writing`) before anything is written.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wodsync.daemon.loop import Daemon, Settings
from wodsync.daemon.writer import WriterRole, settle
from wodsync.logs import setup_logging
from wodsync.reload import Reloader
from wodsync.secrets import Secrets
from wodsync.source.archive import ExportLimits
from wodsync.source.revision import Current
from wodsync.store.status import Trigger

if TYPE_CHECKING:
    from wodsync.daemon.alerts import Alerts
    from wodsync.guard.loop import GuardLoop

log = logging.getLogger("wodsync.daemon")
EXPIRY_INTERVAL = 30.0


class StartError(Exception):
    """The daemon cannot start: its store, its writer lock or its source (one line, for the
    operator)."""


@dataclass(frozen=True)
class Options:
    repo: str
    branch: str
    state: Path
    db: str | None
    secrets: Secrets = field(repr=False)
    address: str
    port: int
    settings: Settings
    limits: ExportLimits
    log_json: bool = False
    smtp: tuple[str, int] | None = None  # --smtp HOST:PORT over catalog/mail.yaml's server


class DaemonProcess:
    """The parts of one daemon process, opened by `__init__` (or a `StartError`), run by
    `serve`, closed by `close`."""

    def __init__(self, options: Options, say: Callable[[str], None]) -> None:
        from wodsync.api.app import create_app
        from wodsync.api.deps import Context
        from wodsync.authoring.scrub import secret_values
        from wodsync.sessions.service import ExpiryLoop, Heartbeat, SessionService
        from wodsync.source.git import GitSource, SourceError
        from wodsync.store import StoreError, WriterLock, open_store

        self.options = options
        options.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.store = open_store(options.db, state_dir=options.state)
        except StoreError as exc:
            raise StartError(str(exc)) from None
        self.lock = WriterLock(options.state, self.store)
        try:
            self._take_writer_lock(say)
            self.source = GitSource(options.repo, options.branch, options.state,
                                    limits=options.limits)
        except (StoreError, SourceError) as exc:  # WriterBusy is a StoreError
            self.close()
            raise StartError(str(exc)) from None
        self.current = Current()
        self.sessions = SessionService(self.store, self.current)
        self.daemon = Daemon(self.source, self.store, options.secrets, self.sessions,
                             self.current, options.settings, fence=self.lock.fence)
        self.role = self.daemon.role = WriterRole(self.lock, self._stop_writing,
                                                  self._start_writing)
        self._measure_sessions()
        self.expiry = ExpiryLoop(self.sessions, EXPIRY_INTERVAL)
        self.heartbeat = Heartbeat(self.store)
        self.daemon.metrics.watch_outbox(self.store)
        self.mail = self._mail_sender()
        self.guard = self._guard_loop()
        self.alerts = self._alerts()
        secret = options.secrets.controller
        self.context = Context(
            self.store, sessions=self.sessions, daemon=self.daemon,
            api_token=lambda: secret("WODSYNC_API_TOKEN"),
            facts_token=lambda: secret("WODSYNC_FACTS_TOKEN"),
            webhook_secret=lambda: secret("WODSYNC_WEBHOOK_SECRET"),
            known_secrets=lambda: secret_values(options.secrets))
        self.app = create_app(self.context)
        self.reloader = Reloader(options.secrets, self.context.token_book(),
                                 then=lambda: self.daemon.poke(Trigger.RELOAD))

    def _take_writer_lock(self, say: Callable[[str], None]) -> None:
        """The writer lock, at once when nobody holds it. On PostgreSQL a daemon that finds it
        held says by whom and waits as a standby; on SQLite it stops (WriterBusy)."""
        from wodsync.store import WriterBusy

        try:
            self.lock.acquire()
        except WriterBusy as busy:
            if self.store.backend != "postgresql":
                raise
            say(f"this daemon is a standby, waiting for the writer lock: {busy}")
            self.lock.acquire(wait=True)
        settle(self.lock)

    def _measure_sessions(self) -> None:
        """Session metrics: seats left per active workshop of the deployed catalog, and how
        long each CREATE took."""
        metrics, current = self.daemon.metrics, self.current

        def capacities() -> dict[str, int]:
            deployed = current.peek()
            return {k: w.capacity for k, w in deployed.catalog.workshops.items()
                    if w.active} if deployed else {}

        def on_event(event: str, session: object, seconds: float | None) -> None:
            if event == "created" and seconds is not None:
                metrics.create_seconds.observe(seconds)

        metrics.watch_sessions(self.store, capacities)
        self.sessions.listeners.append(on_event)

    def _mail_sender(self) -> Any:
        """The outbox's sender, with the deployed catalog's mail settings (idle without),
        counting what it sends in the metrics."""
        from wodsync.mail.sender import Sender

        current, metrics = self.current, self.daemon.metrics

        def catalog() -> Any:
            deployed = current.peek()
            return deployed.catalog if deployed else None

        return Sender(self.store, catalog, self.options.secrets, smtp=self.options.smtp,
                      on_result=metrics.mail_result)

    def serve(self) -> None:
        """Restore the last good revision, recover half-done sessions, start the loops and
        serve the API (SIGHUP reloads) until SIGTERM or SIGINT; then stop everything (the batch
        in flight finishes first) and close."""
        import uvicorn

        o = self.options
        self.reloader.install()
        self.heartbeat.start()  # `serve` replicas leave this process's sessions alone
        self.daemon.restore()
        self.sessions.recover()
        self.daemon.start()
        self.expiry.start()
        self.mail.start()
        self.guard.start()
        self.alerts.start()
        self.daemon.metrics.writer.set(1)
        self.role.start()
        log.info("daemon: following %s, state %s, API on http://%s:%d", self.source.name,
                 o.state, o.address, o.port)
        if not (o.secrets.controller("WODSYNC_API_TOKEN")
                or self.context.token_book().known()):
            log.warning("daemon: no WODSYNC_API_TOKEN is set and no token is stored (`wodsync "
                        "token new NAME --role operator`): the session API and status answer "
                        "503 until one is")
        if not o.secrets.controller("WODSYNC_WEBHOOK_SECRET"):
            log.warning("daemon: no WODSYNC_WEBHOOK_SECRET is set: the git webhook answers 503: "
                        "commits are found by polling alone until it is")
        server = uvicorn.Server(uvicorn.Config(self.app, host=o.address, port=o.port,
                                               log_level="warning", access_log=False,
                                               log_config=None))  # setup_logging's format

        def on_signal(signum: int, frame: object) -> None:
            """SIGTERM/SIGINT: stop serving, then (below) let the batch in flight finish.
            uvicorn captures these while it serves and hands them back here when it stops, so
            the process never dies before its batch is done."""
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        try:
            server.run()
        finally:
            self.role.stop()
            self.daemon.stop()
            self.expiry.stop()
            self.mail.stop()
            self.guard.stop()
            self.alerts.stop()
            self.heartbeat.stop()
            self.sessions.connections.close()
            self.close()

    def _guard_loop(self) -> GuardLoop:
        """The seat guard's rounds, counted in the daemon's metrics (the writer's alone: two
        daemons must not both act on a seat)."""
        from wodsync.guard.actions import Sentinel
        from wodsync.guard.loop import GuardLoop

        counter = self.daemon.metrics.guard_actions
        return GuardLoop(Sentinel(self.sessions,
                                  lambda rule, action: counter.labels(rule, action).inc()))

    def _alerts(self) -> Alerts:
        """Operators told of a host or the source Stalled past `--alert-after` (the writer's
        alone: one alert per episode), by mail and the webhook of the controller secrets."""
        from wodsync.daemon.alerts import Alerts, Webhook

        secret = self.options.secrets.controller
        webhook = Webhook(lambda: (secret("WODSYNC_ALERT_WEBHOOK_URL"),
                                   secret("WODSYNC_ALERT_WEBHOOK_SECRET")))
        return Alerts(self.store, self.daemon.source_key(), self.sessions.mail_settings,
                      webhook, self.options.settings.alert_after)

    def _stop_writing(self, why: str) -> None:
        """The writer lock is lost (`why`): the loops pause at once, expiry, the mail sender,
        the guard and the alerts stop."""
        self.daemon.pause()
        self.daemon.metrics.writer.set(0)
        self.expiry.stop()
        self.mail.stop()
        self.guard.stop()
        self.alerts.stop()

    def _start_writing(self) -> None:
        """The lock is held again: re-read what another writer may have changed (the last
        good revision, half-done sessions), fetch, then write again."""
        from wodsync.sessions.service import ExpiryLoop

        self.daemon.restore()
        self.sessions.recover()
        self.daemon.resume()
        self.expiry = ExpiryLoop(self.sessions, EXPIRY_INTERVAL)
        self.expiry.start()
        self.mail = self._mail_sender()
        self.mail.start()
        self.guard = self._guard_loop()
        self.guard.start()
        self.alerts = self._alerts()
        self.alerts.start()
        self.daemon.metrics.writer.set(1)

    def close(self) -> None:
        """Release the writer lock and close the store (what `__init__` opened first)."""
        if self.lock.held:
            self.lock.release()
        self.store.close()


def run(options: Options, say: Callable[[str], None]) -> None:
    """`wodsync daemon`: log to stderr, open the process's parts, serve until stopped."""
    setup_logging(options.log_json)
    DaemonProcess(options, say).serve()
