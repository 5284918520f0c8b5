"""The JupyterHub REST API, called from the host: the hub API usually listens on loopback only.

The service token arrives in the request on stdin and only ever travels in an HTTP header to
the hub on this host; it never appears on a command line or in an answer. Listings use the
pagination media type, without which the hub stops at 200 items.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypedDict, cast

PAGINATION = "application/jupyterhub-pagination+json"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _loopback_tls() -> ssl.SSLContext:
    """The hub's own proxy on this host's loopback, with `hub.tls`: its certificate names the
    public host, not 127.0.0.1, so it is not checked here. Nothing leaves the machine, and the
    proxy's port is below 1024 (root's) unless the plan says otherwise."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_LOOPBACK_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_loopback_tls()))


def _opener(url: str) -> urllib.request.OpenerDirector:
    parts = urllib.parse.urlsplit(url)
    return _LOOPBACK_OPENER if parts.scheme == "https" and parts.hostname in LOOPBACK \
        else _OPENER


class Listing(TypedDict, total=False):
    """A listing as facts: `ok` and its `items`, or why it could not be read (`down`: the hub
    did not answer; else it refused, as with a wrong token)."""

    ok: bool
    down: bool
    error: str
    items: list[dict[str, Any]]


class HubApiError(Exception):
    """The hub answered with an HTTP error (as opposed to not answering at all)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def request(api: str, token: str, method: str, path: str, body: Any = None,
            accept: str = "application/json", timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": "token " + token,
                                          "Content-Type": "application/json",
                                          "Accept": accept})
    try:
        with _opener(req.full_url).open(req, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise HubApiError(f"{method} {path}: HTTP {exc.code} {detail}", exc.code) from None
    return json.loads(raw) if raw else None


def paged(api: str, token: str, path: str) -> list[dict[str, Any]]:
    """Every item of a listing, page after page."""
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = request(api, token, "GET", f"{path}?offset={offset}&limit=10000",
                       accept=PAGINATION)
        items += page["items"]
        following = (page.get("_pagination") or {}).get("next")
        if not following:
            return items
        offset = following["offset"]


def listing(api: str, token: str, path: str) -> Listing:
    """A listing as facts: {"ok": True, "items": …} or why it could not be read. `down` tells a
    hub that did not answer (not running yet) from one that refused (a wrong token)."""
    try:
        return {"ok": True, "items": paged(api, token, path)}
    except HubApiError as exc:
        return {"ok": False, "down": False, "error": str(exc)}
    except (OSError, ValueError) as exc:
        return {"ok": False, "down": True, "error": f"{type(exc).__name__}: {exc}"}


def answers(api: str, timeout: float = 2.0) -> bool:
    """Ready means the API answers 200 on its root (no token needed), not that a port is open."""
    try:
        with _OPENER.open(api.rstrip("/") + "/", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def stop_server(api: str, token: str, name: str, wait: float = 60.0) -> dict[str, Any] | None:
    """Stop a user's server and wait (`wait` seconds at most; 0: not at all) until the hub says
    it stopped (a stop may be pending). Returns the user's model as last read once stopped
    (None without waiting, or when the user is not there)."""
    try:
        request(api, token, "DELETE", f"/users/{quote(name)}/server")
    except HubApiError as exc:
        if exc.status not in (400, 404):  # 400: not running
            raise
    if wait <= 0:
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            user = request(api, token, "GET", f"/users/{quote(name)}")
        except HubApiError:
            return None
        if not user.get("server") and not user.get("pending"):
            return cast("dict[str, Any]", user)
        time.sleep(0.1)
    raise RuntimeError(f"the server of {name} did not stop within {wait:g} s")
