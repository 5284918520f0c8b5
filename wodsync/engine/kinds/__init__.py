"""Resource kinds, one module each, in the order their diffs run (a kind may read the changes
of the kinds before it: kernels look at packages, hub groups at hub users).

Adding a kind is its module, its tests and one line in `KINDS`. The host applies the kinds'
phases in their own global order (each module's `PHASES`), not in this order.

Standard library only at import time: the agent imports this registry on the host.
"""

from __future__ import annotations

from types import ModuleType

from wodsync.engine.kinds import (
    accounts,
    files,
    group,
    hubgroups,
    hubservice,
    hubusers,
    kernels,
    packages,
    seats,
    sysctl,
)

KINDS: dict[str, ModuleType] = {m.KIND: m for m in (
    files,
    sysctl,
    accounts,
    group,
    packages,
    kernels,
    hubservice,
    hubusers,
    hubgroups,
    seats,
)}

# The host side looks kinds up by the same names.
REGISTRY = KINDS

# Which module owns an address kind (`env:` belongs to `package`), for saved plans.
BY_ADDRESS: dict[str, ModuleType] = {
    kind: module for module in KINDS.values()
    for kind in getattr(module, "ADDRESS_KINDS", (module.KIND,))}

# Agent operations a kind offers besides observe and apply (the seat operations are the
# agent's own, `agent.seats`): part of the agent's explicit table.
OPERATIONS = {
    "stop_hub": hubservice.stop_hub,
}
