"""A seat's workshop content: the catalog, one workshop and one seat in; rendered files out.

`wodsync render` writes these files to a folder for an author to preview; deployment on CREATE
streams the very same list to the host, so a preview is exactly what a student gets. A file
that cannot be read safely (a link on its path) or a template that cannot render is a
`ContentError` naming the file, never a traceback; a secret not granted to the workshop is a
`SecretError` ("secret X is not granted to workshop Y").

Hooks are not content: they run as root, never reach the home and are never rendered. What a
hook gets instead is `hook_variables`: the same values a notebook of the seat sees, as data.
"""

from __future__ import annotations

import secrets as pysecrets
import string
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import Undefined

from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Workshop
from wodsync.catalog.repofs import RepoFileError
from wodsync.render.jinja import (
    RenderedFile,
    RenderFileError,
    hook_paths,
    render_workshop,
    seat_variables,
    workshop_context,
)
from wodsync.render.seatvalues import SeatValueError, seat_values
from wodsync.secrets import Secrets, merge_variables

PASSWORD_ALPHABET = string.ascii_letters + string.digits


class ContentError(Exception):
    """The request cannot be rendered (unknown workshop, seat outside the range, …)."""


def new_password(length: int = 12) -> str:
    """A random alphanumeric password (WoD uses 8 characters; wodsync defaults to 12)."""
    return "".join(pysecrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def pick_host(catalog: Catalog, key: str, host_name: str | None) -> str | None:
    """The host whose variables apply: the one asked for, else the first of the location."""
    ws = catalog.workshops[key]
    if host_name is not None:
        if host_name not in catalog.hosts:
            raise ContentError(f"unknown host '{host_name}'")
        return host_name
    candidates = sorted(catalog.hosts_in(ws.location))
    return candidates[0] if candidates else None


def _seat_values(catalog: Catalog, key: str, seat: int, password: str,
                 host_name: str | None, secrets: Secrets,
                 produced: Mapping[str, str] | None = None,
                 ) -> tuple[Host | None, dict[str, Any], dict[str, Any]]:
    """The seat's host, its merged variables (global < host < workshop) and its seat
    variables with its per-seat values (`seatvalues`: `produced` are the create hook's; None
    gives placeholders, as in a preview); the checks every consumer of a seat's values needs
    first."""
    if key not in catalog.workshops:
        raise ContentError(f"unknown workshop '{key}'")
    ws = catalog.workshops[key]
    if not ws.seats.first <= seat <= ws.seats.last:
        raise ContentError(f"seat {seat} is outside {key}'s seats {ws.seats}")
    host = catalog.hosts.get(host_name) if host_name else None
    pool_name = host.pool if host else next(iter(catalog.pools), None)
    if pool_name is None or pool_name not in catalog.pools:
        raise ContentError("no student pool is defined in catalog/students.yaml")
    # Only the secrets granted to this workshop: the files land readable in the student's home.
    merged = merge_variables(secrets.for_workshop(key), catalog.variables,
                             host.variables if host else {}, own=ws.variables)
    own = seat_variables(key, ws, catalog.pools[pool_name], seat, password)
    try:
        own.update(seat_values(catalog, ws, seat, {**merged, **own}, produced))
    except SeatValueError as exc:
        raise ContentError(f"{key}: {exc}") from None
    return host, merged, own


def check_paths(workshop: Workshop) -> set[str]:
    """The workshop's check and solve scripts, spelled as the folder lists them."""
    return {PurePosixPath(p).as_posix() for c in workshop.checks for p in (c.script, c.solve)
            if p}


def seat_content(catalog: Catalog, key: str, seat: int, password: str,
                 host_name: str | None, secrets: Secrets,
                 produced: Mapping[str, str] | None = None) -> list[RenderedFile]:
    """Render every file of workshop `key` for `seat` as it will land in the student's home:
    everything but `workshop.yaml`, the hooks (root's, never rendered) and the check and solve
    scripts (they travel as data when run: the answers stay out of reach). `produced`: the
    values its create hook wrote (None: placeholders, for a preview)."""
    host, merged, seat_vars = _seat_values(catalog, key, seat, password, host_name, secrets,
                                           produced)
    ws = catalog.workshops[key]
    ctx = workshop_context(key, ws, merged, seat_vars, host.address if host else "localhost")
    folder = catalog.folders[key]
    rel = folder.path.relative_to(catalog.root).as_posix()
    hooks = set(hook_paths(ws).values()) | check_paths(ws)
    try:
        return list(render_workshop(catalog.root, rel,
                                    [f for f in folder.files if f not in hooks], ctx))
    except RepoFileError as exc:
        raise ContentError(f"{key}: {exc}") from None
    except RenderFileError as exc:
        raise ContentError(f"{key}: rendering failed: {exc}") from None


def hook_variables(catalog: Catalog, key: str, seat: int, password: str | None,
                   host_name: str | None, secrets: Secrets,
                   produced: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a hook of workshop `key` gets for `seat` as data: every variable its notebooks see
    (global < host < workshop < seat), as plain values.

    A secret of an inherited layer that the workshop is not granted is left out; one in the
    workshop's own variables fails as it does for the notebooks. `PASSSTU` is there only when
    the password is known (`password`: CREATE and post_copy) and the workshop sets `varpass`.
    WoD's `hostvars`/`inventory_hostname` are template lookups, not values: left out.
    """
    _, merged, seat_vars = _seat_values(catalog, key, seat, password or "", host_name,
                                        secrets, produced or {})  # the create hook's
    if password is None or not catalog.workshops[key].varpass:
        del seat_vars["PASSSTU"]
    values = {**merged, **seat_vars}
    return {name: value for name, value in values.items() if not isinstance(value, Undefined)}


def write_content(files: list[RenderedFile], out: Path) -> None:
    """Write rendered files under `out`, creating folders; existing files are replaced."""
    for f in files:
        target = out / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
        target.chmod(f.mode)
