"""The loop of the serving process that sends the outbox's mails.

Why a loop beside the API and not a send in the request: the SMTP server may be slow or away,
and a participant's CREATE must neither wait for it nor lose its mail. The loop claims due mails
(a compare-and-set with a lease: another sender on the same store, or this one restarted, never
takes a mail while its lease runs), renders each as the store is now, hands it to SMTP and marks
it sent. A refused or failed send is queued again with exponential back-off up to a cap; after
`max_attempts` (or at once for a permanent 5xx refusal) it is `failed`, for an operator's
`wodsync mail retry`. A process killed between the claim and the mark leaves the mail to be
claimed again once its lease is over: sent at least once, with the same Message-ID.
"""

from __future__ import annotations

import logging
import os
import secrets as token
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

from wodsync.background import Background
from wodsync.mail import triggers
from wodsync.mail.compose import Drop, compose
from wodsync.mail.settings import MailSettings
from wodsync.secrets import SecretError, Secrets
from wodsync.store import Store
from wodsync.store.outbox import Mail

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog

log = logging.getLogger("wodsync.mail")
POLL_SECONDS = 1.0
# Tests only: a file path; after each claim the sender writes the claimed ids there and waits
# while the file exists — a window between "claimed" and "sent" a test can kill the process in.
PAUSE_ENV = "WODSYNC_MAIL_PAUSE_AFTER_CLAIM"
CatalogFn = Callable[[], "Catalog | None"]
ResultFn = Callable[[str, str], None]  # (kind, outcome: sent | retry | failed | dropped)


class SendError(Exception):
    """A mail SMTP did not take; `permanent` when retrying cannot help (a 5xx refusal)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def smtp_password(settings: MailSettings, secrets: Secrets) -> str | None:
    if settings.smtp.password is None:
        return None
    return secrets.for_service("mail").resolve(settings.smtp.password)


def deliver(settings: MailSettings, secrets: Secrets, message: EmailMessage) -> None:
    """Hand one message to the SMTP server of `settings`, or raise a `SendError` saying why
    (never with the password)."""
    smtp = settings.smtp
    context = ssl.create_default_context()
    try:
        password = smtp_password(settings, secrets)
        client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                                context=context) \
            if smtp.security == "tls" else smtplib.SMTP(smtp.host, smtp.port,
                                                        timeout=smtp.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.user and password is not None:
                client.login(smtp.user, password)
            client.send_message(message)
    except SecretError as exc:
        raise SendError(f"SMTP password: {exc}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise SendError(f"recipient refused: {_reply(*next(iter(exc.recipients.values())))}",
                        permanent=all(c >= 500 for c in codes)) from None
    except smtplib.SMTPResponseException as exc:
        raise SendError(f"SMTP {_reply(exc.smtp_code, exc.smtp_error)}",
                        permanent=exc.smtp_code >= 500) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SendError(f"SMTP {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}") from None


def _reply(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(said.split())}"


def backoff(settings: MailSettings, attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from `backoff_seconds`, capped."""
    s = settings.sending
    return timedelta(seconds=min(s.backoff_seconds * 2 ** max(attempts - 1, 0),
                                 s.max_backoff_seconds))


def new_owner() -> str:
    """Who holds a lease: this host and process, and a random part for two senders in it."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{token.token_hex(4)}"


class Sender(Background):
    """Sends the outbox of `store` with the mail settings of `catalog()` (nothing while it
    gives None or a catalog without mail settings). `smtp` overrides their server."""

    def __init__(self, store: Store, catalog: CatalogFn, secrets: Secrets, *,
                 smtp: tuple[str, int] | None = None, poll: float = POLL_SECONDS,
                 on_result: ResultFn | None = None) -> None:
        super().__init__("mail-sender")
        self.store, self.catalog, self.secrets = store, catalog, secrets
        self.smtp, self.poll, self.on_result = smtp, poll, on_result
        self.owner = new_owner()

    def settings(self, catalog: Catalog | None) -> MailSettings | None:
        settings: MailSettings | None = getattr(catalog, "mail", None)
        if settings is not None and self.smtp is not None:
            settings = settings.with_server(*self.smtp)
        return settings

    # -- one round ------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Claim the due mails and send each; how many were claimed."""
        catalog = self.catalog()
        settings = self.settings(catalog)
        if catalog is None or settings is None:
            return 0
        lease = timedelta(seconds=settings.sending.lease_seconds)
        mails = self.store.outbox.claim(self.owner, lease, limit=settings.sending.batch,
                                        now=now)
        if mails:
            _pause_for_tests(mails)
        for mail in mails:
            self._send_one(catalog, settings, mail)
        return len(mails)

    def _send_one(self, catalog: Catalog, settings: MailSettings, mail: Mail) -> None:
        try:
            message = compose(self.store, catalog, settings, mail)
            if isinstance(message, Drop):
                self.store.outbox.mark_dropped(mail.id, self.owner, message.reason)
                log.info("mail %d (%s) dropped: %s", mail.id, mail.kind, message.reason)
                return self._result(mail.kind, "dropped")
            deliver(settings, self.secrets, message)
        except SendError as exc:
            return self._retry(settings, mail, str(exc), exc.permanent)
        except Exception as exc:  # a template or the store: retried, said in the row
            return self._retry(settings, mail, f"{type(exc).__name__}: {exc}", False)
        self.store.outbox.mark_sent(mail.id, self.owner)
        log.info("mail %d (%s) sent", mail.id, mail.kind)
        self._result(mail.kind, "sent")

    def _retry(self, settings: MailSettings, mail: Mail, error: str, permanent: bool) -> None:
        give_up = permanent or mail.attempts >= settings.sending.max_attempts
        self.store.outbox.mark_retry(mail.id, self.owner, error,
                                     backoff(settings, mail.attempts), give_up=give_up)
        log.warning("mail %d (%s) attempt %d: %s%s", mail.id, mail.kind, mail.attempts, error,
                    " — failed, given up" if give_up else "")
        self._result(mail.kind, "failed" if give_up else "retry")

    def _result(self, kind: str, outcome: str) -> None:
        if self.on_result is not None:
            self.on_result(kind, outcome)

    # -- the loop -------------------------------------------------------------------------------

    def _wake(self) -> None:
        triggers.queued.set()  # the loop waits for a queued mail, not for `_stop`

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
            except Exception as exc:  # the store away a moment: said, and tried again
                log.warning("mail sender: %s: %s", type(exc).__name__, exc)
            triggers.queued.wait(self._wait())
            triggers.queued.clear()

    def _wait(self) -> float:
        """Until the next queued mail is due, at most `poll` seconds."""
        try:
            due = self.store.outbox.next_due()
        except Exception:
            return self.poll
        if due is None:
            return self.poll
        return max(0.0, min(self.poll, (due - datetime.now(UTC)).total_seconds()))


def _pause_for_tests(mails: list[Mail]) -> None:
    path = os.environ.get(PAUSE_ENV)
    if not path:
        return
    marker = Path(path)
    marker.write_text(" ".join(str(m.id) for m in mails) + "\n")
    while marker.exists():
        time.sleep(0.05)
