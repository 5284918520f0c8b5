"""Rendering a workshop folder for one seat: the same code previews, validates and deploys.

WoD renders every `*.ipynb *.yaml *.py *.sh *.src *.tf *.env Variables.ps1` of a workshop through
Jinja2 with the workshop's and the student's variables and copies everything else as is. wodsync
keeps that contract (so WoD notebooks work unchanged, including their
`hostvars[inventory_hostname]['X-WKSHP-Name']` lookups) but renders in a sandbox with
`StrictUndefined`, a time budget that holds in any thread, bounded values and an output cap
(`sandbox`): a template can neither read the host nor hang or exhaust the reconciler. Workshop
files are read without following links (`repofs`). A secret the consumer may not see is withheld
from its context (`secrets`): using it is a `SecretError` naming the file. One departure from
WoD: a workshop's hooks run as root and are never rendered (`hook_paths`); values reach them as
data, in their environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import TemplateError, nodes

from wodsync.catalog.models import Host, Hub, Pool, Workshop
from wodsync.catalog.repofs import load_repo_file
from wodsync.render.sandbox import (
    MAX_VALUE,
    BoundedSandbox,
    OutputTooLarge,
    RenderLimitError,
    RenderTimeout,
    ValueTooLarge,
    render_budget,
    within,
)
from wodsync.secrets import SecretError

__all__ = ["OutputTooLarge", "RenderLimitError", "RenderTimeout", "ValueTooLarge"]

RENDERED_SUFFIXES = frozenset({".ipynb", ".yaml", ".py", ".sh", ".src", ".tf", ".env"})
RENDERED_NAMES = frozenset({"Variables.ps1"})
METADATA_FILE = "workshop.yaml"
SEAT_VARIABLES = ("STDID", "PASSSTU", "MODEWS", "STUDENT", "WKSHP", "HOME")
COMPAT_VARIABLES = ("hostvars", "inventory_hostname")
RENDER_SECONDS = 5.0
MAX_OUTPUT_BYTES = MAX_VALUE


def is_rendered(rel: str) -> bool:
    p = PurePosixPath(rel)
    return p.suffix in RENDERED_SUFFIXES or p.name in RENDERED_NAMES


def hook_paths(workshop: Workshop) -> dict[str, str]:
    """Hook name → its file, relative to the workshop folder, spelled as the folder lists it.

    Hooks run as root, so they are never rendered: a catalog value substituted into a root
    script is code. They reach the host as the repository holds them and read their values as
    data (`sessions.seat`); nor do they go into the home, which is why the seat's content
    leaves them out.
    """
    named = workshop.hooks.model_dump()
    return {name: PurePosixPath(rel).as_posix() for name, rel in named.items() if rel}


@cache
def environment() -> BoundedSandbox:
    return BoundedSandbox()


def seat_variables(key: str, workshop: Workshop, pool: Pool, seat: int,
                   password: str) -> dict[str, Any]:
    """Per-student variables: WoD's STDID/PASSSTU/MODEWS plus the account and workshop names
    and the seat's true home (WoD's notebooks wrote `/student/studentN`, wrong on any other
    pool's `home_root`)."""
    return {
        "STDID": seat,
        "PASSSTU": password,
        "MODEWS": "CHLG" if workshop.session_type == "Coding Challenge" else "WKSHP",
        "STUDENT": pool.user(seat),
        "WKSHP": key,
        "HOME": pool.home(seat),
    }


def workshop_context(key: str, workshop: Workshop, merged: Mapping[str, Any],
                     seat_vars: Mapping[str, Any], host_address: str) -> dict[str, Any]:
    """The full context: global < host < workshop < seat, plus WoD's `hostvars` view.

    WoD keeps per-workshop values as `NAME-WKSHP-Key` host variables; the `hostvars` view
    exposes each workshop variable under that name too, so imported notebooks render unchanged
    (and `IP-WKSHP-Key`, unless the workshop sets `IP`, is the seat's appliance address).
    """
    ctx = {**merged, **seat_vars}
    hostvars = {**ctx, "inventory_hostname": host_address}
    if "APPLIANCE_HOST" in seat_vars:  # WoD's `IP-WKSHP-Name`: the seat's appliance
        hostvars[f"IP-{key}"] = seat_vars["APPLIANCE_HOST"]
    hostvars.update({f"{k}-{key}": merged[k] for k in workshop.variables})
    ctx["hostvars"] = {host_address: hostvars}
    ctx["inventory_hostname"] = host_address
    return ctx


