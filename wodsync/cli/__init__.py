"""The `wodsync` command line: thin wrappers that call the pipeline and set exit codes.

One module per group of commands (`badges`, `catalog`, `engine`, `sessions`, `seats`, `guard`,
`report`, `review`, `contentci`, `watch`, `daemon`, `demo`, `mail`, `tokens`, `store`);
each imports the heavy parts of wodsync inside its commands, so `wodsync --help` stays fast.
"""

from __future__ import annotations

import sys

import click

# Each module registers its commands on `main`.
from wodsync.cli import (  # noqa: F401
    badges,
    catalog,
    contentci,
    daemon,
    demo,
    engine,
    events,
    guard,
    mail,
    report,
    review,
    seats,
    sessions,
    store,
    tokens,
    watch,
)
from wodsync.cli.common import EXIT_USAGE, main

__all__ = ["main", "run"]


def run() -> None:
    """Console entry point: click's usage errors exit 64, not 2 (2 means drift)."""
    try:
        main.main(standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
