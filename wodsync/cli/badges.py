"""Badge commands (`wodsync badges …`): what was awarded to whom, and a new signing key.

`badges list` is the operator's view (it shows the e-mails, which no public page does);
`badges verify` a third party's check of a shared assertion (`wodsync.badges.verify`);
`badges key new FILE` writes a new RSA key to put in the secrets file as
`WODSYNC_BADGES_KEY` — written 0600, never printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wodsync.cli.common import main, say

if TYPE_CHECKING:
    from wodsync.store import Badge


@main.group("badges")
def badges_group() -> None:
    """Badges: the awarded ones, the signing key."""


@badges_group.command("list")
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path),
              help="Controller state folder (default: $WODSYNC_STATE, else /var/lib/wodsync).")
@click.option("--db", help="Store URL (default: SQLite at STATE/wodsync.db).")
@click.option("--email", help="Only this person's (case and +tag folded).")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(state: Path | None, db: str | None, email: str | None, as_json: bool) -> None:
    """Awarded badges, oldest first: id, kind, badge, recipient, session, completion."""
    from wodsync.controller import state_dir
    from wodsync.store import StoreError, open_store

    try:
        with open_store(db, state_dir=state_dir(state)) as store:
            found = store.badges.find(email)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([_json(b) for b in found], indent=2))
        return
    for b in found:
        done = "-" if b.completion is None else f"{b.completion:g}%"
        click.echo(f"{b.id}  {b.kind:8}  {b.badge:24}  {b.name} <{b.email}>  "
                   f"session {b.session_id}  {done}  {b.awarded_at:%Y-%m-%d %H:%M}")


def _json(badge: Badge) -> dict[str, object]:
    from dataclasses import asdict

    data = asdict(badge)
    data.pop("salt")
    data["awarded_at"] = data["awarded_at"].isoformat()
    return data


@badges_group.command("verify")
@click.argument("source")
@click.option("--email", help="Also check that the badge was awarded to this address.")
@click.option("--json", "as_json", is_flag=True, help="Print the verified assertion.")
def verify_cmd(source: str, email: str | None, as_json: bool) -> None:
    """Verify a signed badge as any third party would: SOURCE is its URL
    (`…/badges/ID/assertion`), a file, or `-` for stdin. Exit 0 verified, 1 not."""
    import sys

    from wodsync.badges.verify import NotVerified, fetch_bytes, verify_assertion

    try:
        if source.startswith(("https://", "http://")):
            signed = fetch_bytes(source, "application/jose").decode()
        else:
            signed = sys.stdin.read() if source == "-" else Path(source).read_text()
        found = verify_assertion(signed, email=email)
    except (NotVerified, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"NOT verified: {exc}") from None
    if found.recipient_matches is False:
        raise click.ClickException(f"NOT verified: the badge was not awarded to {email}")
    if as_json:
        click.echo(json.dumps(found.assertion, indent=2))
        return
    to = f" to {email}" if found.recipient_matches else ""
    click.echo(f"verified: {found.badge_class.get('name')} issued by "
               f"{found.issuer.get('name')} ({found.issuer.get('id')}) on "
               f"{found.assertion.get('issuedOn')}{to}")


@badges_group.group("key")
def key_group() -> None:
    """The key the badges' assertions are signed with."""


@key_group.command("new")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def key_new_cmd(file: Path) -> None:
    """Write a new RSA private key (PEM) to FILE (mode 0600; an existing file is refused), to
    paste into the secrets file as WODSYNC_BADGES_KEY. A new key makes the assertions signed
    with the old one unverifiable."""
    from wodsync.badges.keys import KEY_SECRET, new_key_pem

    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot write {file}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(new_key_pem())
    say(f"wrote a new badge signing key to {file}: put it in the secrets file as "
        f"{KEY_SECRET}: {{value: |\n  <the PEM>}}")
