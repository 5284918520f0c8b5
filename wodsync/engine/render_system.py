"""Rendering a host's system files (controller side): `catalog/system.yaml` and, for a managed
hub, its configuration and unit from `templates/hub/`.

The hub's files are rendered once per desired state and shared: the `file` kind writes them and
the `service` kind's fingerprint is computed from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wodsync.catalog.loader import TEMPLATES_DIR
from wodsync.catalog.repofs import read_repo_text
from wodsync.engine.kinds.files import ManagedFile
from wodsync.render import compile_template, render_text

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext


def render_template(ctx: DesiredContext, template: str) -> bytes:
    """A template of `templates/` rendered with the host's system context (read without
    following a link at any depth: a link would hand a controller file to the host)."""
    source = read_repo_text(ctx.catalog.root, f"{TEMPLATES_DIR}/{template}")
    return render_text(compile_template(source, f"{TEMPLATES_DIR}/{template}"),
                       ctx.template_context).encode("utf-8")


def hub_files(ctx: DesiredContext) -> dict[str, ManagedFile]:
    hub = ctx.host.hub
    if not hub or not hub.manage:
        return {}
    return {spec.path: ManagedFile(spec.path, render_template(ctx, spec.template), "root",
                                   "root", spec.mode, spec.on_change)
            for spec in hub.service_files()}


def system_files(ctx: DesiredContext) -> dict[str, ManagedFile]:
    files = {f.path: ManagedFile(f.path, render_template(ctx, f.template), f.owner, f.group,
                                 int(f.mode, 8), tuple(f.on_change))
             for f in ctx.catalog.system_files}
    return files | ctx.hub_files
