"""The `wodsync` command line: thin wrappers that call the pipeline and set exit codes.

Exit codes follow one convention across commands: 0 success, 1 invalid input or failure,
2 reserved for "changes pending" (plan/check).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from wodsync import content, importer, scaffold
from wodsync.catalog import schema, validate
from wodsync.catalog.models import WORKSHOP_KEY_RE
from wodsync.diagnostics import Diagnostic, format_diagnostics, has_errors
from wodsync.secrets import Placeholders, SecretError, Secrets

err = Console(stderr=True, highlight=False, soft_wrap=True)
ROOT_HELP = "Repository root holding catalog/, hosts/ and templates/."


def root_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--root", type=click.Path(file_okay=False, path_type=Path),
                        default=Path(), show_default=True, help=ROOT_HELP)(f)


def _print_diagnostics(found: list[Diagnostic], fmt: str = "text") -> None:
    if found:
        click.echo(format_diagnostics(found, fmt))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wodsync")
def main() -> None:
    """wodsync: GitOps reconciler for Workshops-on-Demand JupyterHub hosts."""


@main.command("validate")
@root_option
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github prints ::error annotations for pull requests.")
def validate_cmd(root: Path, fmt: str) -> None:
    """Validate the whole catalog and host inventory; exit 1 on any error."""
    catalog, found = validate(root)
    if fmt == "json":
        click.echo(format_diagnostics(found, "json"))
    else:
        _print_diagnostics(found, fmt)
        errors = sum(d.is_error for d in found)
        summary = (f"{len(catalog.workshops)} workshops, {len(catalog.hosts)} hosts: "
                   f"{errors} errors, {len(found) - errors} warnings")
        err.print(("✗ " if errors else "✓ ") + summary)
    sys.exit(1 if has_errors(found) else 0)


@main.command("schema")
@root_option
@click.option("--check", is_flag=True, help="Exit 1 if schemas/ is stale instead of writing.")
def schema_cmd(root: Path, check: bool) -> None:
    """Write schemas/*.json from the models."""
    if check:
        stale = schema.stale(root)
        for name in stale:
            click.echo(f"{schema.SCHEMAS_DIR}/{name}: stale; run `wodsync schema`")
        sys.exit(1 if stale else 0)
    changed = schema.write(root)
    err.print(f"{len(changed)} schema files written" if changed else "schemas are up to date")


@main.command("import")
@click.argument("wod_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to create the catalog in (must not hold a catalog/ yet).")
@click.option("--vars", "var_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="WoD group_vars file(s) with global variables; repeatable.")
@click.option("--location", default=importer.DEFAULT_LOCATION, show_default=True,
              help="Location of workshops whose wod.yml names none.")
def import_cmd(wod_dir: Path, out: Path, var_files: tuple[Path, ...], location: str) -> None:
    """Convert a WoD notebooks tree (WKSHP-*/wod.yml) into a wodsync catalog."""
    try:
        result = importer.import_wod(wod_dir, out, list(var_files), location)
    except importer.WodImportError as exc:
        raise click.ClickException(str(exc)) from None
    _print_diagnostics(result.diagnostics)
    err.print(f"imported {len(result.workshops)} workshops into {out}")
    _, found = validate(out)
    codes = Counter(d.code for d in found if d.is_error)
    if codes:
        err.print("validate reports: " + ", ".join(f"{n} {c}" for c, n in codes.most_common())
                  + f" (see `wodsync validate --root {out}`)")
    sys.exit(1 if has_errors(result.diagnostics) else 0)


@main.command("render")
@root_option
@click.argument("workshop")
@click.option("--student", "seat", type=int, required=True, help="Seat number to render for.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--host", "host_name", help="Host whose variables apply (default: first of the "
              "workshop's location).")
@click.option("--password", help="Student password to render (default: a new random one).")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of secret values (default: $WODSYNC_SECRETS, then environment).")
def render_cmd(root: Path, workshop: str, seat: int, out: Path, host_name: str | None,
               password: str | None, secrets_file: Path | None) -> None:
    """Render a workshop for one seat into OUT, exactly as it will be deployed."""
    catalog, found = validate(root)
    if has_errors(found):
        _print_diagnostics(found)
        raise click.ClickException("the catalog has errors; nothing was rendered")
    password = password or content.new_password()
    try:
        host = content.pick_host(catalog, workshop, host_name) if workshop in \
            catalog.workshops else None
        files = content.seat_content(catalog, workshop, seat, password, host,
                                     Secrets.load(secrets_file))
    except (content.ContentError, SecretError) as exc:
        raise click.ClickException(str(exc)) from None
    content.write_content(files, out)
    err.print(f"rendered {len(files)} files of {workshop} for seat {seat} "
              f"(host {host or 'none'}) into {out}; PASSSTU={password}")


@main.group("new")
def new_group() -> None:
    """Scaffold new catalog entries."""


@new_group.command("workshop")
@root_option
@click.argument("key")
@click.option("--location", help="Location (default: the first one defined).")
@click.option("--seats", "size", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="How many seats to reserve.")
@click.option("--title", help="Workshop title (default: derived from the key).")
def new_workshop_cmd(root: Path, key: str, location: str | None, size: int,
                     title: str | None) -> None:
    """Create catalog/workshops/KEY with a free seat range and a starter notebook."""
    if not re.match(WORKSHOP_KEY_RE, key):
        raise click.ClickException(f"'{key}' must match WKSHP-<Name> ({WORKSHOP_KEY_RE})")
    try:
        folder, problems = scaffold.new_workshop(root, key, location, size, title)
    except scaffold.ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        _print_diagnostics(problems)
        raise click.ClickException("the scaffold did not validate and was removed")
    err.print(f"created {folder}")


@main.command("preview")
@root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("preview"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def preview_cmd(root: Path, out: Path, as_json: bool) -> None:
    """Validate the catalog and render every workshop for its first seat (a local preview).

    Secrets are shown as placeholders: a preview needs no credentials.
    """
    catalog, found = validate(root)
    if has_errors(found):
        _print_diagnostics(found)
        raise click.ClickException("the catalog has errors")
    rendered = {}
    password = content.new_password()
    for key, ws in sorted(catalog.workshops.items()):
        host = content.pick_host(catalog, key, None)
        files = content.seat_content(catalog, key, ws.seats.first, password, host,
                                     Placeholders())
        content.write_content(files, out / key)
        rendered[key] = {"seat": ws.seats.first, "files": len(files), "path": str(out / key)}
    if as_json:
        click.echo(json.dumps({"workshops": rendered, "password": password}))
        return
    for key, info in rendered.items():
        click.echo(f"{key}: seat {info['seat']}, {info['files']} files → {info['path']}")


@main.command("demo")
@root_option
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/var/lib/wodsync-demo"), show_default=True,
              help="Where the demo keeps everything it makes.")
@click.option("--port", type=click.IntRange(1, 65533), default=8000, show_default=True,
              help="Hub port (the next two are used by the proxy API and the hub API).")
@click.option("--location", help="Location whose workshops the demo host serves "
              "(default: the one with most workshops).")
@click.option("--hub-prefix", type=click.Path(file_okay=False, path_type=Path),
              help="Hub environment to use (default: DIR/hub).")
@click.option("--pool-prefix", help="User-name prefix of the demo seats (default: the pool's).")
@click.option("--uid-base", type=click.IntRange(0, 59000), help="uid/gid base of the seats.")
@click.option("--stop", is_flag=True, help="Stop the demo's hub, proxy and servers.")
@click.option("--json", "as_json", is_flag=True, help="Print {url, username, password}.")
def demo_cmd(root: Path, folder: Path, port: int, location: str | None,
             hub_prefix: Path | None, pool_prefix: str | None, uid_base: int | None,
             stop: bool, as_json: bool) -> None:
    """Bring up a working WoD host on this machine from the example catalog (needs root).

    Installs JupyterHub (PyPI) and configurable-http-proxy (npm) under DIR, converges a local
    host, gives one seat a password and its workshop, and prints the URL and credentials.
    """
    from wodsync import demo

    opts = demo.DemoOptions(root.resolve(), folder.resolve(), port, location,
                            hub_prefix.resolve() if hub_prefix else None, pool_prefix,
                            uid_base)
    try:
        if stop:
            stopped = demo.stop_demo(opts)
            err.print(f"stopped the demo hub ({len(stopped['servers_stopped'])} servers)"
                      if stopped["hub_was_running"] else "the demo hub was not running")
            return
        result = demo.run_demo(opts, lambda line: err.print(f"demo: {line}"))
    except (demo.DemoError, SecretError) as exc:
        raise click.ClickException(str(exc)) from None
    for r in result.results:
        if r.applied:
            err.print(f"✓ {r.host}: {'; '.join(r.applied)}")
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo("\n".join(demo.lines(result)))


def _engine_hosts(root: Path, names: tuple[str, ...], secrets_file: Path | None) -> list[Any]:
    """Validated catalog → desired state of the selected hosts (all when none named)."""
    from wodsync.engine.desired import desired_state

    catalog, found = validate(root)
    if has_errors(found):
        _print_diagnostics(found)
        raise click.ClickException("the catalog has errors; fix them before planning")
    unknown = [n for n in names if n not in catalog.hosts]
    if unknown:
        raise click.ClickException(f"unknown host(s): {', '.join(unknown)}")
    try:
        secrets = Secrets.load(secrets_file)
        return [desired_state(catalog, n, secrets) for n in (names or sorted(catalog.hosts))]
    except SecretError as exc:
        raise click.ClickException(str(exc)) from None


def host_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--host", "hosts", multiple=True, help="Host to act on; repeatable "
                     "(default: every host).")(f)
    f = click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False,
                     path_type=Path), help="YAML file of secret values.")(f)
    f = click.option("--parallel", type=click.IntRange(1, 256), default=8, show_default=True,
                     help="Hosts handled at once.")(f)
    f = click.option("--allow-deletions", type=click.IntRange(0), default=None,
                     help="Accept a plan deleting up to N accounts (overrides the cap).")(f)
    return root_option(f)


def _report(results: list[Any], as_json: bool, applied: bool) -> int:
    from wodsync.engine.plan import render_plan

    plans = [r.plan for r in results if r.plan]
    if as_json:
        click.echo(json.dumps([{"host": r.host, "error": r.error,
                                "plan": r.plan.to_json() if r.plan else None,
                                "applied": r.applied, "timings": r.timings,
                                "remaining": r.after.to_json() if r.after else None}
                               for r in results], indent=2))
    else:
        click.echo(render_plan(plans))
        for r in results:
            if r.error:
                err.print(f"✗ {r.host}: {r.error}")
            elif applied and r.applied:
                left = len(r.after.actions) if r.after else 0
                err.print(f"✓ {r.host}: {'; '.join(r.applied)}"
                          + (f" — {left} actions still pending" if left else " — converged"))
    if any(not r.ok for r in results):
        return 1
    if applied:
        return 1 if any(r.after and r.after.changes for r in results) else 0
    return 2 if any(p.changes for p in plans) else 0


@main.command("plan")
@host_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(root: Path, hosts: tuple[str, ...], secrets_file: Path | None, parallel: int,
             allow_deletions: int | None, as_json: bool) -> None:
    """Show what apply would change on each host (exit 0 none, 2 changes, 1 error)."""
    from wodsync.engine.reconcile import reconcile

    desired = _engine_hosts(root, hosts, secrets_file)
    results = reconcile(desired, apply=False, parallel=parallel, allow_deletions=allow_deletions)
    sys.exit(_report(results, as_json, applied=False))


main.add_command(click.Command(
    "check", callback=plan_cmd.callback, params=plan_cmd.params,
    help="Drift check for monitoring: the plan; exit 2 when a host drifted, 1 on error."))


@main.command("apply")
@host_options
@click.option("--yes", is_flag=True, help="Apply without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def apply_cmd(root: Path, hosts: tuple[str, ...], secrets_file: Path | None, parallel: int,
              allow_deletions: int | None, yes: bool, as_json: bool) -> None:
    """Apply the plan: one batch per host, hosts in parallel, then observe again."""
    from wodsync.engine.plan import render_plan
    from wodsync.engine.reconcile import reconcile

    desired = _engine_hosts(root, hosts, secrets_file)
    if not yes:
        preview = reconcile(desired, apply=False, parallel=parallel,
                            allow_deletions=allow_deletions)
        click.echo(render_plan([r.plan for r in preview if r.plan]))
        if not any(r.plan and r.plan.changes for r in preview):
            sys.exit(_report(preview, False, applied=False))
        click.confirm("Apply these changes?", abort=True)
    results = reconcile(desired, apply=True, parallel=parallel, allow_deletions=allow_deletions)
    sys.exit(_report(results, as_json, applied=True))


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
@click.option("--fingerprint", "expected", help="Expected SHA256:… fingerprint of the host key.")
@click.option("--accept-new", is_flag=True, help="Pin whatever key the host presents now.")
def host_add_cmd(root: Path, name: str, address: str, port: int, user: str,
                 identity: str | None, location: str, pool: str, expected: str | None,
                 accept_new: bool) -> None:
    """Write hosts/NAME.yaml with the host's SSH key pinned."""
    from wodsync.catalog.loader import HOSTS_DIR
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
    try:
        key = scan_host_key(address, port)
    except TransportError as exc:
        raise click.ClickException(str(exc)) from None
    if expected and fingerprint(key) != expected:
        raise click.ClickException(f"{address}:{port} presents {fingerprint(key)}, not "
                                   f"{expected}; nothing written")
    data = {"address": address, "port": port, "user": user, "identity": identity,
            "host_key": f"{key.get_name()} {key.get_base64()}", "location": location,
            "pool": pool, "transport": "ssh"}
    data = {k: v for k, v in data.items() if v is not None}
    try:
        Host.model_validate(data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dump_yaml(data, schema.modeline(root, target, "host")), encoding="utf-8")
    err.print(f"wrote {target} (key {fingerprint(key)})")
