"""Desired state of one host (controller side, pure): every resource kind's wish, from the
validated catalog, the host's secrets and the live sessions occupying its seats.

The kinds compute their own parts (`kinds.<kind>.desired`) from what they share, the
`context.DesiredContext`; this module runs them in the registry's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wodsync.agent.protocol import HostPayload
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host, Pool
from wodsync.engine.context import DesiredContext, LiveSeat
from wodsync.engine.kinds import KINDS
from wodsync.engine.remote import host_payload
from wodsync.secrets import Secrets

__all__ = ["DesiredContext", "DesiredHost", "LiveSeat", "desired_state"]


@dataclass(frozen=True)
class DesiredHost:
    """One host's wish: each kind's part (kinds with nothing to do here are absent)."""

    name: str
    host: Host
    pool: Pool
    want: dict[str, Any]

    @property
    def state_dir(self) -> str:
        return self.host.state_dir

    def payload(self) -> HostPayload:
        """The host part of every request to this host's agent."""
        return host_payload(self.name, self.host)

    def probes(self) -> dict[str, Any]:
        return {kind: KINDS[kind].probe(part) for kind, part in self.want.items()}


def desired_state(catalog: Catalog, name: str, secrets: Secrets,
                  live_seats: list[LiveSeat] | None = None) -> DesiredHost:
    ctx = DesiredContext(catalog, name, secrets, live_seats or [])
    want = {}
    for kind, module in KINDS.items():
        part = module.desired(ctx)
        if part is not None:
            want[kind] = part
    return DesiredHost(name, ctx.host, ctx.pool, want)
