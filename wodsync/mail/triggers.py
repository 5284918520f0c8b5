"""Which session moves cause which mails, written in the move's own transaction.

Why a move hook of the store: the mail and the state change that causes it must commit
together — a CREATE that reached `active` and a credentials mail nobody will ever send is the
failure this prevents, as is a mail about a move that rolled back. Every process that moves
sessions (the daemon, `wodsync serve`, the CLI) installs the hook through its session service,
so a CLI CREATE queues the mail that the serving process then sends. Mail is on when the
deployed catalog has `catalog/mail.yaml`; without it, nothing is queued and sessions behave as
before.

- credentials: a CREATE reached `active`;
- expiring: the session was marked as ending soon (each marking, so after an extension another);
- ended: the session reached `ended` or `held` having started (CLEANUP, expiry, PURGE);
- failed: a CREATE failed — to the participant, and an `operator` mail to each operator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from wodsync.mail.settings import MailSettings
from wodsync.store import Moved, Sessions, SessionState
from wodsync.store.models import after_commit
from wodsync.store.outbox import OutboxError, enqueue

S = SessionState
log = logging.getLogger("wodsync.mail")
SettingsFn = Callable[[], "MailSettings | None"]
# Set when a mail is queued in this process: the sender wakes instead of waiting its poll.
queued = threading.Event()


def mails_for(moved: Moved, settings: MailSettings) -> list[dict[str, Any]]:
    """The mails a move causes: enqueue's arguments, each with its dedup key."""
    s = moved.session
    if "@" not in (s.email or ""):
        return []
    base = {"to": s.email, "session_id": s.id, "context": {"workshop": s.workshop}}
    if moved.event == "expiring":
        mark = s.expiring_at.isoformat() if s.expiring_at else ""
        return [{**base, "kind": "expiring", "key": f"expiring:{s.id}:{mark}"}]
    if moved.before is S.CREATING and s.state is S.ACTIVE:
        return [{**base, "kind": "credentials", "key": f"credentials:{s.id}"}]
    if s.state in (S.ENDED, S.HELD) and s.started_at is not None:
        return [{**base, "kind": "ended", "key": f"ended:{s.id}"}]
    if moved.before is S.CREATING and s.state is S.FAILED:
        notice = {"workshop": s.workshop, "event": "CREATE failed"}
        return [{**base, "kind": "failed", "key": f"failed:{s.id}"}] + [
            {"to": address, "session_id": s.id, "context": notice, "kind": "operator",
             "key": f"operator:failed:{s.id}:{n}"}
            for n, address in enumerate(settings.operators)]
    return []


class MailHook:
    """The move hook of one store's sessions; `settings` says whether mail is on now."""

    def __init__(self, settings: SettingsFn) -> None:
        self.settings = settings

    def __call__(self, conn: Connection, moved: Moved) -> None:
        settings = self.settings()
        if settings is None:
            return
        for mail in mails_for(moved, settings):
            kind, to = mail.pop("kind"), mail.pop("to")
            try:
                enqueue(conn, kind, to, **mail)
            except OutboxError as exc:  # checked before writing: the move goes on without it
                log.warning("mail: %s mail of session %s not queued: %s", kind,
                            moved.session.id, exc)
                continue
            after_commit(conn, queued.set)  # the sender wakes once the mail is there


def install(sessions: Sessions, settings: SettingsFn) -> MailHook:
    """Queue mails on the moves of `sessions` while `settings()` gives settings. One hook per
    store: installing again only replaces where the settings come from."""
    for hook in sessions.hooks:
        if isinstance(hook, MailHook):
            hook.settings = settings
            return hook
    hook = MailHook(settings)
    sessions.hooks.append(hook)
    return hook
