"""`wodsync demo`: a working WoD host on this machine, in one command."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wodsync.cli.common import err, main, root_option, say


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
@click.option("--api-port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port of the daemon's API on 127.0.0.1.")
@click.option("--mail-port", type=click.IntRange(1, 65535), default=2525, show_default=True,
              help="Port of the demo's SMTP sink on 127.0.0.1 (its mails go to a Maildir).")
@click.option("--stop", is_flag=True, help="Stop the demo's daemon, mail sink, hub, proxy and "
                                           "servers.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--force-manager", is_flag=True, help="Let the demo's daemon take over this "
              "machine when another store's daemon manages it (logged on the host).")
def demo_cmd(root: Path, folder: Path, port: int, location: str | None,
             hub_prefix: Path | None, pool_prefix: str | None, uid_base: int | None,
             api_port: int, mail_port: int, stop: bool, as_json: bool,
             force_manager: bool) -> None:
    """The GitOps loop on this machine, from the example catalog (needs root).

    Writes a git repository of the example catalog with this machine as a local host, starts
    `wodsync daemon` following it, waits until the daemon has converged the host (JupyterHub from
    PyPI, configurable-http-proxy from npm, seats, hub users), creates a session through the
    daemon's API and prints the hub URL and credentials, the registration page, the Maildir
    where a local SMTP sink keeps the demo's mails, the API and the repository.
    """
    from wodsync import demo
    from wodsync.engine.remote import HostError
    from wodsync.secrets import SecretError

    opts = demo.DemoOptions(root.resolve(), folder.resolve(), port, api_port, mail_port,
                            location, hub_prefix.resolve() if hub_prefix else None,
                            pool_prefix, uid_base, force_manager)
    try:
        if stop:
            stopped = demo.stop_demo(opts)
            daemon = "stopped the demo daemon; " if stopped["daemon_was_running"] else ""
            daemon += "stopped the mail sink; " if stopped["sink_was_running"] else ""
            err().print(daemon + (f"stopped the demo hub ({len(stopped['servers_stopped'])} "
                                  "servers)" if stopped["hub_was_running"]
                                  else "the demo hub was not running"))
            return
        from wodsync.progress import shown

        with shown() as progress:  # the daemon's steps: a first install takes minutes
            result = demo.run_demo(opts, lambda line: say(f"demo: {line}"), progress)
    except (demo.DemoError, SecretError, HostError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo("\n".join(demo.lines(result)))
