"""Seat guard commands (`wodsync guard …`): one round now, and what the guard did.

`guard run` does on demand what the daemon does every `guard.interval` seconds; with
`--dry-run` every rule only reports, which is how a rule is tuned on a live host before its
action is switched on. `guard events` reads the store (the daemon's too, with --state/--db).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wodsync.cli.common import main
from wodsync.cli.report import reading_store
from wodsync.cli.sessions import controller, controller_options


@main.group("guard")
def guard_group() -> None:
    """The seat guard: run a round, list its events."""


def _event_json(e: Any) -> dict[str, Any]:
    from wodsync.daemon.views import iso

    return {"id": e.id, "at": iso(e.at), "host": e.host, "seat": e.username,
            "session": e.session_id, "rule": e.rule, "action": e.action,
            "outcome": e.outcome, "evidence": e.evidence}


def _line(e: dict[str, Any]) -> str:
    ev = e["evidence"]
    facts = [f"pid {ev['pid']}" if ev.get("pid") else "", f"cpu {ev['cpu']}%"
             if ev.get("cpu") is not None else "", f"age {ev['age']:.0f}s"
             if ev.get("age") is not None else ""]
    what = ", ".join(f for f in facts if f)
    cmd = f" `{ev['cmdline'][:80]}`" if ev.get("cmdline") else ""
    return (f"{(e['at'] or '')[:19]}Z {e['host']} {e['seat']} rule {e['rule']}: "
            f"{e['action']} → {e['outcome']} ({what}){cmd}")


@guard_group.command("run")
@controller_options
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option("--dry-run", is_flag=True, help="Every rule only reports: nothing is killed, "
                                              "stopped, purged or quarantined.")
@click.option("--json", "as_json", is_flag=True)
def run_cmd(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
            hosts: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """One guard round on every host (or those given), now."""
    from wodsync.engine.remote import HostError
    from wodsync.engine.transport import TransportError
    from wodsync.guard.actions import Sentinel
    from wodsync.guard.rules import GuardOff

    with controller(root, state, db, secrets_file) as ctl:
        catalog = ctl.deployment.catalog
        unknown = sorted(set(hosts) - set(catalog.hosts))
        if unknown:
            raise click.UsageError(f"unknown host {unknown[0]!r}")
        sentinel = Sentinel(ctl.sessions)
        out: list[dict[str, Any]] = []
        failed: list[str] = []
        for name in list(hosts) or sorted(catalog.hosts):
            try:
                report = sentinel.run(name, dry_run=dry_run)
            except GuardOff as exc:
                raise click.ClickException(str(exc)) from None
            except (TransportError, HostError) as exc:
                failed.append(f"{name}: {exc}")
                continue
            out.append({"host": name, "processes": report.processes,
                        "seatsBusy": report.seats_busy, "hostSeconds": report.host_seconds,
                        "seconds": report.seconds, "errors": report.errors,
                        "events": [_event_json(e) for e in report.events]})
        if as_json:
            click.echo(json.dumps(out, indent=2))
        else:
            for r in out:
                click.echo(f"{r['host']}: {r['processes']} processes in {r['seatsBusy']} seats, "
                           f"{len(r['events'])} findings, {r['seconds'] * 1000:.0f} ms")
                for e in r["events"]:
                    click.echo("  " + _line(e))
                for error in r["errors"]:
                    click.echo(f"  error: {error}")
        if failed:
            raise click.ClickException("round failed on " + "; ".join(failed))


@guard_group.command("events")
@click.option("--state", "--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help="Controller state folder (default: $WODSYNC_STATE, else /var/lib/wodsync).")
@click.option("--db", help="Store URL (default: SQLite at STATE/wodsync.db).")
@click.option("--host", help="Only this host's events.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def events_cmd(state: Path | None, db: str | None, host: str | None, limit: int,
               as_json: bool) -> None:
    """What the guard found and did, newest first, with the evidence; and the seats it
    quarantined."""
    with reading_store(state, db) as store:
        events = [_event_json(e) for e in store.guard.events(host, limit)]
        quarantined = [{"host": q.host, "seat": q.username, "rule": q.rule,
                        "since": q.since.isoformat(), "by": q.by}
                       for q in store.guard.quarantined(host)]
    if as_json:
        click.echo(json.dumps({"events": events, "quarantined": quarantined}, indent=2))
        return
    for e in events:
        click.echo(_line(e))
    if not events:
        click.echo("no guard events")
    for q in quarantined:
        click.echo(f"quarantined: {q['host']} {q['seat']} since {q['since'][:19]}Z by "
                   f"{q['by']} (wodsync seat release {q['host']} {q['seat']})")
