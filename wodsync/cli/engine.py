"""Host commands: plan, check, apply (live or from a saved plan), host add."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wodsync.cli.common import (
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_OK,
    db_option,
    err,
    load_secrets,
    main,
    root_option,
    say,
    secrets_option,
    valid_catalog,
)

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog
    from wodsync.engine.desired import DesiredHost, LiveSeat
    from wodsync.engine.manager import Applier
    from wodsync.engine.planfile import SavedPlan
    from wodsync.engine.reconcile import HostResult, Target
    from wodsync.engine.transport import Cancel
    from wodsync.store import Store


def open_controller_store(state: Path | None, db: str | None) -> Store | None:
    """The controller's store when there is one (`--db`, or a `wodsync.db` in the state
    folder), else None."""
    from wodsync.controller import state_dir
    from wodsync.store import DB_FILE, StoreError, open_store

    folder = state_dir(state)
    if db is None and not (folder / DB_FILE).exists():
        return None
    try:
        return open_store(db, state_dir=folder)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def live_seats(store: Store | None, catalog: Catalog | None = None,
               ) -> Callable[[str], list[LiveSeat]]:
    """Seats of live sessions per host, from the store (on an appliance host of `catalog`,
    the accounts of their appliance seats); a host's own records of seats in use apply
    anyway."""
    from wodsync.engine.desired import LiveSeat
    from wodsync.sessions.appliance import live_on_appliance

    if store is None:
        return lambda host: []
    holding = store.sessions.holding_seats

    def live(host: str) -> list[LiveSeat]:
        if catalog is not None and host in catalog.hosts \
                and catalog.hosts[host].role == "appliance":
            return live_on_appliance(catalog, host, holding)
        return [LiveSeat.of(s) for s in holding(host)]
    return live


def refuse_beside_a_daemon(state: Path | None, store: Store | None) -> None:
    """One writer per state: while a daemon runs on it, `apply` says so and stops."""
    from wodsync.controller import state_dir
    from wodsync.store import writer_running

    if store is None:
        return
    running = writer_running(state_dir(state), store)
    if running:
        raise click.ClickException(f"a wodsync daemon manages this state: {running}; let it "
                                   "apply (commit and push), or stop it first")


def applier(state: Path | None, db: str | None, force: bool) -> Applier:
    """Who this `apply` is to the hosts' manager records: its store's identity (none without
    a store) — a host another store's daemon manages refuses it unless `force`."""
    from wodsync.engine.manager import Applier

    store = open_controller_store(state, db)
    try:
        identity = store.identity if store is not None else None
    finally:
        if store is not None:
            store.close()
    if force:
        say("--force-manager: hosts managed by another store's daemon are applied to anyway "
            "(logged on each host)")
    return Applier.cli(identity, force)


def _say_managers(results: list[HostResult]) -> None:
    """Who manages each host (plan is read-only: it works whoever does)."""
    from wodsync.engine.manager import describe

    for r in results:
        if r.manager is not None:
            say(f"{r.host}: managed by {describe(r.manager)}; an apply from another store "
                "is refused there unless forced (--force-manager)")


def targets(root: Path, names: tuple[str, ...], secrets_file: Path | None,
            state: Path | None = None, db: str | None = None,
            for_apply: bool = False) -> list[Target]:
    """The selected hosts (each once; all when none named), each computing its own desired
    state in its worker so a host with a missing secret fails alone."""
    from wodsync.engine.desired import desired_state
    from wodsync.engine.reconcile import Target

    catalog = valid_catalog(root, "fix them before planning")
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in catalog.hosts]
    if unknown:
        raise click.ClickException(f"unknown host(s): {', '.join(unknown)}")
    secrets = load_secrets(secrets_file)
    store = open_controller_store(state, db)
    if for_apply:
        refuse_beside_a_daemon(state, store)
    live = live_seats(store, catalog)

    def build(name: str) -> Callable[[], DesiredHost]:
        """The host's desired state, computed when its worker calls it (not here)."""
        return lambda: desired_state(catalog, name, secrets, live(name))

    return [Target(n, build(n)) for n in (names or sorted(catalog.hosts))]


