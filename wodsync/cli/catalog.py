"""Catalog commands: validate, schema, import, render, new workshop, preview."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import click

from wodsync.cli.common import (
    err,
    load_secrets,
    main,
    print_diagnostics,
    root_option,
    secrets_option,
    valid_catalog,
)

DEFAULT_LOCATION = "default"   # importer.DEFAULT_LOCATION, here so --help imports nothing


@main.command("validate")
@root_option
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github prints ::error annotations for pull requests.")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Secrets file: warn about each secret a workshop or host uses without its "
                   "grant (names only, never values). Without it nothing is said about grants.")
def validate_cmd(root: Path, fmt: str, secrets_file: Path | None) -> None:
    """Validate the whole catalog and host inventory; exit 1 on any error."""
    from wodsync.catalog import validate
    from wodsync.catalog.templates import check_secret_grants
    from wodsync.diagnostics import format_diagnostics, has_errors

    secrets = load_secrets(secrets_file) if secrets_file else None
    catalog, found = validate(root)
    if secrets is not None:
        found = sorted(set(found).union(check_secret_grants(catalog, secrets)))
    if fmt == "json":
        click.echo(format_diagnostics(found, "json"))
    else:
        print_diagnostics(found, fmt)
        errors = sum(d.is_error for d in found)
        summary = (f"{len(catalog.workshops)} workshops, {len(catalog.hosts)} hosts: "
                   f"{errors} errors, {len(found) - errors} warnings")
        err().print(("✗ " if errors else "✓ ") + summary)
    sys.exit(1 if has_errors(found) else 0)


@main.command("schema")
@root_option
@click.option("--check", is_flag=True, help="Exit 1 if schemas/ is stale instead of writing.")
def schema_cmd(root: Path, check: bool) -> None:
    """Write schemas/*.json from the models."""
    from wodsync.catalog import schema

    if check:
        stale = schema.stale(root)
        for name in stale:
            click.echo(f"{schema.SCHEMAS_DIR}/{name}: stale; run `wodsync schema`")
        sys.exit(1 if stale else 0)
    changed = schema.write(root)
    err().print(f"{len(changed)} schema files written" if changed else "schemas are up to date")


@main.command("import")
@click.argument("wod_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to create the catalog in (must not hold a catalog/ yet).")
@click.option("--vars", "var_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="WoD group_vars file(s) with global variables; repeatable.")
@click.option("--location", default=DEFAULT_LOCATION, show_default=True,
              help="Location of workshops whose wod.yml names none.")
@click.option("--replan-seats", is_flag=True,
              help="Pack overlapping seat ranges (and those outside the pool) into the pool "
                   "without overlap; prints the mapping old → new.")
@click.option("--templates", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="templates/ to copy (the hub's configuration and unit); default: this "
                   "wodsync checkout's, when there is one.")
def import_cmd(wod_dir: Path, out: Path, var_files: tuple[Path, ...], location: str,
               replan_seats: bool, templates: Path | None) -> None:
    """Convert a WoD notebooks tree (WKSHP-*/wod.yml) into a catalog, a hosts skeleton and the
    checklist of what the operator must still decide."""
    from wodsync.authoring import importer
    from wodsync.catalog import validate
    from wodsync.diagnostics import has_errors

    try:
        result = importer.import_wod(wod_dir, out, list(var_files), location, replan_seats,
                                     templates or _checkout_templates())
    except importer.WodImportError as exc:
        raise click.ClickException(str(exc)) from None
    print_diagnostics(result.diagnostics)
    err().print(f"imported {len(result.workshops)} workshops into {out}")
    for move in result.moves:
        click.echo(f"seats {move.text()}")
    click.echo("What you must still decide (`wodsync validate` names every placeholder):")
    click.echo(result.checklist.text())
    _, found = validate(out)
    codes = Counter(d.code for d in found if d.is_error)
    if codes:
        err().print("validate reports: " + ", ".join(f"{n} {c}" for c, n in codes.most_common())
                    + f" (see `wodsync validate --root {out}`)")
    sys.exit(1 if has_errors(result.diagnostics) else 0)


def _checkout_templates() -> Path | None:
    """The templates/ of the wodsync checkout this package runs from, if it is one."""
    import wodsync

    found = Path(wodsync.__file__).resolve().parent.parent / "templates"
    return found if (found / "hub").is_dir() else None


@main.command("render")
@root_option
@click.argument("workshop")
@click.option("--student", "seat", type=int, required=True, help="Seat number to render for.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--host", "host_name", help="Host whose variables apply (default: first of the "
              "workshop's location).")
@click.option("--password", help="Student password to render (default: a new random one).")
@secrets_option
def render_cmd(root: Path, workshop: str, seat: int, out: Path, host_name: str | None,
               password: str | None, secrets_file: Path | None) -> None:
    """Render a workshop for one seat into OUT, exactly as it will be deployed."""
    from wodsync.render import content
    from wodsync.secrets import SecretError

    catalog = valid_catalog(root, "nothing was rendered")
    password = password or content.new_password()
    secrets = load_secrets(secrets_file)
    try:
        host = content.pick_host(catalog, workshop, host_name) if workshop in \
            catalog.workshops else None
        files = content.seat_content(catalog, workshop, seat, password, host, secrets)
    except (content.ContentError, SecretError) as exc:
        raise click.ClickException(str(exc)) from None
    content.write_content(files, out)
    err().print(f"rendered {len(files)} files of {workshop} for seat {seat} "
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
    from wodsync.authoring import scaffold
    from wodsync.catalog.models import WORKSHOP_KEY_RE

    if not re.match(WORKSHOP_KEY_RE, key):
        raise click.ClickException(f"'{key}' must match WKSHP-<Name> ({WORKSHOP_KEY_RE})")
    try:
        folder, problems = scaffold.new_workshop(root, key, location, size, title)
    except scaffold.ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        print_diagnostics(problems)
        raise click.ClickException("the scaffold did not validate and was removed")
    err().print(f"created {folder}")


@main.command("preview")
@root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("preview"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def preview_cmd(root: Path, out: Path, as_json: bool) -> None:
    """Validate the catalog and render every workshop for its first seat (a local preview).

    Secrets are shown as placeholders: a preview needs no credentials.
    """
    from wodsync.render import content
    from wodsync.secrets import Placeholders

    catalog = valid_catalog(root, "nothing was rendered")
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