def hub_context(host: Host | None, token: str) -> dict[str, Any]:
    """What `templates/hub/` sees of the hub: its settings plus derived paths and the token."""
    hub = host.hub if host and host.hub else Hub()
    proxy = hub.proxy or f"{hub.prefix}/node/node_modules/.bin/configurable-http-proxy"
    return {**hub.model_dump(exclude={"token"}), "api": hub.api, "token": token,
            "proxy_command": proxy}


def system_context(merged: Mapping[str, Any], host_name: str, host: Host | None,
                   pool: Pool | None, hub_token: str = "") -> dict[str, Any]:
    """Context of the host system templates in `templates/`: variables, `host`, `pool`, `hub`.

    `hub.token` is "" unless given: only the hub's own root-only files may hold it
    (`engine.render_system`); a system file such as /etc/skel/.bashrc reaches every student.
    """
    host_info = {"name": host_name, **(host.model_dump(exclude={"variables", "hub"}) if host
                                       else {})}
    return {**merged, "host": host_info, "pool": pool.model_dump() if pool else {},
            "hub": hub_context(host, hub_token)}


def compile_template(source: str | nodes.Template, name: str) -> Any:
    """Compile with `name` as the file name so errors carry template line numbers.

    Compiling folds constant expressions, so it runs under the time budget too.
    """
    env = environment()
    code = within(RENDER_SECONDS, lambda: env.compile(source, name=name, filename=name))
    return env.template_class.from_code(env, code, env.make_globals(None))


def render_text(template: Any, ctx: Mapping[str, Any]) -> str:
    """Render under the time budget, the value limits and the output cap, in any thread.

    Raises a `RenderLimitError` (`RenderTimeout`, `OutputTooLarge`, `ValueTooLarge`) for a
    runaway template, and Jinja's or Python's own errors for a broken one.
    """
    return within(RENDER_SECONDS, _render_capped, template, ctx)


def _render_capped(template: Any, ctx: Mapping[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    with render_budget():
        for chunk in template.generate(ctx):
            size += len(chunk)
            if size > MAX_OUTPUT_BYTES:
                raise OutputTooLarge(f"output exceeds {MAX_OUTPUT_BYTES} bytes")
            parts.append(chunk)
    return "".join(parts)


class RenderFileError(Exception):
    """A workshop file that could not be rendered; the message names the file."""


@dataclass(frozen=True)
class RenderedFile:
    """One file of a seat's content: path relative to the workshop folder, bytes and mode."""

    path: str
    data: bytes
    mode: int


def render_workshop(root: Path, folder: str, files: list[str],
                    ctx: Mapping[str, Any]) -> Iterator[RenderedFile]:
    """Yield every file of the workshop folder `folder` (relative to the repository `root`)
    for one seat: templates rendered, the rest copied; no link is followed on the way."""
    for rel in files:
        if rel == METADATA_FILE:
            continue
        src = load_repo_file(root, f"{folder}/{rel}")
        mode = 0o755 if src.mode & 0o111 else 0o644
        raw = src.data
        if is_rendered(rel):
            raw = _render_file(rel, raw, ctx)
        yield RenderedFile(rel, raw, mode)


def _render_file(rel: str, raw: bytes, ctx: Mapping[str, Any]) -> bytes:
    try:
        return render_text(compile_template(raw.decode("utf-8"), rel), ctx).encode("utf-8")
    except SecretError as exc:  # a withheld secret: refused, never rendered as something else
        raise SecretError(f"{rel}: {exc}") from None
    except (RenderLimitError, TemplateError, UnicodeDecodeError, ArithmeticError, LookupError,
            TypeError, ValueError) as exc:
        raise RenderFileError(f"{rel}: {type(exc).__name__}: {exc}") from exc
