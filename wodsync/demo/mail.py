"""The demo's mail: a local SMTP sink (`wodsync mail sink`) that keeps every message in a
Maildir, and the demo catalog's mail settings pointing to it, so a newcomer can register on
the demo's page, read the confirmation and credentials mails and click through — with nothing
leaving the machine.

The sink runs in a session of its own, as the daemon does (it outlives `wodsync demo`); a
rerun finds it listening and keeps it; `--stop` stops it with the rest.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from wodsync.catalog.yamlfile import dump_yaml
from wodsync.demo.pidfile import running, terminate
from wodsync.demo.repo import DemoError

MAILDIR = "mail"
PID_FILE = "mail-sink.pid"
LOG_FILE = "mail-sink.log"
SETTINGS = "catalog/mail.yaml"
FROM = "WoD demo <workshops@wodsync.invalid>"
START_SECONDS = 30.0  # an upper bound for the sink to listen, not a performance figure


def register_url(api_port: int) -> str:
    """The registration page the demo's daemon serves."""
    return f"http://127.0.0.1:{api_port}/register"


def write_settings(repo: Path, mail_port: int, api_port: int) -> None:
    """`catalog/mail.yaml` of the demo repository: the sink, and links to the demo's portal.
    The demo owns this file: a rerun writes it again (with the ports of that run)."""
    settings = {"smtp": {"host": "127.0.0.1", "port": mail_port, "security": "none"},
                "from": FROM, "portal_url": f"http://127.0.0.1:{api_port}"}
    (repo / SETTINGS).write_text(dump_yaml(settings, "# written by `wodsync demo`: its mail "
                                                     "goes to a local sink (a Maildir)"))


def _pid(folder: Path) -> int | None:
    """The running sink's pid (a live `wodsync mail sink` named by the pid file)."""
    return running(folder / PID_FILE, "mail", "sink")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_sink(folder: Path, port: int) -> Path:
    """The sink on 127.0.0.1:`port` storing into FOLDER/mail, unless it already runs; the
    Maildir's path."""
    maildir = folder / MAILDIR
    if _pid(folder) and _listening(port):
        return maildir
    stop_sink(folder)  # one from another port, or a pid file of a dead one
    if _listening(port):
        raise DemoError(f"port {port} is taken: choose the sink's port with --mail-port")
    log = (folder / LOG_FILE).open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wodsync", "mail", "sink", "--maildir", str(maildir),
         "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    (folder / PID_FILE).write_text(str(proc.pid))
    deadline = time.monotonic() + START_SECONDS
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DemoError(f"the demo's mail sink did not start; see {folder / LOG_FILE}:\n"
                            + (folder / LOG_FILE).read_text()[-1500:])
        time.sleep(0.1)
    return maildir


def stop_sink(folder: Path) -> bool:
    """SIGTERM the sink and wait for it; True when one was running."""
    return terminate(folder / PID_FILE, "mail", "sink", timeout=30)
