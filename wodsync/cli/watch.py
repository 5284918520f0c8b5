"""The author's command `wodsync watch`: a live check of a working tree.

The daemon's own command (`wodsync daemon`, and its `--print-unit` from `wodsync.daemon.unit`)
lives with the daemon; this module only holds what an author runs before committing.
"""

from __future__ import annotations

from pathlib import Path

import click

from wodsync.cli.common import main, root_option, secrets_option


@main.command("watch")
@root_option
@secrets_option
@click.option("--facts", "facts_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Folder of facts the daemon observed (<host>.json): plan "
              "a preview from them, without SSH. Default: observe the hosts read-only.")
@click.option("--debounce", type=click.FloatRange(0.05, 10), default=0.3, show_default=True,
              help="Seconds of quiet after a save before reviewing.")
def watch_cmd(root: Path, secrets_file: Path | None, facts_dir: Path | None,
              debounce: float) -> None:
    """Re-validate the working tree and print the plan on every save; never applies.

    Watches catalog/, hosts/ and templates/ under ROOT. Errors are printed at their
    file:line:col; a valid tree prints the plan. Ctrl-C stops.
    """
    from wodsync.authoring.watch import watch_tree

    if not root.is_dir():
        raise click.ClickException(f"{root} is not a folder")
    watch_tree(root, lambda line: click.echo(line), facts_dir=facts_dir,
               secrets_file=secrets_file, debounce=debounce)
