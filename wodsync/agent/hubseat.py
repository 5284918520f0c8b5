"""The hub side of a seat: its server, its workshop's group, and its identity on the hub.

A seat is reused by strangers, and on the hub whatever authenticates a person belongs to the
hub user, not to whoever held the seat when it was made: the login cookie carries the user
row's `cookie_id`, API tokens and OAuth tokens (the one inside a server's
`jupyterhub-user-<seat>` cookie among them) are rows of the user. Stopping a server revokes
only the OAuth client of that server and the tokens it issued; the login cookie and the tokens
a student made survive it, and would open the next occupant's server (issue 17). So a seat
changes hands as a new identity: `rotate` deletes the seat's hub user — its cookie id, tokens,
OAuth codes, shares, spawners and groups go with the row — and creates it again (a new
`cookie_id`, not admin, the `user` role only), back in the pool's group; the workshop's group
is joined again by the CREATE that follows.

The release of a seat (CLEANUP, RESET, PURGE) always rotates. A CREATE rotates too, unless the
hub shows, in the model its waited stop has just read, an identity nobody ever used: never
active (a login, a token's use and a server's start all record activity), no server, not an
admin, the `user` role alone, in the pool's group — the one the last release made, or one a
full apply created and nobody has had since (a student cannot log in: the seat's password is
locked until this CREATE sets it, after this check). Only an admin could have made a token for
it meanwhile, and admins are trusted. That identity is handed out as it is, without a hub
request: a fresh pool and a seat that changes hands both cost no rotation at CREATE.

The payload's `hub` carries the API URL and wodsync's token (stdin only), the workshop's group
(`group`) and the pool's (`pool_group`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from wodsync.agent import hubapi
from wodsync.agent.protocol import Seat
from wodsync.agent.steps import Steps

DELETE_WAIT = 30.0  # seconds a deletion may wait for the hub to have stopped the server
SEEN: Final = "_hub_seen"  # in a payload: (when, user model) as the waited stop of a CREATE read it
SEEN_FOR = 10.0  # seconds that model may serve the rotation that follows


def _call(payload: Seat, method: str, path: str, body: Any = None) -> Any:
    hub = payload["hub"] or {}
    return hubapi.request(hub["api"], hub["token"], method, path, body, timeout=20)


def _user_path(payload: Seat) -> str:
    return f"/users/{hubapi.quote(payload['user'])}"


def stop_server(payload: Seat, wait: bool = True) -> None:
    """Ask the hub to stop the seat's server; `wait` for it to have stopped (the user's model
    then read is kept in the payload for the rotation that follows)."""
    hub = payload.get("hub")
    if not hub:
        return
    try:
        model = hubapi.stop_server(hub["api"], hub["token"], payload["user"],
                                   wait=30 if wait else 0)
    except hubapi.HubApiError as exc:
        if exc.status != 404:
            raise
        return
    if wait:
        payload[SEEN] = (time.monotonic(), model)


def group(payload: Seat, add: bool, users: list[str] | None = None,
          name: str | None = None) -> None:
    """The seat (or `users`, seats of one workshop) into or out of a hub group — the workshop's
    unless `name` says which."""
    hub = payload.get("hub")
    target = name or (hub or {}).get("group")
    if not hub or not target:
        return
    path = f"/groups/{hubapi.quote(target)}/users"
    body = {"users": users or [payload["user"]]}
    try:
        _call(payload, "POST" if add else "DELETE", path, body)
    except hubapi.HubApiError as exc:
        if exc.status != 404:
            raise
        if add:  # the group is not there yet: make it with the seat in it
            _call(payload, "POST", f"/groups/{hubapi.quote(target)}", body)


def join_groups(payloads: Sequence[Seat]) -> None:
    """Each seat into its workshop's hub group: one request per group, whatever the seats."""
    groups: dict[str, list[Seat]] = {}
    for p in payloads:
        hub = p.get("hub")
        if hub and hub.get("group"):
            groups.setdefault(hub["group"], []).append(p)
    for members in groups.values():
        group(members[0], add=True, users=[p["user"] for p in members])


def start_server(payload: Seat, steps: Steps) -> str | None:
    """Ask for the seat's server and go on: "started", or "deferred" when the hub already
    starts as many servers as its `spawn_limit` allows (429) — the controller asks again later
    (`seat_servers`), and the student's login would start it anyway."""
    if not payload.get("hub"):
        return None
    try:
        _call(payload, "POST", _user_path(payload) + "/server")
    except hubapi.HubApiError as exc:
        if exc.status == 429:
            steps.notes.append("server start deferred: the hub is starting as many servers as "
                               "its spawn_limit allows")
            return "deferred"
        if exc.status != 400:  # 400: already running or starting
            raise
    return "started"


def _stop_all(payload: Seat) -> None:
    """Stop every server of the seat's user that is not stopping already: a start pending (the
    hub cannot delete an active server: HTTP 500) or a named server."""
    try:
        model = _call(payload, "GET", _user_path(payload))
    except hubapi.HubApiError as exc:
        if exc.status == 404:
            return
        raise
    for name, server in (model.get("servers") or {}).items():
        if server.get("pending") == "stop":
            continue
        path = _user_path(payload) + (f"/servers/{hubapi.quote(name)}" if name else "/server")
        try:
            _call(payload, "DELETE", path)
        except hubapi.HubApiError as exc:
            if exc.status not in (400, 404):
                raise


def _delete_user(payload: Seat) -> None:
    """Delete the seat's hub user. The hub stops a running default server itself but answers
    400 while that stop is pending (wait for it), and 500 when a server is starting or a named
    one is active (stop them, then try again) — within DELETE_WAIT."""
    deadline, pause = time.monotonic() + DELETE_WAIT, 0.05
    while True:
        try:
            _call(payload, "DELETE", _user_path(payload))
            return
        except hubapi.HubApiError as exc:
            if exc.status == 404:
                return
            if exc.status not in (400, 500) or time.monotonic() > deadline:
                raise
            if exc.status == 500:
                _stop_all(payload)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _create_user(payload: Seat) -> None:
    """The seat's hub user made again (a 409: someone made it between the deletion and now —
    a new row all the same)."""
    try:
        _call(payload, "POST", _user_path(payload))
    except hubapi.HubApiError as exc:
        if exc.status != 409:
            raise


def _untouched(payload: Seat, seen: tuple[float, dict[str, Any] | None] | None) -> bool:
    """True when `seen` — the user's model, just read by the CREATE's waited stop — is an
    identity nobody ever used (see the module's docstring)."""
    if seen is None:
        return False
    when, model = seen
    if not model or time.monotonic() - when > SEEN_FOR:
        return False
    pool_group = (payload["hub"] or {}).get("pool_group")
    return (model.get("last_activity") is None and not model.get("servers")
            and not model.get("pending") and not model.get("admin")
            and set(model.get("roles") or ["user"]) == {"user"}
            and (not pool_group or pool_group in (model.get("groups") or [])))


def rotate(payload: Seat) -> None:
    """The seat becomes a new identity on the hub: the user deleted (its cookie id, tokens and
    grants with it) and created again, back in the pool's group. A CREATE (its payload carries
    the seat's new password) hands out as it is an identity nobody ever used (see the module's
    docstring). A hub wodsync does not manage the users of (no `hub` in the payload) has
    nothing to rotate."""
    hub = payload.get("hub")
    if not hub:
        return
    seen = payload.pop(SEEN, None)
    if "password" in payload and _untouched(payload, seen):
        return
    _delete_user(payload)
    _create_user(payload)
    if hub.get("pool_group"):
        group(payload, add=True, name=hub["pool_group"])
