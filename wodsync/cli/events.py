"""Event commands (`wodsync event …`): the scheduled events the catalog declares and, from the
store, their hot seats (`sessions.hotseats`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from wodsync.cli.common import main
from wodsync.cli.sessions import controller, controller_options


@main.group("event")
def event_group() -> None:
    """Scheduled events (catalog/events.yaml) and their hot seats."""


def _row(event: Any, counts: Any, now: datetime) -> dict[str, Any]:
    phase = "warm" if event.warm_at(now) else ("over" if now >= event.ends else "later")
    return {"name": event.name, "workshop": event.workshop, "start": event.start.isoformat(),
            "end": event.ends.isoformat(), "warms_at": event.warms_at.isoformat(),
            "expected": event.expected, "warm": event.warm, "lead": event.lead,
            "hot_target": event.hot_target, "phase": phase,
            "ready": counts.ready, "preparing": counts.preparing, "taken": counts.taken}


def _rows(ctl: Any) -> list[dict[str, Any]]:
    from wodsync.store.hotseats import EventSeats

    now = datetime.now(UTC)
    counts = ctl.store.hot.per_event()
    return [_row(e, counts.get(e.name, EventSeats()), now)
            for e in ctl.deployment.catalog.events]


@event_group.command("list")
@controller_options
@click.option("--json", "as_json", is_flag=True)
def list_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
             as_json: bool) -> None:
    """The events declared, when their hot seats are kept, and how many are ready or taken."""
    with controller(root, state, db, secrets_file) as ctl:
        rows = _rows(ctl)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no event declared (catalog/events.yaml)")
    for r in rows:
        click.echo(f"{r['name']:<20} {r['workshop']:<20} {r['start']}  {r['phase']:<5}  "
                   f"hot {r['ready']}/{r['hot_target']} ready, {r['taken']} taken")


@event_group.command("show")
@controller_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
             name: str, as_json: bool) -> None:
    """One event: what the catalog declares and its hot seats, seat by seat."""
    with controller(root, state, db, secrets_file) as ctl:
        row = next((r for r in _rows(ctl) if r["name"] == name), None)
        if row is None:
            known = ", ".join(e.name for e in ctl.deployment.catalog.events) or "none"
            raise click.UsageError(f"no event {name!r} (declared: {known})")
        row["seats"] = [{"session": s.id, "host": s.host, "user": s.username,
                         "state": s.state.value} for s in ctl.store.hot.waiting(name)]
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    for key, value in row.items():
        if key != "seats":
            click.echo(f"{key + ':':<11} {value}")
    for s in row["seats"]:
        click.echo(f"  {s['host']} {s['user']} {s['state']} (session {s['session']})")
