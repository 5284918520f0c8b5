"""Report commands: `wodsync status`, `wodsync history`, `wodsync facts export`.

Why: the daemon keeps its status, history and the facts it observed in the store; an operator
(or a monitoring check) reads them here without the daemon's API, or through it with `--daemon
URL` when the store is elsewhere. Both paths print the same JSON the API serves
(`wodsync.daemon.views`). `status` exits 0 only when every host is Ready and the source is
not Stalled.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wodsync.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    load_secrets,
    main,
    say,
    secrets_option,
    store_options,
)

if TYPE_CHECKING:
    from wodsync.authoring.facts import FactsDocument
    from wodsync.authoring.preview import Preview
    from wodsync.store import Store

SHORT = 12


def read_from_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where status, history and facts are read: the daemon's API (--daemon URL), else the
    store (--state, --db)."""
    f = click.option("--daemon", "daemon_url", metavar="URL",
                     help="Read the daemon's API at URL instead of the store (token from "
                          "$WODSYNC_API_TOKEN, or $WODSYNC_FACTS_TOKEN for facts).")(f)
    return store_options(f)


@contextmanager
def reading_store(state: Path | None, db: str | None) -> Iterator[Store]:
    """The store, read-only in spirit: a state folder without a store is an error, not a new
    empty database."""
    from wodsync.controller import state_dir
    from wodsync.store import DB_FILE, StoreError, open_store

    folder = state_dir(state)
    if db is None and not (folder / DB_FILE).exists():
        raise click.ClickException(f"no store at {folder / DB_FILE}: give --state DIR, --db URL "
                                   "or --daemon URL")
    try:
        store = open_store(db, state_dir=folder)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


def from_daemon(url: str, path: str, variable: str, **query: Any) -> Any:
    """GET a daemon endpoint; a failure is one clear line naming the URL (never the token)."""
    import urllib.parse

    from wodsync.authoring.facts import FactsError, get_json

    params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    full = url.rstrip("/") + path + (f"?{params}" if params else "")
    try:
        return get_json(full, os.environ.get(variable), variable)
    except FactsError as exc:
        raise click.ClickException(str(exc)) from None


def status_data(state: Path | None, db: str | None, daemon_url: str | None,
                host: str | None = None, limit: int = 20) -> dict[str, Any]:
    from wodsync.daemon.views import API_TOKEN, status_view

    if daemon_url:
        return from_daemon(daemon_url, "/api/v1/status", API_TOKEN, host=host, limit=limit)
    with reading_store(state, db) as store:
        return status_view(store, host, limit)


def short(revision: str | None) -> str:
    return revision[:SHORT] if revision else "-"


def when(stamp: str | None) -> str:
    """`2026-01-01 12:00:00Z` from the API's ISO text."""
    return stamp.replace("T", " ").split(".")[0].rstrip("Z") + "Z" if stamp else "-"


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


CONDITION_STYLE = {"Ready": "green", "Reconciling": "yellow", "Stalled": "red"}


def status_table(data: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="hosts", title_justify="left")
    for column in ("host", "condition", "reason", "applied", "attempted", "last success",
                   "drift", "next attempt", "message"):
        table.add_column(column, overflow="fold")
    for h in data["hosts"]:
        style = CONDITION_STYLE.get(h["condition"], "")
        table.add_row(h["host"], f"[{style}]{h['condition']}[/]" if style else h["condition"],
                      h["reason"] or "-", short(h["lastAppliedRevision"]),
                      short(h["lastAttemptedRevision"]), when(h["lastSuccess"]),
                      str(h["driftCount"]), when(h["nextAttempt"]),
                      h["lastError"] if h["condition"] != "Ready" and h["lastError"]
                      else h["message"] or "")
    return table


