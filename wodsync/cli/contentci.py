"""`wodsync test`: content CI — a workshop run for real on an ephemeral seat of a local host.

Exit 0 when every workshop passed (or none was to run), 1 with the located errors.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wodsync.cli.common import db_option, load_secrets, main, root_option, say, secrets_option

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog
    from wodsync.contentci.ci import ContentReport


def changed_workshops(root: Path, base: str) -> list[str]:
    """Workshops whose folder differs from `base` in the work tree (removed ones left out)."""
    from wodsync.authoring.review import WORKSHOPS, Git, ReviewError

    try:
        changed = Git(root).changed_files(base, None)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    keys = {c.path[len(WORKSHOPS):].split("/", 1)[0] for c in changed
            if c.path.startswith(WORKSHOPS) and "/" in c.path[len(WORKSHOPS):]}
    return sorted(k for k in keys if (root / WORKSHOPS / k / "workshop.yaml").is_file())


@contextmanager
def _state(state: Path | None, db: str | None) -> Iterator[Path | None]:
    """The controller folder: the one given (or the default with `--db`), else a temporary
    one, its store removed with it."""
    if state is not None or db is not None:
        yield state
        return
    with tempfile.TemporaryDirectory(prefix="wodsync-test-") as folder:
        yield Path(folder)


@main.command("test")
@root_option
@secrets_option
@db_option("SQLite in a temporary folder, removed afterwards")
@click.option("--state", "--state-dir", "state", type=click.Path(file_okay=False,
              path_type=Path), help="Controller state folder (default: a temporary one).")
@click.argument("workshops", nargs=-1)
@click.option("--host", help="The `transport: local` host to run on (default: the first local "
              "host of the workshop's locations).")
@click.option("--changed", "base", metavar="REV", help="Also test every workshop whose folder "
              "differs from git revision REV (a pull request's base).")
@click.option("--python", type=click.Path(dir_okay=False, path_type=Path),
              help="Interpreter with nbclient and the kernels (default: the host's hub "
                   "environment, else the one running wodsync).")
@click.option("--cell-timeout", type=click.IntRange(1, 86400), default=300, show_default=True,
              help="Seconds one cell may run.")
@click.option("--runner-hosts", is_flag=True, help="Only write hosts/ci-runner-<location>.yaml "
              "(this machine as a `local` host of every location, for CI) and print their "
              "names: apply them, then test.")
@click.option("--json", "as_json", is_flag=True, help="A JSON report on stdout.")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Append a Markdown report to FILE (e.g. $GITHUB_STEP_SUMMARY).")
def test_cmd(root: Path, secrets_file: Path | None, db: str | None, state: Path | None,
             workshops: tuple[str, ...], host: str | None, base: str | None,
             python: Path | None, cell_timeout: int, runner_hosts: bool, as_json: bool,
             summary: Path | None) -> None:
    """Run WORKSHOPS for real: an ephemeral seat of each (a CREATE), its notebooks executed
    as the seat's user, its checks, then the seat released (CLEANUP, RESET, PURGE) whatever
    happened. Runs as root on the host itself. Exit 0 all passed, 1 errors."""
    from wodsync.contentci.ci import ContentReport, ContentSetupError, run_test
    from wodsync.contentci.seatrun import Limits, default_python, is_root
    from wodsync.controller import open_controller
    from wodsync.store import StoreError

    if runner_hosts:
        _write_runner_hosts(root)
        return
    keys = sorted(set(workshops) | set(changed_workshops(root, base) if base else []))
    if not keys and not base:
        raise click.UsageError("name a workshop, or --changed REV")
    if keys and not is_root():
        raise click.ClickException("content CI runs as root: it creates and releases a seat "
                                   "(the notebooks themselves run as the seat's user)")
    reports: list[ContentReport] = []
    with _state(state, db) as folder:
        try:
            ctl = open_controller(root, folder, db, load_secrets(secrets_file))
        except (ValueError, StoreError) as exc:
            raise click.ClickException(str(exc)) from None
        try:
            for key in keys:
                hub = _hub_prefix(ctl.deployment.catalog, host, key)
                try:
                    reports.append(run_test(ctl.sessions, key, host, python or
                                            default_python(hub), Limits(cell_timeout)))
                except ContentSetupError as exc:
                    reports.append(ContentReport(key, host or "-", errors=[str(exc)]))
        finally:
            ctl.close()
    _output(reports, as_json, summary)
    sys.exit(0 if all(r.passed for r in reports) else 1)


def _write_runner_hosts(root: Path) -> None:
    from wodsync.cli.common import valid_catalog
    from wodsync.contentci.runnerhosts import runner_hosts

    for rel, text in runner_hosts(valid_catalog(root, "no host written")).items():
        (root / rel).write_text(text, encoding="utf-8")
        click.echo(Path(rel).stem)


def _hub_prefix(catalog: Catalog, host: str | None, key: str) -> str | None:
    """The hub environment of the host the workshop will run on, if it has one."""
    from wodsync.contentci.ci import ContentSetupError, choose_host

    try:
        found = catalog.hosts[choose_host(catalog, key, host)]
    except ContentSetupError:
        return None
    return found.hub.prefix if found.hub else None


def _output(chosen: list[ContentReport], as_json: bool, summary: Path | None) -> None:
    from wodsync.contentci import report as fmt

    if summary is not None:
        try:
            with summary.open("a", encoding="utf-8") as f:
                f.write(fmt.markdown(chosen))
        except OSError as exc:
            say(f"{summary}: cannot be written ({exc.strerror or exc})")
    if as_json:
        click.echo(json.dumps(fmt.as_json(chosen), indent=2))
        return
    if not chosen:
        say("no workshop changed: nothing to run")
    for r in chosen:
        for line in fmt.text(r):
            click.echo(line)