def host_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--host", "hosts", multiple=True, help="Host to act on; repeatable "
                     "(default: every host).")(f)
    f = click.option("--parallel", type=click.IntRange(1, 256), default=8, show_default=True,
                     help="Hosts handled at once.")(f)
    f = click.option("--allow-deletions", type=click.IntRange(0), default=None,
                     help="Accept a plan deleting up to N accounts (overrides the cap).")(f)
    f = click.option("--lock-timeout", type=click.FloatRange(0, 3600), default=30.0,
                     show_default=True, help="Seconds to wait for a host another wodsync "
                     "call holds.")(f)
    f = click.option("--state", "--state-dir", "state",
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Controller state folder whose store lists live sessions (default: "
                          "$WODSYNC_STATE, else /var/lib/wodsync).")(f)
    f = db_option("STATE/wodsync.db when it exists")(f)
    return root_option(secrets_option(f))


@contextlib.contextmanager
def interruptible() -> Iterator[Cancel]:
    """Ctrl-C once: start no new host and let the batches in flight finish, then report.
    Twice: tell the hosts to stop at their next safe point (their agents' stdin is closed)."""
    from wodsync.engine.transport import Cancel

    cancel = Cancel()

    def handler(signum: int, frame: Any) -> None:
        if not cancel.soft.is_set():
            cancel.soft.set()
            say("interrupted: finishing the host batches in flight, starting no other host; "
                "press Ctrl-C again to stop them at their next safe point")
        else:
            cancel.hard.set()
            say("stopping: each host stops at its next safe point and reports what it did; "
                "the next plan shows what is left")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def _result_json(r: HostResult, verbose: bool) -> dict[str, Any]:
    return {"host": r.host, "error": r.error,
            "plan": r.plan.to_json(noops=verbose) if r.plan else None,
            "applied": r.applied, "failures": r.failures, "skipped": r.skipped,
            "timings": r.timings, "remaining": r.after.to_json() if r.after else None,
            "manager": r.manager}


def _print_outcome(r: HostResult) -> None:
    if r.error:
        say(f"✗ {r.host}: {r.error}")
        return
    for f in r.failures:
        say(f"✗ {r.host}: {f['phase']}: {f['error']}")
    if r.skipped:
        say(f"✗ {r.host}: stopped before {', '.join(r.skipped)}")
    if r.applied or r.failures:
        left = len(r.after.changes) if r.after else 0
        where = f"{left} changes still pending ({r.after.pending()})" \
            if r.after and left else "converged"
        say(f"{'✓' if r.ok else '✗'} {r.host}: {'; '.join(r.applied) or 'nothing applied'}"
            f" — {where}")


def exit_code(results: list[HostResult], applied: bool) -> int:
    if any(not r.ok for r in results):
        return EXIT_FAILED
    if applied:
        return EXIT_FAILED if any(r.after and r.after.has_changes for r in results) else EXIT_OK
    return EXIT_CHANGES if any(r.plan and r.plan.has_changes for r in results) else EXIT_OK


def report(results: list[HostResult], fmt: str, applied: bool, verbose: bool = False) -> int:
    from wodsync.engine.plan import render_markdown, render_text

    plans = [r.plan for r in results if r.plan]
    if fmt == "json":
        click.echo(json.dumps([_result_json(r, verbose) for r in results], indent=2))
    elif fmt == "markdown":
        click.echo(render_markdown(plans))
    else:
        click.echo(render_text(plans, verbose=verbose))
    for r in results:
        if fmt == "json" and not applied:
            continue
        if r.error or applied:
            _print_outcome(r)
    return exit_code(results, applied)


def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(f)
    return click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
                        default="text", show_default=True)(f)


@main.command("plan")
@host_options
@format_option
@click.option("-v", "--verbose", is_flag=True, help="Also list what is already right, and why.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan to this file, to apply it as reviewed.")
@click.option("--facts", "facts_source", metavar="DIR|URL",
              help="Preview from published facts (a folder of `wodsync facts export`, or the "
                   "daemon's URL with $WODSYNC_FACTS_TOKEN): no SSH, no credentials.")
