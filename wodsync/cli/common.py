"""What every command shares: the error console, common options, exit codes, diagnostics.

Exit codes, one convention for every command (the README lists them): 0 success (converged,
valid, no changes); 1 failure (invalid catalog, a host failed or was refused); 2 changes pending
(`plan`, `check`: drift); 64 usage error (a typo on the command line is never read as drift).
Imports stay light here: `wodsync --help` must not pay for pydantic, fabric or paramiko.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from wodsync.catalog import Catalog
    from wodsync.diagnostics import Diagnostic
    from wodsync.secrets import Secrets

EXIT_OK, EXIT_FAILED, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2, 64
ROOT_HELP = "Repository root holding catalog/, hosts/ and templates/."


@cache
def err() -> Console:
    """Human-facing messages go to stderr; stdout is for data (plans, JSON)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    err().print(message, markup=False)


def root_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--root", type=click.Path(file_okay=False, path_type=Path),
                        default=Path(), show_default=True, help=ROOT_HELP)(f)


DB_ENV = "WODSYNC_DB"


def db_option(default_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--db`, also read from $WODSYNC_DB: a PostgreSQL URL holds a password, which belongs in
    a root-only environment file, not on a command line (`ps`) or in a unit's ExecStart."""
    return click.option("--db", envvar=DB_ENV, show_envvar=True,
                        help=f"Store URL (default: {default_help}).")


def store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--state` (the controller's folder) and `--db`: where a command finds the store."""
    f = db_option("SQLite at STATE/wodsync.db")(f)
    return click.option("--state", "--state-dir", "state",
                        type=click.Path(file_okay=False, path_type=Path),
                        help="Controller state folder (default: $WODSYNC_STATE, else "
                             "/var/lib/wodsync).")(f)


def secrets_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False,
                        path_type=Path), help="YAML file of secret values (default: "
                        "$WODSYNC_SECRETS).")(f)


def print_diagnostics(found: list[Diagnostic], fmt: str = "text") -> None:
    from wodsync.diagnostics import format_diagnostics

    if found:
        click.echo(format_diagnostics(found, fmt))


def load_secrets(path: Path | None) -> Secrets:
    """The secrets file, or a clear error (never a traceback) when it is missing or broken."""
    from ruamel.yaml.error import YAMLError

    from wodsync.secrets import SecretError, Secrets

    try:
        return Secrets.load(path)
    except SecretError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"secrets file {path}: {exc.strerror or exc}") from None
    except (YAMLError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"secrets file {path} is not valid YAML: {first}") from None


def valid_catalog(root: Path, what: str) -> Catalog:
    """The validated catalog, or its errors printed and exit 1."""
    from wodsync.catalog import validate
    from wodsync.diagnostics import has_errors

    catalog, found = validate(root)
    if has_errors(found):
        print_diagnostics(found)
        raise click.ClickException(f"the catalog has errors; {what}")
    return catalog


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wodsync")
def main() -> None:
    """wodsync: GitOps reconciler for Workshops-on-Demand JupyterHub hosts.

    Exit codes: 0 success, 1 failure, 2 changes pending (plan, check), 64 usage error.
    """
