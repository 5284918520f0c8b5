"""The host halves of the resource kinds, one module each: `observe` (the facts, read-only,
typed beside it with their published shape `FACTS`) and `PHASES` (the apply steps, run in
their global order across kinds). The controller halves, of the same names, are
`wodsync.engine.kinds`.

The agent finds kinds here only: `agent.batch` knows none of them by name.
"""

from __future__ import annotations

from types import ModuleType

from wodsync.agent.kinds import (
    account,
    egress,
    file,
    group,
    hub_group,
    hub_user,
    kernel,
    limits,
    package,
    seat,
    service,
    sysctl,
)

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (
    file,
    sysctl,
    limits,
    account,
    group,
    package,
    kernel,
    service,
    hub_user,
    hub_group,
    seat,
    egress,
)}

# Agent operations a kind offers besides observe and apply (the seat operations are the
# agent's own, `agent.seats`): part of the agent's explicit table.
OPERATIONS = {
    "stop_hub": service.stop_hub,
}
