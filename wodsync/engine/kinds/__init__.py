"""The controller halves of the resource kinds, one module each, in the order their diffs run
(a kind may read the changes of the kinds before it: kernels look at package, hub groups at
hub users).

Adding a kind is its two halves — this package's module (desired, probe, diff, batch) and its
host half in `wodsync.agent.kinds` (facts, observe, phases) — its tests, and one line in each
registry. The host applies the kinds' phases in their own global order (each host half's
`PHASES`), not in this order.
"""

from __future__ import annotations

from types import ModuleType

from wodsync.engine.kinds import (
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

# Which module owns an address kind (`env:` belongs to `package`), for saved plans.
BY_ADDRESS: dict[str, ModuleType] = {
    kind: module for module in KINDS.values()
    for kind in getattr(module, "ADDRESS_KINDS", (module.KIND,))}
