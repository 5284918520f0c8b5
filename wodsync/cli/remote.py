"""The daemon's session API as the session commands' other back end (`--api URL`).

Why: an operator on another machine (or a script) drives sessions through the daemon that owns
them — the deployed revision, its store, its hosts — without a catalog checkout, a store URL
or root. The token comes from `$WODSYNC_API_TOKEN` or `--token-file`, never from the command
line (`ps` shows every argument to every user); no error message ever holds it. The API's
refusals are its `{detail}`, the same sentence the local command prints.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from wodsync.authoring.facts import safe_url
from wodsync.daemon.views import API_TOKEN

TIMEOUT_S = 600.0  # a CREATE may install a seat for minutes; the server bounds its own work


def api_token(token_file: Path | None) -> str:
    """The token: `--token-file` (its first line), else `$WODSYNC_API_TOKEN`."""
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise click.ClickException(f"token file {token_file}: {exc.strerror or exc}") \
                from None
        if not lines or not lines[0].strip():
            raise click.ClickException(f"token file {token_file} is empty")
        return lines[0].strip()
    found = os.environ.get(API_TOKEN)
    if not found:
        raise click.UsageError(f"--api needs a token: set {API_TOKEN} or give --token-file "
                               "FILE (never on the command line)")
    return found


class Remote:
    """One daemon's (or `serve`'s) API at `base`, called with `token`."""

    def __init__(self, base: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise click.UsageError(f"--api {safe_url(base)!r} is not an http(s) URL")
        self.base, self._token = base.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> tuple[int, Any]:
        """The answer's status and JSON; an error answer or no answer is one clear line."""
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        url = self.base + path + (f"?{params}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self._token}", "Accept": "application/json",
            "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler())
        try:
            with opener.open(request, timeout=TIMEOUT_S) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise click.ClickException(_refusal(exc)) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise click.ClickException(f"cannot reach {safe_url(self.base)}: {reason}") \
                from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    """The API's own sentence (`detail`), else its status."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    if isinstance(detail, list):  # a 422: where and why
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                           for d in detail)
    return str(detail) if detail else f"the API answered HTTP {exc.code}"
