"""SIGHUP (`systemctl reload wodsync`): the secrets file and the API tokens read again, without
a restart.

Why: rotating a hub token, the SMTP password or an API token used to need a restart, and a
restart drops the API for as long as the process takes to start. On SIGHUP the daemon and
`wodsync serve` re-read the secrets file in place (`Secrets.reload`: every part holding it uses
the new values from its next read) and the store's tokens (`TokenBook.reload`); the daemon then
reconciles at once, so a host's hub gets its new token before the next interval. The work runs
in a thread of its own: a signal handler interrupts the event loop wherever it is, and must not
read files there. A secrets file that does not load is logged and changes nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from wodsync.secrets import SecretError, Secrets
from wodsync.tokens import TokenBook

log = logging.getLogger("wodsync.reload")


class Reloader:
    """What SIGHUP reads again: `secrets` and `tokens`; `then` runs after a good reload (the
    daemon's reconcile). One reload at a time; a signal during one is served after it."""

    def __init__(self, secrets: Secrets, tokens: TokenBook,
                 then: Callable[[], None] | None = None) -> None:
        self.secrets, self.tokens, self.then = secrets, tokens, then
        self._turn = threading.Lock()
        self.count = 0  # good reloads, for tests and logs

    def reload(self) -> bool:
        """Read both again now; False (logged) when the secrets file does not load."""
        with self._turn:
            try:
                secrets = self.secrets.reload()
            except (SecretError, OSError, ValueError) as exc:
                log.error("reload: the secrets file %s did not load, nothing changed: %s",
                          self.secrets.source, exc)
                return False
            try:
                tokens = self.tokens.reload()
            except Exception as exc:  # the store down: the tokens are read at the next request
                log.error("reload: the store's API tokens could not be read: %s", exc)
                tokens = -1
            self.count += 1
            log.info("reload: %d secrets from %s, %d stored API tokens", secrets,
                     self.secrets.source or "no secrets file", tokens)
        if self.then is not None:
            self.then()
        return True

    def install(self) -> None:
        """Serve SIGHUP from now on (its default action would end the process)."""
        def on_hup(signum: int, frame: object) -> None:
            threading.Thread(target=self.reload, name="wodsync-reload", daemon=True).start()

        signal.signal(signal.SIGHUP, on_hup)
