"""Token commands (`wodsync token new|list|revoke`): the API's tokens and their roles.

A token's value is printed once, on stdout alone (so `… > file` keeps it and nothing else), and
never stored: the store keeps its SHA-256 (`wodsync.tokens` says why that is enough). Rotation
is `new`, switch the client, `revoke`: both tokens are valid in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wodsync.cli.common import main, say, store_options
from wodsync.tokens import ROLE_HELP, Role

if TYPE_CHECKING:
    from wodsync.store import Store

ROLES = ", ".join(f"{r.value} ({ROLE_HELP[r]})" for r in Role)


@contextmanager
def token_store(state: Path | None, db: str | None) -> Iterator[Store]:
    """The store the daemon and `serve` read their tokens from (created if new, as they do)."""
    from wodsync.controller import state_dir
    from wodsync.store import StoreError, open_store

    folder = state_dir(state)
    try:
        if db is None:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = open_store(db, state_dir=folder)
    except (StoreError, OSError) as exc:
        raise click.ClickException(f"the store: {exc}") from None
    try:
        yield store
    finally:
        store.close()


@main.group("token")
def token_group() -> None:
    """API tokens: several valid at once, each with a role."""


@token_group.command("new")
@store_options
@click.argument("name")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]),
              help=f"What the token may do: {ROLES}.")
def new_cmd(state: Path | None, db: str | None, name: str, role: str) -> None:
    """Make token NAME with ROLE; prints its value once (stdout), never kept."""
    from wodsync.store import StoreError
    from wodsync.tokens import TokenError, check_name, check_role, digest, new_value

    try:
        check_name(name)
        chosen = check_role(role)
    except TokenError as exc:
        raise click.UsageError(str(exc)) from None
    value = new_value()
    with token_store(state, db) as store:
        try:
            store.tokens.add(name, chosen, digest(value))
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(value)
    say(f"token {name} ({chosen.value}: {ROLE_HELP[chosen]}) made; it is shown this once. "
        "The API accepts it within 5 s (at once after SIGHUP). Switch the client to it, then "
        "revoke the token it replaces.")


@token_group.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True)
def list_cmd(state: Path | None, db: str | None, as_json: bool) -> None:
    """The stored tokens: name, role, when made (never a value)."""
    with token_store(state, db) as store:
        found = store.tokens.all()
    if as_json:
        click.echo(json.dumps([{"name": t.name, "role": t.role.value,
                                "created_at": t.created_at.isoformat()} for t in found],
                              indent=2))
        return
    rows = [("NAME", "ROLE", "CREATED")] + [
        (t.name, t.role.value, t.created_at.strftime("%Y-%m-%d %H:%M:%SZ")) for t in found]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}")
    say(f"{len(found)} tokens (and WODSYNC_API_TOKEN / WODSYNC_FACTS_TOKEN where set)")


@token_group.command("revoke")
@store_options
@click.argument("name")
def revoke_cmd(state: Path | None, db: str | None, name: str) -> None:
    """Token NAME stops being valid: within 5 s on every process serving the API on this
    store, at once on one sent SIGHUP."""
    from wodsync.store import StoreError

    with token_store(state, db) as store:
        try:
            store.tokens.revoke(name)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    say(f"token {name} revoked")
