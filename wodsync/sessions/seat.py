"""What a host needs to set up, clean up, reset or purge one session's seat (controller side).

The workshop is rendered for the seat exactly as `wodsync render` previews it, and `compile`
scripts travel as sources the host compiles with `shc`. Hook scripts are root's: they never go
into the home and are never rendered — they travel as the repository holds them, run from
root's own folder on the host, and get the seat's values as data (`hook_variables`, each also
`$WOD_<NAME>` in their environment), so no catalog value can become code run as root.

The keys written here are the agent's `protocol.Seat`, which its seat operations read.
"""

from __future__ import annotations

import base64
from typing import Any

from wodsync.agent.limits import SeatLimits
from wodsync.agent.protocol import Hook, HostPayload, Hub, Seat, SeatKey, SeatServersRequest
from wodsync.agent.records import Record
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Limits, Pool, effective_limits, size_bytes
from wodsync.catalog.repofs import RepoFileError, load_repo_file
from wodsync.engine.kinds.egress import seat_egress
from wodsync.engine.remote import host_payload
from wodsync.render.content import ContentError, hook_variables, seat_content
from wodsync.render.jinja import hook_paths
from wodsync.render.seatvalues import hook_names
from wodsync.secrets import SecretError, Secrets
from wodsync.store import Session

HOOK_TIMEOUT = 120.0


def _hub(catalog: Catalog, host_name: str, secrets: Secrets) -> Hub | None:
    """The host's hub API, wodsync's token there and the pool's hub group; None when wodsync
    does not manage its hub users."""
    host: Host = catalog.hosts[host_name]
    if not (host.hub and host.hub.token):
        return None
    return {"api": host.hub.api, "token": secrets.hub_token(host_name, host.hub.token),
            "pool_group": catalog.pools[host.pool].group}


def _record(session: Session) -> Record:
    """What the host records of the session beside its seat, so that a store which lost the
    session can adopt it again (`SessionService.sync_records`): never a password."""
    return {"email": session.email, "name": session.name, "company": session.company,
            "location": session.location, "duration_hours": session.duration_hours,
            "created_at": session.created_at.timestamp()}


def _base(catalog: Catalog, session: Session, secrets: Secrets) -> Seat:
    """What every seat operation carries: who, where, and the hub to talk to."""
    host: Host = catalog.hosts[session.host]
    pool: Pool = catalog.pools[host.pool]
    hub = _hub(catalog, session.host, secrets)
    if hub:
        hub["group"] = session.workshop
    home = f"{pool.home_root.rstrip('/')}/{session.username}"
    payload = _seat(host_payload(session.host, host), session.username,
                    pool.uid_base + session.seat, session.id, session.workshop, hub,
                    {"STUDENT": session.username, "STDID": str(session.seat),
                     "WKSHP": session.workshop, "SESSION": session.id, "STUDENT_HOME": home})
    payload["record"] = _record(session)
    payload["hook_timeout"] = HOOK_TIMEOUT
    return payload


def base_payload(catalog: Catalog, session: Session, secrets: Secrets) -> Seat:
    """What every seat operation of a session carries (`seat_check` adds its scripts)."""
    return _base(catalog, session, secrets)


def _seat(where: HostPayload, user: str, uid: int, session: str, workshop: str,
          hub: Hub | None, env: dict[str, str]) -> Seat:
    """The keys every seat operation's payload has; an operation adds its own."""
    return {"state_dir": where["state_dir"], "owner": where["owner"], "user": user, "uid": uid,
            "session": session, "workshop": workshop, "hub": hub, "hooks": {}, "env": env}


def _hooks(catalog: Catalog, key: str, names: tuple[str, ...]) -> dict[str, Hook]:
    """The hooks `names` of workshop `key`, each exactly as the repository holds it: read
    without following a link, never rendered (a catalog value pasted into a root script would
    be code). One that cannot be read safely is a ContentError naming it."""
    folder = catalog.folders[key].path.relative_to(catalog.root).as_posix()
    found: dict[str, Hook] = {}
    for name, rel in hook_paths(catalog.workshops[key]).items():
        if name not in names:
            continue
        try:
            data = load_repo_file(catalog.root, f"{folder}/{rel}").data
        except RepoFileError as exc:
            raise ContentError(f"{key}: hook {name}: {exc}") from None
        found[name] = {"path": rel, "data": base64.b64encode(data).decode()}
    return found