def plan_cmd(root: Path, hosts: tuple[str, ...], secrets_file: Path | None, parallel: int,
             allow_deletions: int | None, lock_timeout: float, state: Path | None,
             db: str | None, fmt: str, as_json: bool, verbose: bool, out: Path | None,
             facts_source: str | None) -> None:
    """Show what apply would change on each host (exit 0 none, 2 changes, 1 error)."""
    from wodsync.engine.planfile import new_saved_plan
    from wodsync.engine.reconcile import reconcile

    if facts_source is not None:
        from wodsync.cli.report import plan_from_facts

        if out is not None:
            raise click.UsageError("a preview from facts cannot be saved with --out: apply "
                                   "only a plan made against the hosts")
        sys.exit(plan_from_facts(root, facts_source, hosts, secrets_file, allow_deletions,
                                 "json" if as_json else fmt, verbose))
    chosen = targets(root, hosts, secrets_file, state, db)
    with interruptible() as cancel:
        results = reconcile(chosen, apply=False, parallel=parallel,
                            allow_deletions=allow_deletions, cancel=cancel)
    code = report(results, "json" if as_json else fmt, applied=False, verbose=verbose)
    _say_managers(results)
    if out is not None:
        new_saved_plan(root, [r.plan for r in results if r.plan]).write(out)
        say(f"saved the plan of {sum(r.plan is not None for r in results)} hosts to {out}; "
            f"apply it with `wodsync apply {out}`")
    sys.exit(code)


main.add_command(click.Command(
    "check", callback=plan_cmd.callback, params=plan_cmd.params,
    help="Drift check for monitoring: the plan; exit 2 when a host drifted, 1 on error, "
         "64 on a usage error."))


def _saved(root: Path, plan_file: Path,
           hosts: tuple[str, ...]) -> tuple[SavedPlan, tuple[str, ...]]:
    from wodsync.engine.planfile import PlanFileError, Revision, SavedPlan

    try:
        saved = SavedPlan.read(plan_file)
        saved.check_revision(Revision.of(root))
    except PlanFileError as exc:
        raise click.ClickException(str(exc)) from None
    missing = [h for h in hosts if h not in saved.hosts]
    if missing:
        raise click.ClickException(f"the plan has no host {', '.join(missing)}")
    return saved, hosts or tuple(saved.hosts)


def _confirm(results: list[HostResult], fmt: str) -> bool:
    """Show the plan (on stderr when stdout is for JSON) and ask; False when nothing to do."""
    from wodsync.engine.plan import render_text

    text = render_text([r.plan for r in results if r.plan])
    click.echo(text, err=fmt == "json")
    for r in results:
        if r.error:
            say(f"✗ {r.host}: {r.error}")
    if not any(r.plan and r.plan.has_changes and r.plan.refused is None for r in results):
        return False
    click.confirm("Apply these changes?", abort=True, err=True)
    return True


@main.command("apply")
@click.argument("plan_file", required=False, type=click.Path(exists=True, dir_okay=False,
                                                              path_type=Path))
@host_options
@click.option("--yes", is_flag=True, help="Apply without asking.")
@click.option("--force-manager", is_flag=True, help="Apply also to hosts another store's "
              "daemon manages (their live sessions are unknown here; logged on each host).")
@click.option("--log-json", is_flag=True,
              help="Progress as JSON log lines on stderr (never the live display).")
@format_option
def apply_cmd(plan_file: Path | None, root: Path, hosts: tuple[str, ...],
              secrets_file: Path | None, parallel: int, allow_deletions: int | None,
              lock_timeout: float, state: Path | None, db: str | None, yes: bool,
              force_manager: bool, fmt: str, as_json: bool, log_json: bool) -> None:
    """Apply the plan: one batch per host, hosts in parallel, then observe again.

    With PLAN_FILE (from `plan --out`), apply exactly that plan: a host whose facts or plan
    moved since is refused. Without it, the plan shown is the plan applied. While it
    applies, each host's step shows on stderr: a live display on a terminal, log lines
    otherwise.
    """
    from wodsync.engine.reconcile import reconcile
    from wodsync.progress import shown

    fmt = "json" if as_json else fmt
    saved = None
    if plan_file is not None:
        saved_plan, hosts = _saved(root, plan_file, hosts)
        saved = saved_plan.hosts
    ending = [sid for name in hosts for sid in saved[name].ending] if saved else []
    if ending:
        raise click.ClickException(
            f"the saved plan ends live sessions ({', '.join(ending)}): ending them changes the "
            "hosts, and a saved plan applies exactly what was reviewed — end them first "
            "(wodsync session cleanup ID) and plan again, or apply without a saved plan: "
            f"wodsync apply --allow-deletions {len(ending)}")
    chosen = targets(root, hosts, secrets_file, state, db, for_apply=True)
    who = applier(state, db, force_manager)
    if allow_deletions and saved is None:
        _end_orphans(root, secrets_file, state, db, allow_deletions)
    with interruptible() as cancel:
        if saved is None and not yes:
            preview = reconcile(chosen, apply=False, parallel=parallel,
                                allow_deletions=allow_deletions, cancel=cancel)
            _say_managers(preview)
            if not _confirm(preview, fmt):
                if fmt == "json":
                    report(preview, fmt, applied=False)
                sys.exit(EXIT_FAILED if any(not r.ok for r in preview) else EXIT_OK)
            saved = {r.host: r.plan for r in preview if r.plan}
            chosen = [t for t in chosen if t.name in saved]
        with shown(sys.stderr, log_json) as progress:
            results = reconcile(chosen, apply=True, parallel=parallel,
                                allow_deletions=allow_deletions, saved=saved, cancel=cancel,
                                lock_timeout=lock_timeout, applier=who, progress=progress)
    sys.exit(report(results, fmt, applied=True))


