"""`wodsync daemon`: follow a repository, deploy what merged, keep hosts converged, serve the
session API — one process, one writer per state."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wodsync.cli.common import load_secrets, main, say, secrets_option
from wodsync.cli.sessions import parse_listen

if TYPE_CHECKING:
    from wodsync.source.archive import ExportLimits


def _exec_start(args: list[str]) -> list[str]:
    program = shutil.which("wodsync") or str(Path(sys.argv[0]).resolve())
    return [str(Path(program).resolve()), "daemon", *args]


def _unit_args(repo: str, branch: str, state: Path | None, db: str | None, interval: float,
               resync: float, listen: str, secrets_file: Path | None,
               tuning: list[str]) -> list[str]:
    args = ["--repo", repo, "--branch", branch, "--interval", f"{interval:g}", "--resync",
            f"{resync:g}", "--listen", listen, *tuning]
    if state:
        args += ["--state", str(state.resolve())]
    if db:
        args += ["--db", db]
    if secrets_file:
        args += ["--secrets", str(secrets_file.resolve())]
    return args


@main.command("daemon")
@click.option("--repo", help="Repository to follow: an URL or a local path.")
@click.option("--branch", default="main", show_default=True)
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="State folder (default: $WODSYNC_STATE, else /var/lib/wodsync).")
@click.option("--db", help="Store URL (default: SQLite at STATE/wodsync.db).")
@click.option("--interval", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
              help="Seconds between two fetches (a signed webhook fetches at once).")
@click.option("--resync", type=click.FloatRange(5, 86400), default=600.0, show_default=True,
              help="Seconds between two self-heal rounds over every host.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option("--parallel", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Hosts reconciled at once.")
@click.option("--stop-timeout", type=click.FloatRange(1, 3600), default=120.0,
              show_default=True, help="Seconds SIGTERM lets the batches in flight finish.")
@click.option("--max-revision-bytes", default="256MiB", show_default=True, metavar="SIZE",
              callback=lambda ctx, param, value: _size(param, value),
              help="Largest commit exported, its files' sizes added up (bytes, or with K/M/G); "
                   "a larger one is refused before anything is written, recorded as invalid.")
@click.option("--max-revision-files", type=click.IntRange(1), default=20_000,
              show_default=True, help="Most files (and links) a commit exported may hold.")
@click.option("--max-file-bytes", default="100MiB", show_default=True, metavar="SIZE",
              callback=lambda ctx, param, value: _size(param, value),
              help="Largest single file of a commit exported (bytes, or with K/M/G).")
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
@click.option("--print-unit", is_flag=True, help="Print a systemd unit for this daemon.")
@secrets_option
def daemon_cmd(repo: str | None, branch: str, state: Path | None, db: str | None,
               interval: float, resync: float, listen: str, parallel: int,
               stop_timeout: float, max_revision_bytes: int, max_revision_files: int,
               max_file_bytes: int, log_json: bool, print_unit: bool,
               secrets_file: Path | None) -> None:
    """Follow REPO's BRANCH: validate each new commit, deploy valid ones to every host,
    self-heal drift, serve the session API, /metrics, /readyz and the git webhook."""
    from wodsync.controller import state_dir

    if not repo:
        raise click.UsageError("--repo is required")
    if print_unit:
        from wodsync.daemon.unit import render_unit

        tuning = ["--parallel", str(parallel), "--stop-timeout", f"{stop_timeout:g}",
                  "--max-revision-bytes", str(max_revision_bytes), "--max-revision-files",
                  str(max_revision_files), "--max-file-bytes", str(max_file_bytes)]
        click.echo(render_unit(_exec_start(_unit_args(repo, branch, state, db, interval,
                                                      resync, listen, secrets_file, tuning)),
                               str(state_dir(state))), nl=False)
        return
    from wodsync.source.archive import ExportLimits

    address, port = parse_listen(listen)
    _logging(log_json)
    _run(repo, branch, state_dir(state), db, load_secrets(secrets_file), address, port,
         interval, resync, parallel, stop_timeout, log_json,
         ExportLimits(max_revision_bytes, max_revision_files, max_file_bytes))


def _size(param: click.Parameter, value: str | int) -> int:
    """A size option's value in bytes (`256MiB`, `1G`, `1048576`)."""
    from wodsync.source.archive import parse_size

    try:
        return value if isinstance(value, int) else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if as_json else
                                           "%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("wodsync")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _run(repo: str, branch: str, state: Path, db: str | None, secrets: object, address: str,
         port: int, interval: float, resync: float, parallel: int, stop_timeout: float,
         log_json: bool, limits: ExportLimits) -> None:
    import uvicorn

    from wodsync.api.app import bearer, create_app
    from wodsync.authoring.scrub import secret_values
    from wodsync.daemon.loop import Daemon, Settings
    from wodsync.daemon.views import facts_router, status_router
    from wodsync.daemon.web import BODY_LIMITS, daemon_router
    from wodsync.sessions.service import ExpiryLoop, SessionError, SessionService
    from wodsync.source.git import GitSource, SourceError
    from wodsync.store import StoreError, WriterBusy, WriterLock, open_store

    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store = open_store(db, state_dir=state)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    lock = WriterLock(state, store)
    try:
        standby = store.backend == "postgresql"
        if standby:
            say("waiting for the writer lock (another daemon on this database runs; this one "
                "is a standby)")
        lock.acquire(wait=standby)
    except WriterBusy as exc:
        raise click.ClickException(str(exc)) from None
    try:
        source = GitSource(repo, branch, state, limits=limits)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    daemon_ref: list[Daemon] = []

    def deployment():
        deployed = daemon_ref[0].deployed
        if deployed is None:
            error = SessionError("no valid revision is deployed yet")
            error.status = 503
            raise error
        return deployed.deployment

    sessions = SessionService(store, deployment)
    daemon = Daemon(source, store, secrets, sessions,  # type: ignore[arg-type]
                    Settings(interval, resync, parallel, stop_timeout), log_json)
    daemon_ref.append(daemon)
    daemon.metrics.watch_sessions(store, lambda: {
        k: w.capacity for k, w in daemon.deployed.deployment.catalog.workshops.items()
        if w.active} if daemon.deployed else {})
    sessions.listeners.append(
        lambda event, session, seconds: daemon.metrics.create_seconds.observe(seconds)
        if event == "created" and seconds is not None else None)
    daemon.restore()
    sessions.recover()
    daemon.start()
    expiry = ExpiryLoop(sessions, 30.0)
    expiry.start()
    secret = secrets.controller  # type: ignore[attr-defined]
    routers = [daemon_router(daemon, lambda: secret("WODSYNC_WEBHOOK_SECRET"), branch,
                             bearer(lambda: secret("WODSYNC_API_TOKEN"))),
               status_router(store, bearer(lambda: secret("WODSYNC_API_TOKEN"))),
               facts_router(store, lambda: secret("WODSYNC_FACTS_TOKEN"),
                            known=lambda: secret_values(secrets))]
    app = create_app(sessions, lambda: secret("WODSYNC_API_TOKEN"), routers, BODY_LIMITS)
    logging.getLogger("wodsync.daemon").info(
        "daemon: following %s, state %s, API on http://%s:%d", source.name, state, address,
        port)
    server = uvicorn.Server(uvicorn.Config(app, host=address, port=port, log_level="warning",
                                           access_log=False))

    def on_signal(signum: int, frame: object) -> None:
        """SIGTERM/SIGINT: stop serving, then (below) let the batch in flight finish. uvicorn
        captures these while it serves and hands them back here when it stops, so the process
        never dies before its batch is done."""
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        server.run()
    finally:
        daemon.stop()
        expiry.stop()
        sessions.connections.close()
        lock.release()
        store.close()