HookPart = tuple[dict[str, Hook], dict[str, Any] | None]
"""A payload's `hooks`, and the values they read (`hook_variables`; None: no hook to read)."""


def _hook_part(catalog: Catalog, session: Session, secrets: Secrets, names: tuple[str, ...],
               password: str | None, produced: dict[str, str] | None = None) -> HookPart:
    """A payload's `hooks` and, when it has any, the values they read as data
    (`hook_variables`: secrets granted to the workshop included, so only where a hook runs; the
    payload travels on stdin, and the agent hands them to the hook in a root-only file and its
    environment, never on a command line)."""
    hooks = _hooks(catalog, session.workshop, names)
    if not hooks:
        return {}, None
    return hooks, hook_variables(catalog, session.workshop, session.seat, password,
                                 session.host, secrets, produced or {})


def _set_hooks(payload: Seat, part: HookPart) -> None:
    hooks, variables = part
    payload["hooks"] = hooks
    if variables is not None:
        payload["hook_variables"] = variables


def _unsent_hooks(catalog: Catalog, key: str, names: tuple[str, ...],
                  problem: Exception) -> dict[str, Hook]:
    """Hooks that could not be prepared (a link on the way, a secret no longer granted): the
    host reports each as failed and releases the seat all the same."""
    return {name: {"path": rel, "error": str(problem)}
            for name, rel in hook_paths(catalog.workshops[key]).items() if name in names}


STAGE_HOOKS = {"all": ("create", "post_copy"), "hook": ("create",), "rest": ("post_copy",)}


def create_payload(catalog: Catalog, session: Session, secrets: Secrets, stage: str = "all",
                   produced: dict[str, str] | None = None,
                   ssh_key: SeatKey | None = None, hot: bool = False) -> Seat:
    """A CREATE in one call (`all`), or in two around the create hook for a workshop whose
    hook writes values (`hook`: up to it, answering them; `rest`: the files rendered with
    `produced`, and on). `ssh_key`: the seat's key for its appliance."""
    ws = catalog.workshops[session.workshop]
    payload = _base(catalog, session, secrets)
    _set_hooks(payload, _hook_part(catalog, session, secrets, STAGE_HOOKS[stage],
                                   session.password, produced or {}))
    payload["password"] = session.password
    payload["revision"] = session.revision
    if hot:  # set up under a locked password; `take_payload` gives the password later
        payload["hot"] = True
    if stage != "all":
        payload["stage"] = stage
    if stage == "hook":
        payload["produces"] = hook_names(ws)
    else:
        files = seat_content(catalog, session.workshop, session.seat, session.password,
                             session.host, secrets, produced or {})  # without the hooks
        payload["files"] = [{"path": f.path, "data": base64.b64encode(f.data).decode(),
                             "mode": f.mode} for f in files]
        payload["compile"] = list(ws.compile)
    if ssh_key is not None:
        payload["ssh_key"] = ssh_key
    payload["egress"] = seat_egress(catalog, session.host, session.workshop)
    payload["limits"] = seat_limits(catalog, session.host, session.workshop)
    return payload


def update_payload(catalog: Catalog, session: Session, secrets: Secrets,
                   revision: str) -> Seat:
    """`seat_update`: the session's workshop rendered for its seat exactly as a CREATE renders
    it, from `catalog` (revision `revision`). No hook runs; the password is only rendered
    into the files (`varpass`), never sent apart."""
    ws = catalog.workshops[session.workshop]
    payload = _base(catalog, session, secrets)
    payload["hub"] = None  # an update never talks to the hub: its token stays home
    files = seat_content(catalog, session.workshop, session.seat, session.password,
                         session.host, secrets, {})
    payload["files"] = [{"path": f.path, "data": base64.b64encode(f.data).decode(),
                         "mode": f.mode} for f in files]
    payload["compile"] = list(ws.compile)
    payload["revision"] = revision
    return payload


