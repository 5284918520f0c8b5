"""`wodsync mail …`: the outbox (list, retry), a template's preview, the local SMTP sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wodsync.cli.common import main, root_option, say

if TYPE_CHECKING:
    from wodsync.store.outbox import Mail

STATES = ("queued", "sending", "sent", "failed", "dropped")
KINDS = ("confirm", "credentials", "expiring", "ended", "failed", "operator")


def _store_options(f: Any) -> Any:
    f = click.option("--db", help="Store URL (default: SQLite at STATE/wodsync.db).")(f)
    return click.option("--state-dir", "state", type=click.Path(file_okay=False,
                        path_type=Path), help="Controller state folder (default: "
                        "$WODSYNC_STATE, else /var/lib/wodsync).")(f)


@main.group("mail")
def mail_group() -> None:
    """Lifecycle e-mails: the outbox, template previews, a local SMTP sink."""


def _row(mail: Mail) -> dict[str, Any]:
    """What `mail list` shows of a mail: never its context's internals beyond the workshop."""
    return {"id": mail.id, "kind": mail.kind, "to": mail.to, "session": mail.session_id,
            "state": mail.state.value, "attempts": mail.attempts,
            "created_at": mail.created_at.isoformat(),
            "next_attempt_at": mail.next_attempt_at.isoformat(),
            "sent_at": mail.sent_at.isoformat() if mail.sent_at else None,
            "error": mail.last_error}


@mail_group.command("list")
@_store_options
@click.option("--state", "mail_state", type=click.Choice(STATES), help="Only mails in STATE.")
@click.option("--kind", type=click.Choice(KINDS), help="Only mails of KIND.")
@click.option("--session", "session_id", help="Only the mails of one session.")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(state: Path | None, db: str | None, mail_state: str | None, kind: str | None,
             session_id: str | None, as_json: bool) -> None:
    """The outbox, oldest first: what was sent, what waits (and why), what failed."""
    from wodsync.cli.report import reading_store
    from wodsync.store.outbox import OutboxState

    with reading_store(state, db) as store:
        mails = store.outbox.list(state=OutboxState(mail_state) if mail_state else None,
                                  kind=kind, session_id=session_id)
    rows = [_row(m) for m in mails]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        when = r["sent_at"] or r["next_attempt_at"]
        line = (f"{r['id']:>6}  {r['state']:<8} {r['kind']:<11} {r['to']:<32} "
                f"session {r['session'] or '-':<12} tries {r['attempts']}  {when[:19]}")
        click.echo(line + (f"  {r['error']}" if r["error"] else ""))
    if not rows:
        say("no mail")


@mail_group.command("retry")
@_store_options
@click.argument("mail_ids", nargs=-1, type=int)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed mail.")
def retry_cmd(state: Path | None, db: str | None, mail_ids: tuple[int, ...],
              all_failed: bool) -> None:
    """Queue failed mails again (their attempts counted afresh), due now."""
    from wodsync.cli.report import reading_store

    if bool(mail_ids) == all_failed:
        raise click.UsageError("give mail IDs or --failed")
    with reading_store(state, db) as store:
        moved = store.outbox.retry(None if all_failed else mail_ids)
        if mail_ids:
            for missing in sorted(set(mail_ids) - set(moved)):
                found = store.outbox.get(missing)
                say(f"mail {missing}: " + (f"is {found.state.value}, not failed: left as it is"
                                           if found else "no such mail"))
    say(f"queued again: {', '.join(map(str, moved)) or 'none'}")
    if mail_ids and len(moved) < len(set(mail_ids)):
        raise SystemExit(1)


@mail_group.command("preview")
@root_option
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--workshop", help="The workshop of the sample (default: the first).")
@click.option("--html", "show_html", is_flag=True, help="Print the HTML part, not the text.")
def preview_cmd(root: Path, kind: str, workshop: str | None, show_html: bool) -> None:
    """Print a KIND mail of the catalog at --root, rendered with sample values: headers, then
    the text (or --html) part."""
    from datetime import UTC, datetime

    from wodsync.cli.common import valid_catalog
    from wodsync.mail.compose import build_message, message_id, render_parts, sample_context
    from wodsync.mail.settings import MailSettings

    catalog = valid_catalog(root, "fix them to preview its mails")
    if workshop is not None and workshop not in catalog.workshops:
        raise click.BadParameter(f"no workshop {workshop!r} in the catalog",
                                 param_hint="--workshop")
    settings = catalog.mail or MailSettings.model_validate({"from": "wodsync@localhost"})
    subject, text, html = render_parts(catalog.mail_templates, kind,
                                       sample_context(catalog, kind, workshop))
    msg = build_message(settings, "ada@example.org", subject, text, html,
                        message_id(1, f"{kind}:sample", settings.message_domain),
                        datetime.now(UTC))
    for name in ("Subject", "From", "To", "Reply-To", "Date", "Message-ID"):
        if msg[name]:
            click.echo(f"{name}: {msg[name]}")
    click.echo("")
    click.echo(html if show_html else text, nl=False)


@mail_group.command("sink")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Maildir the messages are stored in (made if missing).")
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
@click.option("--refuse", type=click.IntRange(0), default=0,
              help="Answer the first N messages 451 (try again later), as a busy server.")
def sink_cmd(maildir: Path, listen: str, port: int, refuse: int) -> None:
    """A local SMTP server keeping every message in a Maildir (tests, the demo); until
    SIGTERM or Ctrl-C."""
    import signal
    import threading

    from wodsync.mail.sink import Sink

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sink = Sink(maildir, host=listen, port=port, refuse=refuse).start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}:{port}: {exc}") from None
    say(f"SMTP sink on {listen}:{port}, storing in {maildir.resolve()}")
    try:
        stop.wait()
    finally:
        sink.stop()
