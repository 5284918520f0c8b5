"""What a host needs to set up, clean up, reset or purge one session's seat (controller side).

The workshop is rendered for the seat exactly as `wodsync render` previews it. Hook scripts are
taken out of the files that go into the home — they are root's and run from root's own folder
on the host — and `compile` scripts travel as sources the host compiles with `shc`.
"""

from __future__ import annotations

import base64
from typing import Any

from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Pool
from wodsync.content import seat_content
from wodsync.secrets import Secrets
from wodsync.store import Session

HOOK_TIMEOUT = 120.0
HOOKS = ("create", "post_copy", "cleanup", "reset")


def _hub(catalog: Catalog, host_name: str, secrets: Secrets) -> dict[str, Any] | None:
    """The host's hub API and wodsync's token there; None when wodsync does not manage its
    hub users."""
    host: Host = catalog.hosts[host_name]
    if not (host.hub and host.hub.token):
        return None
    return {"api": host.hub.api, "token": secrets.hub_token(host_name, host.hub.token)}


def _base(catalog: Catalog, session: Session, secrets: Secrets) -> dict[str, Any]:
    """What every seat operation carries: who, where, and the hub to talk to."""
    host: Host = catalog.hosts[session.host]
    pool: Pool = catalog.pools[host.pool]
    hub = _hub(catalog, session.host, secrets)
    if hub:
        hub["group"] = session.workshop
    home = f"{pool.home_root.rstrip('/')}/{session.username}"
    return {"state_dir": host.state_dir, "owner": f"host {session.host}",
            "user": session.username, "uid": pool.uid_base + session.seat,
            "session": session.id, "workshop": session.workshop, "hub": hub,
            "hook_timeout": HOOK_TIMEOUT,
            "env": {"STUDENT": session.username, "STDID": str(session.seat),
                    "WKSHP": session.workshop, "SESSION": session.id, "STUDENT_HOME": home}}


def _hooks(catalog: Catalog, session: Session, rendered: dict[str, bytes]) -> dict[str, Any]:
    hooks = catalog.workshops[session.workshop].hooks
    found = {}
    for name in HOOKS:
        rel = getattr(hooks, name)
        if rel and rel in rendered:
            found[name] = {"path": rel, "data": base64.b64encode(rendered[rel]).decode()}
    return found


def create_payload(catalog: Catalog, session: Session, secrets: Secrets) -> dict[str, Any]:
    ws = catalog.workshops[session.workshop]
    files = seat_content(catalog, session.workshop, session.seat, session.password,
                         session.host, secrets)
    rendered = {f.path: f.data for f in files}
    hooks = _hooks(catalog, session, rendered)
    hook_paths = {h["path"] for h in hooks.values()}
    return {**_base(catalog, session, secrets), "password": session.password, "hooks": hooks,
            "files": [{"path": f.path, "data": base64.b64encode(f.data).decode(), "mode": f.mode}
                      for f in files if f.path not in hook_paths],
            "compile": list(ws.compile)}


def end_payload(catalog: Catalog, session: Session, secrets: Secrets,
                hold: bool = False) -> dict[str, Any]:
    """CLEANUP, RESET and PURGE: the hooks (rendered for the seat) and the notebooks to read."""
    folder = catalog.folders[session.workshop]
    hooks: dict[str, Any] = {}
    ws = catalog.workshops[session.workshop]
    wanted = {getattr(ws.hooks, n) for n in ("cleanup", "reset")} - {None}
    if wanted:
        files = seat_content(catalog, session.workshop, session.seat, session.password,
                             session.host, secrets)
        hooks = _hooks(catalog, session, {f.path: f.data for f in files if f.path in wanted})
    return {**_base(catalog, session, secrets), "hooks": hooks, "hold": hold,
            "notebooks": [rel for rel in folder.files if rel.endswith(".ipynb")]}


def servers_payload(catalog: Catalog, host_name: str, seats: dict[str, str],
                    secrets: Secrets) -> dict[str, Any] | None:
    """`seat_servers`: the seats (user → session id) whose server start the hub deferred."""
    hub = _hub(catalog, host_name, secrets)
    if hub is None:
        return None
    host = catalog.hosts[host_name]
    return {"state_dir": host.state_dir, "owner": f"host {host_name}", "hub": hub,
            "seats": [{"user": user, "session": sid} for user, sid in seats.items()]}