def repository_lines(repo: dict[str, Any] | None) -> list[str]:
    """The source: where it follows, the head's located errors when it does not validate,
    its condition since when and why, and its fetches."""
    if repo is None:
        return ["repository: none recorded yet (has the daemon run?)"]
    line = (f"repository {repo['url']} ({repo['branch']}): head {short(repo['headRevision'])}, "
            f"last good {short(repo['lastGoodRevision'])}")
    lines = [line]
    if repo["errors"]:
        lines = [line + f" — the head is invalid ({len(repo['errors'])} errors), not deployed:"]
    for e in repo["errors"]:
        where = ":".join(str(e[k]) for k in ("path", "line", "col") if e.get(k) is not None)
        code = f"{e['code']}: " if e.get("code") else ""
        lines.append(f"  {where}: {code}{e.get('message', '')}")
    lines.append(f"source: {repo['condition']} ({repo['reason']}) since "
                 f"{when(repo.get('since'))}: {repo['message']}")
    if repo.get("lastFetchAttempt"):
        failures = repo.get("fetchFailures") or 0
        lines.append(f"  fetched {when(repo.get('lastFetch'))}, last attempt "
                     f"{when(repo['lastFetchAttempt'])}"
                     + (f", {failures} failures in a row" if failures else "")
                     + f", next {when(repo.get('nextFetch'))}")
    return lines


@main.command("status")
@read_from_options
@click.option("--json", "as_json", is_flag=True, help="The API's JSON.")
def status_cmd(state: Path | None, db: str | None, daemon_url: str | None,
               as_json: bool) -> None:
    """Hosts × revision × condition, then the repository (exit 0 when every host is Ready
    and the source is not Stalled, 1 otherwise: a monitoring check)."""
    data = status_data(state, db, daemon_url)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        out = console()
        if data["hosts"]:
            out.print(status_table(data))
        else:
            out.print("no host status recorded yet", markup=False)
        for line in repository_lines(data["repository"]):
            out.print(line, markup=False)
        for line in release_lines(data.get("releasesPending") or []):
            out.print(line, markup=False)
    sys.exit(EXIT_OK if healthy(data) else EXIT_FAILED)


def healthy(data: dict[str, Any]) -> bool:
    """Every host Ready, and a source that is not Stalled: a remote moved away or a head
    that does not validate leaves the hosts Ready on the last good revision, and a monitoring
    check must still see it."""
    repo = data["repository"]
    return bool(data["ready"]) and (repo is None or repo["condition"] != "Stalled")


def release_lines(pending: list[dict[str, Any]]) -> list[str]:
    """Seats whose release has not finished on their host, each with why and when next."""
    if not pending:
        return []
    lines = [f"{len(pending)} seats with a release pending (retried until their host has "
             "done it):"]
    lines += [f"  {r['host']} {r['seat']}: session {r['session']} ({r['workshop']}), "
              f"{r['operation']} tried {r['attempts']}×, next {when(r['nextAttempt'])}: "
              f"{r['error'] or ''}" for r in pending]
    return lines


def history_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="reconciliations, newest first", title_justify="left")
    for column in ("time", "host", "revision", "trigger", "duration", "+", "~", "-", "result",
                   "message"):
        table.add_column(column, overflow="fold",
                         justify="right" if column in ("duration", "+", "~", "-") else "left")
    for r in rows:
        table.add_row(when(r["startedAt"]), r["host"], short(r["revision"]), r["trigger"],
                      f"{r['durationSeconds']:.1f}s", str(r["created"]), str(r["changed"]),
                      str(r["deleted"]), r["result"], r["message"] or "")
    return table