def _end_orphans(root: Path, secrets_file: Path | None, state: Path | None, db: str | None,
                 allow: int) -> None:
    """Live sessions of workshops (or hosts) the catalog no longer has are ended before it is
    applied — when `--allow-deletions` covers them; otherwise each host's plan refuses."""
    from wodsync.controller import working_tree_deployment
    from wodsync.sessions.service import SessionService

    store = open_controller_store(state, db)
    if store is None:
        return
    try:
        deployment = working_tree_deployment(root, load_secrets(secrets_file))
        sessions = SessionService(store, lambda: deployment)
        orphans = sessions.orphaned_by(deployment.catalog)
        if not orphans or allow < len(orphans):
            return
        for s in sessions.end_orphans(deployment.catalog):
            say(f"session {s.id} ({s.workshop}, {s.username} on {s.host}) ended first: "
                f"{s.state.value}")
        sessions.connections.close()
    finally:
        store.close()


@main.group("host")
def host_group() -> None:
    """Manage the host inventory."""


@host_group.command("add")
@root_option
@click.argument("name")
@click.option("--address", required=True)
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--user", default="root", show_default=True)
@click.option("--identity", help="Private key file for SSH.")
@click.option("--location", required=True)
@click.option("--pool", default="student", show_default=True)
@click.option("--state-dir", help="wodsync's folder on the host (default: "
              "/var/lib/wodsync/<catalog folder name>).")
@click.option("--fingerprint", "expected", help="Expected SHA256:… fingerprint of the host key.")
@click.option("--accept-new", is_flag=True, help="Pin whatever key the host presents now.")
def host_add_cmd(root: Path, name: str, address: str, port: int, user: str,
                 identity: str | None, location: str, pool: str, state_dir: str | None,
                 expected: str | None, accept_new: bool) -> None:
    """Write hosts/NAME.yaml with the host's SSH key pinned."""
    from wodsync.catalog import schema
    from wodsync.catalog.loader import HOSTS_DIR, load_catalog
    from wodsync.catalog.models import NAME_RE, Host
    from wodsync.catalog.yamlfile import dump_yaml
    from wodsync.engine.transport import TransportError, fingerprint, scan_host_key

    if not re.match(NAME_RE, name):
        raise click.ClickException(f"host name '{name}' must match {NAME_RE}")
    target = root / HOSTS_DIR / f"{name}.yaml"
    if target.exists():
        raise click.ClickException(f"{target} already exists")
    if not expected and not accept_new:
        raise click.ClickException("give --fingerprint SHA256:… (verified) or --accept-new")
    catalog = load_catalog(root)
    if location not in catalog.locations:
        raise click.ClickException(f"unknown location '{location}' (known: "
                                   f"{', '.join(sorted(catalog.locations)) or 'none'})")
    if pool not in catalog.pools:
        raise click.ClickException(f"unknown pool '{pool}' (known: "
                                   f"{', '.join(sorted(catalog.pools)) or 'none'})")
    try:
        key = scan_host_key(address, port)
    except TransportError as exc:
        raise click.ClickException(str(exc)) from None
    if expected and fingerprint(key) != expected:
        raise click.ClickException(f"{address}:{port} presents {fingerprint(key)}, not "
                                   f"{expected}; nothing written")
    state_dir = state_dir or f"/var/lib/wodsync/{_slug(root.resolve().name)}"
    data = {"address": address, "port": port, "user": user, "identity": identity,
            "host_key": f"{key.get_name()} {key.get_base64()}", "location": location,
            "pool": pool, "transport": "ssh", "state_dir": state_dir}
    data = {k: v for k, v in data.items() if v is not None}
    try:
        Host.model_validate(data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dump_yaml(data, schema.modeline(root, target, "host")), encoding="utf-8")
    err().print(f"wrote {target} (key {fingerprint(key)}, state_dir {state_dir})")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "catalog"
