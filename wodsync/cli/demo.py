"""`wodsync demo`: a working WoD host on this machine, in one command."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wodsync.cli.common import err, main, root_option


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
    from wodsync.engine.remote import HostError
    from wodsync.secrets import SecretError

    opts = demo.DemoOptions(root.resolve(), folder.resolve(), port, location,
                            hub_prefix.resolve() if hub_prefix else None, pool_prefix,
                            uid_base)
    try:
        if stop:
            stopped = demo.stop_demo(opts)
            err().print(f"stopped the demo hub ({len(stopped['servers_stopped'])} servers)"
                        if stopped["hub_was_running"] else "the demo hub was not running")
            return
        result = demo.run_demo(opts, lambda line: err().print(f"demo: {line}"))
    except (demo.DemoError, SecretError, HostError) as exc:
        raise click.ClickException(str(exc)) from None
    for r in result.results:
        if r.applied:
            err().print(f"✓ {r.host}: {'; '.join(r.applied)}")
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo("\n".join(demo.lines(result)))
