"""Seat commands (`wodsync seat …`): the store and the hosts' seat records brought in line.

The host's record of a seat in use is the last word (`sessions.adoption`): `seat sync` adopts
into the store the sessions it lost (after restoring it from a backup, say) and releases what
the hosts have released; `seat release` frees a seat whatever holds it — the one way to clear a
stale record, never by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from wodsync.catalog.models import Pool
from wodsync.cli.common import main, say
from wodsync.cli.sessions import controller, controller_options


@main.group("seat")
def seat_group() -> None:
    """Seats: reconcile the store with the hosts' seat records, free a seat."""


@seat_group.command("sync")
@controller_options
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def sync_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
             hosts: tuple[str, ...], as_json: bool) -> None:
    """Adopt the sessions the hosts record and the store lost; release what the hosts freed.
    The daemon and `serve` do it at every start; run it after restoring the store."""
    with controller(root, state, db, secrets_file) as ctl:
        unknown = sorted(set(hosts) - set(ctl.deployment.catalog.hosts))
        if unknown:
            raise click.UsageError(f"unknown host {unknown[0]!r}")
        wanted = list(hosts) or sorted(ctl.deployment.catalog.hosts)
        reports = ctl.sessions.sync_records(wanted)
        if as_json:
            click.echo(json.dumps([r.__dict__ for r in reports], indent=2))
        for report in reports if not as_json else ():
            for line in report.lines() or [f"{report.host}: in line with the store"]:
                click.echo(line)
        missed = sorted(set(wanted) - {r.host for r in reports})
        if missed:
            raise click.ClickException(f"could not read the seat records of {', '.join(missed)}")
        if any(r.conflicts for r in reports):
            raise click.ClickException("conflicts left: see above (`wodsync seat release HOST "
                                       "SEAT` frees a seat)")


@seat_group.command("release")
@controller_options
@click.argument("host")
@click.argument("seat")
@click.option("--yes", is_flag=True, help="Do not ask.")
def release_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
                host: str, seat: str, yes: bool) -> None:
    """Free SEAT (a number or a user name) of HOST whatever session holds it: lock, stop, kill,
    new hub identity, sweep, empty the home, drop its record; sessions holding it end, and a
    quarantine by the seat guard is lifted."""
    from wodsync.sessions.service import SessionError

    with controller(root, state, db, secrets_file) as ctl:
        catalog = ctl.deployment.catalog
        if host not in catalog.hosts:
            raise click.UsageError(f"unknown host {host!r}")
        pool = catalog.pools[catalog.hosts[host].pool]
        username = pool.user(int(seat)) if seat.isdigit() else seat
        if not yes:
            click.confirm(f"Empty the home of {username} on {host} and end whatever session holds "
                          "it?", abort=True)
        try:
            ended = ctl.sessions.release_seat(host, username)
        except (SessionError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        lifted = ctl.store.guard.lift(host, pool_seat(pool, username))
        say(f"seat {username} on {host} released"
            + (f"; session {ended.id} ended" if ended else "")
            + ("; its quarantine lifted" if lifted else ""))


def pool_seat(pool: Pool, username: str) -> int:
    """The seat number of `username` in `pool` (-1: not one of its seats)."""
    tail = username[len(pool.prefix):] if username.startswith(pool.prefix) else ""
    return int(tail) if tail.isdigit() else -1
