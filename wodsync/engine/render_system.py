"""Rendering a host's system files (controller side): `catalog/system.yaml` and, for a managed
hub, its configuration and unit from `templates/hub/`.

The hub's files are rendered once per desired state and shared: the `file` kind writes them and
the `service` kind's fingerprint is computed from them.

Only the hub's own files that only root can read (its configuration, 0600) see `hub.token`; every
other system file (the hub's unit, /etc/skel/.bashrc, sysctl) renders with `hub.token` = "",
since what is readable on the host is readable by its students. Templates see only the secrets
granted to the host (`DesiredContext.template_context`); using a withheld one is a
`SecretError` naming the template.

A template's compiled form is kept, keyed by its text: a daemon builds every host's desired
state at each resync, and compiling the hub's templates was most of that (the template is
still read from the repository each time, so an edit is seen at once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from wodsync.catalog.loader import TEMPLATES_DIR
from wodsync.catalog.repofs import read_repo_text
from wodsync.render.jinja import compile_template, hub_context, render_text
from wodsync.secrets import SecretError

COMPILED_KEPT = 256  # compiled templates kept: every system and hub template of a catalog

if TYPE_CHECKING:
    from wodsync.catalog.loader import Catalog
    from wodsync.catalog.models import Host


class DesiredContext(Protocol):
    """What rendering reads of a host's desired context (`engine.context.DesiredContext`),
    named by its shape: that context holds the rendered hub files, so it imports this module."""

    catalog: Catalog

    @property
    def host(self) -> Host: ...

    @property
    def hub_token(self) -> str | None: ...

    @property
    def template_context(self) -> dict[str, Any]: ...

    @property
    def hub_files(self) -> dict[str, ManagedFile]: ...


@dataclass(frozen=True)
class ManagedFile:
    """A desired system file, rendered (`data` holds its bytes): what the `file` kind writes
    and the `service` kind's fingerprint is computed from."""

    path: str
    data: bytes = field(repr=False)
    owner: str
    group: str
    mode: int
    on_change: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def render_template(ctx: DesiredContext, template: str,
                    context: Mapping[str, Any] | None = None) -> bytes:
    """A template of `templates/` rendered with the host's system context, or `context` (read
    without following a link at any depth: a link would hand a controller file to the host)."""
    rel = f"{TEMPLATES_DIR}/{template}"
    source = read_repo_text(ctx.catalog.root, rel)
    try:
        return render_text(_compiled(source, rel),
                           ctx.template_context if context is None else context).encode("utf-8")
    except SecretError as exc:
        raise SecretError(f"{rel}: {exc}") from None


@lru_cache(maxsize=COMPILED_KEPT)
def _compiled(source: str, rel: str) -> Any:
    """The compiled template of `source` (a template is a pure function of its text; Jinja's
    templates render in any thread)."""
    return compile_template(source, rel)


def hub_files(ctx: DesiredContext) -> dict[str, ManagedFile]:
    """The hub's configuration and unit, when wodsync manages the hub."""
    hub = ctx.host.hub
    if not hub or not hub.manage:
        return {}
    with_token = {**ctx.template_context, "hub": hub_context(ctx.host, ctx.hub_token or "")}
    files = {}
    for spec in hub.files():
        data = render_template(ctx, spec.template, with_token if root_only(spec.mode) else None)
        files[spec.path] = ManagedFile(spec.path, data, "root", "root", spec.mode, spec.on_change)
    return files


def root_only(mode: int) -> bool:
    """A root-owned file mode no one else can read: where the hub token may be written."""
    return mode & 0o077 == 0


def system_files(ctx: DesiredContext) -> dict[str, ManagedFile]:
    files = {f.path: ManagedFile(f.path, render_template(ctx, f.template), f.owner, f.group,
                                 int(f.mode, 8), tuple(f.on_change))
             for f in ctx.catalog.system_files}
    return files | ctx.hub_files
