"""A local SMTP server that keeps every message it receives in a Maildir.

Why: the tests and the demo need a real SMTP server to send to and a place to read what
arrived, with nothing leaving the machine. `aiosmtpd` speaks SMTP; each message is stored
with `mailbox.Maildir` (one file per message, written atomically), a `Delivered-To:` line per
envelope recipient on top as a delivery agent adds. `refuse` answers the first N messages with
a temporary failure (`451`), as a busy server does, so the sender's retry is tested for real.

    with Sink(Path("mail"), port=2525) as sink:        # in a thread (tests)
        ...
    wodsync mail sink --maildir mail --port 2525          # as a process (the demo)
"""

from __future__ import annotations

import mailbox
import socket
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, try again later"
ACCEPTED = "250 2.0.0 Message accepted"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MaildirHandler:
    """aiosmtpd's handler: each DATA stored in the Maildir, or refused while `refuse` > 0."""

    def __init__(self, maildir: Path, refuse: int = 0) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.refuse = refuse
        self.refused = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.refused < self.refuse:
                self.refused += 1
                return TEMPORARY_FAILURE
            content: bytes = envelope.original_content or b""
            delivered = "".join(f"Delivered-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
            self.maildir.add(delivered.encode() + content)
        return ACCEPTED


class Sink:
    """The sink on `host:port` (a free port when 0) in a thread of this process."""

    def __init__(self, maildir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 refuse: int = 0) -> None:
        self.path = Path(maildir)
        self.handler = MaildirHandler(self.path, refuse)
        self.host, self.port = host, port or free_port(host)
        self.controller = Controller(self.handler, hostname=host, port=self.port)

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self) -> list[EmailMessage]:
        return read_maildir(self.path)


def read_maildir(path: Path) -> list[EmailMessage]:
    """Every message of the Maildir at `path`, in the order delivered, parsed with the modern
    policy (the `Delivered-To:` lines on top)."""
    box = mailbox.Maildir(path, create=False)
    found: list[tuple[float, str, EmailMessage]] = []
    for key, stored in box.items():
        msg = message_from_bytes(box.get_bytes(key), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        found.append((stored.get_date(), key, msg))
    return [msg for _, _, msg in sorted(found, key=lambda f: (f[0], f[1]))]