@main.command("history")
@read_from_options
@click.option("--host", help="Only this host's reconciliations.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The API's JSON.")
def history_cmd(state: Path | None, db: str | None, daemon_url: str | None,
                host: str | None, limit: int, as_json: bool) -> None:
    """The last reconciliations: time, host, revision, trigger, duration, + ~ - counts,
    result (the store keeps the last 20 per host)."""
    rows = status_data(state, db, daemon_url, host, limit)["reconciliations"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        console().print(history_table(rows))
    else:
        click.echo("no reconciliation recorded yet" + (f" for host {host}" if host else ""))


@main.group("facts")
def facts_group() -> None:
    """The facts the daemon last observed on each host (for previews without SSH)."""


def _documents(state: Path | None, db: str | None, daemon_url: str | None,
               secrets_file: Path | None) -> tuple[list[FactsDocument], list[str]]:
    """Documents and per-host errors, from the daemon or the store."""
    from wodsync.authoring.facts import FactsError, fetch, from_store, stored_hosts
    from wodsync.authoring.scrub import secret_values

    if daemon_url:
        try:
            return list(fetch(daemon_url).values()), []
        except FactsError as exc:
            raise click.ClickException(str(exc)) from None
    known = secret_values(load_secrets(secrets_file))
    docs, errors = [], []
    with reading_store(state, db) as store:
        for name in stored_hosts(store):
            try:
                doc = from_store(store, name, known)
            except FactsError as exc:
                errors.append(str(exc))
                continue
            if doc is not None:
                docs.append(doc)
    return docs, errors


@facts_group.command("export")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@read_from_options
@secrets_option
@click.option("--host", "hosts", multiple=True, help="Only this host; repeatable.")
def facts_export_cmd(folder: Path, state: Path | None, db: str | None, daemon_url: str | None,
                     secrets_file: Path | None, hosts: tuple[str, ...]) -> None:
    """Write FOLDER/<host>.json for each host, without anything secret: what `wodsync plan
    --facts FOLDER` and `wodsync watch --facts FOLDER` preview against. With --secrets, a
    document holding one of its values is refused."""
    from wodsync.authoring.facts import export

    docs, errors = _documents(state, db, daemon_url, secrets_file)
    if hosts:
        docs = [d for d in docs if d.host in hosts]
        missing = sorted(set(hosts) - {d.host for d in docs})
        errors += [f"host {h}: no facts recorded" for h in missing]
    for path, doc in zip(export(docs, folder), docs, strict=True):
        say(f"wrote {path} (observed at {doc.observed_at or '?'}, revision "
            f"{short(doc.revision)})")
    for message in errors:
        say(f"✗ {message}")
    if not docs and not errors:
        say("no facts recorded yet: the daemon publishes them after it observes each host")
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


def plan_from_facts(root: Path, facts_from: str, hosts: tuple[str, ...],
                    secrets_file: Path | None, allow_deletions: int | None, fmt: str,
                    verbose: bool) -> int:
    """`wodsync plan --facts DIR|URL`: the plan from published facts (no SSH, no credential),
    with the same output and exit codes as a live plan."""
    from wodsync.authoring.facts import FactsError, FactsSource
    from wodsync.authoring.preview import preview
    from wodsync.cli.common import valid_catalog
    from wodsync.secrets import Placeholders

    catalog = valid_catalog(root, "fix them before planning")
    unknown = [h for h in hosts if h not in catalog.hosts]
    if unknown:
        raise click.ClickException(f"unknown host(s): {', '.join(unknown)}")
    checking = Placeholders.checking(load_secrets(secrets_file)) if secrets_file else None
    try:
        previews = preview(catalog, FactsSource(facts_from), hosts, checking, allow_deletions)
    except FactsError as exc:
        raise click.ClickException(str(exc)) from None
    print_previews(previews, fmt, verbose)
    return preview_exit(previews)


def print_previews(previews: list[Preview], fmt: str, verbose: bool) -> None:
    from wodsync.engine.plan import render_markdown, render_text

    plans = [p.plan for p in previews if p.plan]
    if fmt == "json":
        click.echo(json.dumps([p.to_json(verbose) for p in previews], indent=2))
        return
    headers = [f"{p.host}: {p.header}" for p in previews if p.plan]
    problems = [p.error for p in previews if p.error]
    if fmt == "markdown":
        head = "\n".join([*(f"> {h}  " for h in headers), *(f"> ⚠ {e}  " for e in problems)])
        click.echo(render_markdown(plans, header=head + "\n" if head else ""))
        return
    for line in headers:
        click.echo(line)
    for line in problems:
        say(f"! {line}")
    click.echo(render_text(plans, verbose=verbose))


def preview_exit(previews: list[Preview]) -> int:
    """As `plan`: 1 when a host could not be planned (a host without facts yet only when no
    host could be), 2 when a plan has changes, else 0."""
    from wodsync.cli.common import EXIT_CHANGES

    plans = [p.plan for p in previews if p.plan]
    failed = any(p.error and not p.missing for p in previews) or not plans or \
        any(plan.refused or plan.errors for plan in plans)
    if failed:
        return EXIT_FAILED
    return EXIT_CHANGES if any(plan.has_changes for plan in plans) else EXIT_OK
