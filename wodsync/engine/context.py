"""What every kind's `desired(ctx)` reads for one host: the catalog, the host, its pool, the
secrets granted to it, the live sessions on its seats, the system templates' context and the
hub's rendered files, each computed once and shared.

Its own module, apart from `desired` (which runs the kinds), so the kinds can name the context
they read without importing what imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Pool
from wodsync.engine.render_system import ManagedFile, hub_files
from wodsync.render.jinja import system_context
from wodsync.secrets import Secrets, merge_variables


@dataclass(frozen=True)
class LiveSeat:
    """A seat a session holds: never locked, never emptied by a full apply. In its workshop's
    hub group only while a participant has it (`in_group`): not once it is held for RESET or
    its release is pending."""

    username: str
    session: str
    workshop: str
    in_group: bool = True

    @classmethod
    def of(cls, session: Any) -> LiveSeat:
        """From a store `Session`."""
        return cls(session.username, session.id, session.workshop,
                   session.state.value in ("creating", "active"))


@dataclass
class DesiredContext:
    catalog: Catalog
    name: str
    secrets: Secrets
    live_seats: list[LiveSeat] = field(default_factory=list)

    @cached_property
    def host(self) -> Host:
        return self.catalog.hosts[self.name]

    @cached_property
    def pool(self) -> Pool:
        return self.catalog.pools[self.host.pool]

    @cached_property
    def hub_token(self) -> str | None:
        """The hub's service token (environment or secrets file, granted to this host): for the
        hub's API calls and its root-only configuration, never for other system files."""
        hub = self.host.hub
        return self.secrets.hub_token(self.name, hub.token) if hub and hub.token else None

    @cached_property
    def template_context(self) -> dict[str, Any]:
        """What system templates see: global and host variables with only the secrets granted
        to this host (others withheld), and no hub token (`render_system` adds it where due)."""
        merged = merge_variables(self.secrets.for_host(self.name), self.catalog.variables,
                                 self.host.variables)
        return system_context(merged, self.name, self.host, self.pool)

    @cached_property
    def hub_files(self) -> dict[str, ManagedFile]:
        return hub_files(self)