def take_payload(catalog: Catalog, session: Session, secrets: Secrets) -> Seat:
    """A hot seat given to the participant `session` now names (`seat_take`): its password
    and the participant's record."""
    payload = _base(catalog, session, secrets)
    payload["password"] = session.password
    return payload


def seat_limits(catalog: Catalog, host_name: str, workshop: str) -> SeatLimits | None:
    """The limits of `workshop`'s seats on the host (workshop > host > pool), in bytes and
    cores as the host applies them; None when there are none."""
    host = catalog.hosts[host_name]
    pool = catalog.pools[host.pool]
    merged = effective_limits(catalog.workshops[workshop].limits, host.limits, pool.limits)
    return host_limits(merged)


def host_limits(limits: Limits) -> SeatLimits | None:
    out: SeatLimits = {}
    for name in ("memory_high", "memory_max", "disk"):
        value = getattr(limits, name)
        if value is not None:
            out[name] = size_bytes(value)
    if limits.cpu is not None:
        out["cpu"] = limits.cpu
    if limits.tasks is not None:
        out["tasks"] = limits.tasks
    return out or None


def end_payload(catalog: Catalog, session: Session, secrets: Secrets, op: str,
                hold: bool = False, force: bool = False) -> Seat:
    """CLEANUP, RESET and PURGE (`op`): the op's hook (as the repository holds it, with the
    seat's values but never its password — a PURGE runs none, so it carries none) and the
    notebooks to count. A session whose workshop left the catalog is released all the same,
    without hooks and without a completion. `force` releases the seat whatever session the
    host records."""
    part: HookPart = ({}, None)
    notebooks = None
    ws = catalog.workshops.get(session.workshop)
    if ws is not None:
        folder = catalog.folders[session.workshop]
        notebooks = [rel for rel in folder.files if rel.endswith(".ipynb")]
    ending = tuple(h for h in ("cleanup", "reset") if h == op)
    if ws is not None and ending:
        try:
            part = _hook_part(catalog, session, secrets, ending, None)
        except (ContentError, SecretError) as exc:
            part = (_unsent_hooks(catalog, session.workshop, ending, exc), None)
    payload = _base(catalog, session, secrets)
    _set_hooks(payload, part)
    payload["hold"] = hold
    payload["notebooks"] = notebooks
    payload["force"] = force
    return payload


def release_payload(catalog: Catalog, host_name: str, user: str,
                    secrets: Secrets) -> Seat:
    """`seat_purge` for an operator's `wodsync seat release`: the seat freed whatever session
    the host records for it (no hook: whose would it run?)."""
    host: Host = catalog.hosts[host_name]
    pool: Pool = catalog.pools[host.pool]
    tail = user[len(pool.prefix):] if user.startswith(pool.prefix) else ""
    if not (tail.isdigit() and pool.first <= int(tail) <= pool.last):
        raise ValueError(f"{user} is not a seat of pool {host.pool} on {host_name} "
                         f"({pool.user(pool.first)} … {pool.user(pool.last)})")
    payload = _seat(host_payload(host_name, host), user, pool.uid_base + int(tail), "", "",
                    _hub(catalog, host_name, secrets), {})
    payload["notebooks"] = None
    payload["force"] = True
    return payload


def records_payload(catalog: Catalog, host_name: str) -> HostPayload:
    """`seat_records`: every seat the host records in use."""
    return host_payload(host_name, catalog.hosts[host_name])


def servers_payload(catalog: Catalog, host_name: str, seats: dict[str, str],
                    secrets: Secrets) -> SeatServersRequest | None:
    """`seat_servers`: the seats (user → session id) whose server start the hub deferred."""
    hub = _hub(catalog, host_name, secrets)
    if hub is None:
        return None
    return {**host_payload(host_name, catalog.hosts[host_name]), "hub": hub,
            "seats": [{"user": user, "session": sid} for user, sid in seats.items()]}
