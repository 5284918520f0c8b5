"""`wodsync daemon`: follow a repository, deploy what merged, keep hosts converged, serve the
session API — one process, one writer per state. This module parses the options; the process
itself is `wodsync.daemon.app`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from wodsync.cli.common import DB_ENV, db_option, load_secrets, main, say, secrets_option
from wodsync.cli.sessions import parse_listen


def _exec_start(args: list[str]) -> list[str]:
    program = shutil.which("wodsync") or str(Path(sys.argv[0]).resolve())
    return [str(Path(program).resolve()), "daemon", *args]


def _unit_args(repo: str, branch: str, state: Path | None, interval: float,
               resync: float, listen: str, secrets_file: Path | None,
               tuning: list[str]) -> list[str]:
    """The daemon's arguments in the unit: never `--db`, whose URL may hold a password;
    the unit's environment file gives it as $WODSYNC_DB."""
    args = ["--repo", repo, "--branch", branch, "--interval", f"{interval:g}", "--resync",
            f"{resync:g}", "--listen", listen, *tuning]
    if state:
        args += ["--state", str(state.resolve())]
    if secrets_file:
        args += ["--secrets", str(secrets_file.resolve())]
    return args


@main.command("daemon")
@click.option("--repo", help="Repository to follow: an URL or a local path.")
@click.option("--branch", default="main", show_default=True)
@click.option("--state", type=click.Path(file_okay=False, path_type=Path),
              help="State folder (default: $WODSYNC_STATE, else /var/lib/wodsync).")
@db_option("SQLite at STATE/wodsync.db")
@click.option("--interval", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
              help="Seconds between two fetches (a signed webhook fetches at once).")
@click.option("--resync", type=click.FloatRange(5, 86400), default=600.0, show_default=True,
              help="Seconds between two self-heal rounds over every host.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT.")
@click.option("--parallel", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Hosts reconciled at once.")
@click.option("--probe", type=click.FloatRange(0, 3600), default=15.0, show_default=True,
              help="Seconds between two health probes of each host's hub (a dead hub is "
                   "restarted at once, not at the next resync); 0: no probes.")
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
@click.option("--not-ready-after", type=click.FloatRange(0, 30 * 86400), default=900.0,
              show_default=True, metavar="SECONDS",
              help="/readyz answers 503 once the source has been Stalled this long.")
@click.option("--alert-after", type=click.FloatRange(0, 30 * 86400), default=900.0,
              show_default=True, metavar="SECONDS",
              help="Tell the operators (mail, WODSYNC_ALERT_WEBHOOK_URL) when a host or the "
                   "source has been Stalled this long; and when it is Ready again.")
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
@click.option("--smtp", metavar="HOST:PORT", help="Send the mails to this SMTP server instead "
              "of catalog/mail.yaml's (a local relay, the demo's sink).")
@click.option("--force-manager", is_flag=True, help="Take over hosts another store's daemon "
              "manages (their manager record is replaced; logged here and on each host).")
@click.option("--print-unit", is_flag=True, help="Print a systemd unit for this daemon.")
@secrets_option
def daemon_cmd(repo: str | None, branch: str, state: Path | None, db: str | None,
               interval: float, resync: float, listen: str, parallel: int, probe: float,
               stop_timeout: float, max_revision_bytes: int, max_revision_files: int,
               max_file_bytes: int, not_ready_after: float, alert_after: float,
               log_json: bool, smtp: str | None, force_manager: bool, print_unit: bool,
               secrets_file: Path | None) -> None:
    """Follow REPO's BRANCH: validate each new commit, deploy valid ones to every host,
    self-heal drift, serve the session API, /metrics, /readyz and the git webhook."""
    from wodsync.controller import state_dir

    if not repo:
        raise click.UsageError("--repo is required")
    if print_unit:
        from wodsync.daemon.unit import ENV_FILE, render_unit

        tuning = ["--parallel", str(parallel), "--stop-timeout", f"{stop_timeout:g}",
                  "--max-revision-bytes", str(max_revision_bytes), "--max-revision-files",
                  str(max_revision_files), "--max-file-bytes", str(max_file_bytes),
                  "--not-ready-after", f"{not_ready_after:g}",
                  "--alert-after", f"{alert_after:g}"]
        tuning += ["--probe", f"{probe:g}"]
        click.echo(render_unit(_exec_start(_unit_args(repo, branch, state, interval,
                                                      resync, listen, secrets_file, tuning)),
                               str(state_dir(state))), nl=False)
        if db:
            say(f"the store URL is not written into the unit: put {DB_ENV}=<the URL> in "
                f"{ENV_FILE} (root only, mode 0600)")
        return
    from wodsync.daemon.app import Options, StartError, run
    from wodsync.daemon.loop import Settings
    from wodsync.source.archive import ExportLimits

    address, port = parse_listen(listen)
    options = Options(repo, branch, state_dir(state), db, load_secrets(secrets_file), address,
                      port, Settings(interval, resync, parallel, stop_timeout,
                                     not_ready_after=not_ready_after,
                                     alert_after=alert_after,
                                     force_manager=force_manager, probe=probe),
                      ExportLimits(max_revision_bytes, max_revision_files, max_file_bytes),
                      log_json, parse_listen(smtp) if smtp else None)
    try:
        run(options, say)
    except StartError as exc:
        raise click.ClickException(str(exc)) from None


def _size(param: click.Parameter, value: str | int) -> int:
    """A size option's value in bytes (`256MiB`, `1G`, `1048576`)."""
    from wodsync.source.archive import parse_size

    try:
        return value if isinstance(value, int) else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None
