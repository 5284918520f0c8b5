"""Store commands (`wodsync store backup|restore`): a consistent copy of the store while it
serves, and a restore reconciled with the hosts before anything serves from it.

A restored store is an older picture than the hosts: sessions created since are recorded only
on their hosts, sessions ended since are still live in it. So `restore` refuses while a daemon
or a `serve` process uses the store, and once the backup is in place it takes over the
sessions their dead processes left half-way, reconciles the store with every host's seat
records (`wodsync seat sync`) and finishes the releases that brings — then the daemon or
`serve` may start.
"""

from __future__ import annotations

from pathlib import Path

import click

from wodsync.cli.common import EXIT_FAILED, main, say, store_options
from wodsync.cli.sessions import controller, controller_options


@main.group("store")
def store_group() -> None:
    """The store: back it up while it serves, restore it."""


def _state(state: Path | None) -> Path:
    from wodsync.controller import state_dir

    return state_dir(state)


def _url(state: Path | None, db: str | None) -> str:
    from wodsync.controller import state_dir
    from wodsync.store import default_url

    return db or default_url(state_dir(state))


def _users(state: Path | None, db: str | None) -> tuple[list[str], str | None]:
    """Who uses the store now — a daemon holding the writer lock, serving processes whose
    lease is alive (`store.owners`) — and the store's identity (None: it does not open)."""
    from wodsync.controller import state_dir
    from wodsync.store import StoreError, open_store, writer_running
    from wodsync.store.owners import live_leases

    try:
        store = open_store(db, state_dir=state_dir(state))
    except StoreError:
        return [], None  # nothing can serve from a store that does not open
    try:
        found = [f"wodsync serve or daemon {owner}" for owner in live_leases(store.engine)]
        daemon = writer_running(state_dir(state), store)
        return ([daemon] if daemon else []) + found, store.identity
    finally:
        store.close()


@store_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@store_options
def backup_cmd(file: Path, state: Path | None, db: str | None) -> None:
    """Write a consistent copy of the store to FILE while it serves (SQLite: the online
    backup API; PostgreSQL: pg_dump, the URL through the environment)."""
    from wodsync.store import KEY_ENV, KEY_FILE
    from wodsync.store.backup import backup
    from wodsync.store.models import StoreError

    try:
        done = backup(_url(state, db), file)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    say(f"wrote {done.path} ({done.bytes} bytes, {done.how}); the live sessions' passwords "
        f"in it are sealed: keep the key ({KEY_ENV}, else {KEY_FILE} in the state folder) "
        "with it, apart")


@store_group.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@controller_options
def restore_cmd(file: Path, root: Path, secrets_file: Path | None, state: Path | None,
                db: str | None) -> None:
    """Replace the store with the backup FILE, then reconcile it with the seats the hosts
    record before anything serves: sessions the hosts no longer hold end, seats the store
    forgot are adopted and listed. Stop the daemon and every `wodsync serve` first."""
    from wodsync.store import open_store
    from wodsync.store.backup import has_identity, keep_identity, restore
    from wodsync.store.models import StoreError

    users, identity = _users(state, db)
    if users:
        raise click.ClickException("the store is in use by " + "; ".join(users) + ": stop "
                                   "them first (a restore under a serving process is lost)")
    url = _url(state, db)
    try:
        done = restore(url, file)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        older = not has_identity(url)
        open_store(db, state_dir=_state(state)).close()  # its schema brought up to date
        if older and identity:  # a backup from before the identity: the hosts know this one
            keep_identity(url, identity)
    except StoreError as exc:
        raise click.ClickException(f"{file} is restored, but the store does not open: "
                                   f"{exc}") from None
    say(f"restored {file} ({done.how}); reconciling with the hosts' seat records")
    try:
        missed = _reconcile(root, secrets_file, state, db)
    except click.ClickException as exc:
        raise click.ClickException(
            f"the store is restored but not yet reconciled with the hosts: {exc.message}; "
            "run `wodsync seat sync` (with --root, --state, --db) before serving") from None
    if missed:
        say(f"could not read the seat records of {', '.join(missed)}: run `wodsync seat "
            "sync` once they answer, before serving")
        raise SystemExit(EXIT_FAILED)


def _reconcile(root: Path, secrets_file: Path | None, state: Path | None,
               db: str | None) -> list[str]:
    """The sessions dead processes left half-way taken over, the store brought in line with
    every host's seat records and the releases that brings finished; the hosts that could not
    be read."""
    with controller(root, state, db, secrets_file) as ctl:
        for s in ctl.sessions.recover():
            say(f"session {s.id}: {s.error}")
        hosts = sorted(ctl.deployment.catalog.hosts)
        reports = ctl.sessions.sync_records(hosts)
        ended = ctl.sessions.retry_releases()
        for report in reports:
            for line in report.lines() or [f"{report.host}: in line with the store"]:
                click.echo(line)
        for s in ended:
            click.echo(f"{s.host}: session {s.id} ({s.username}) {s.state.value}")
        return sorted(set(hosts) - {r.host for r in reports})
