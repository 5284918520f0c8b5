"""Cross-file rules of appliance workshops and per-seat values.

A workshop's `appliance.hosts` are hosts of role `appliance` whose pool holds the workshop's
seats (the seat's account there has the same number), one per seat for `per_seat`; each
computed `seat_values` entry computes for every seat of the range (a typo in an expression
would otherwise fail a CREATE in front of a participant).
"""

from __future__ import annotations

from collections.abc import Iterator

from wodsync.catalog.loader import HOSTS_DIR, Catalog
from wodsync.catalog.models import Appliance, HookValue, Workshop
from wodsync.diagnostics import Diagnostic


def appliances_fit(catalog: Catalog) -> Iterator[Diagnostic]:
    """Every appliance host exists, is an appliance, and holds the workshop's seats."""
    if not catalog.complete("host", "students"):
        return
    for key, ws in sorted(catalog.workshops.items()):
        if isinstance(ws.appliance, Appliance):
            yield from _appliance(catalog, key, ws, ws.appliance)


def _appliance(catalog: Catalog, key: str, ws: Workshop,
               appliance: Appliance) -> Iterator[Diagnostic]:
    doc = catalog.workshop_doc(key)
    for i, name in enumerate(appliance.hosts):
        host = catalog.hosts.get(name)
        if host is None:
            yield doc.diag("unknown-host", f"appliance host '{name}' has no "
                           f"{HOSTS_DIR}/{name}.yaml", "appliance", "hosts", i)
            continue
        if host.role != "appliance":
            yield doc.diag("appliance-role", f"host '{name}' is not an appliance (its file "
                           "says role: hub; set role: appliance)", "appliance", "hosts", i)
        pool = catalog.pools.get(host.pool)
        if pool and not (pool.first <= ws.seats.first and ws.seats.last <= pool.last):
            yield doc.diag("seats-outside-pool", f"seats {ws.seats} are outside pool "
                           f"'{host.pool}' ({pool.seats}) of appliance host '{name}'",
                           "appliance", "hosts", i)
    seats = ws.seats.last - ws.seats.first + 1
    if appliance.mode == "per_seat" and len(appliance.hosts) < seats:
        yield doc.diag("appliance-hosts", f"per_seat needs one appliance host per seat: "
                       f"{seats} seats ({ws.seats}), {len(appliance.hosts)} hosts",
                       "appliance", "hosts")


def seat_values_compute(catalog: Catalog) -> Iterator[Diagnostic]:
    """Each computed value renders for the first and the last seat of its workshop (with the
    workshop's and global variables; secrets and hook values as placeholders)."""
    # The renderer reads the catalog's models: imported here, not with the package, so that
    # `wodsync.render` ← `wodsync.catalog` is no import cycle (as `catalog.check` does).
    from wodsync.render import seatvalues

    for key, ws in sorted(catalog.workshops.items()):
        computed = {n: v for n, v in ws.seat_values.items() if not isinstance(v, HookValue)}
        if not computed:
            continue
        for seat in (ws.seats.first, ws.seats.last):
            context: dict[str, object] = {**catalog.variables, **ws.variables, "STDID": seat,
                                          "WKSHP": key}
            context.update({n: seatvalues.placeholder(n) for n in ws.seat_values
                            if n not in computed})
            problem = _first_problem(computed, seat - ws.seats.first, context)
            if problem is not None:
                name, message = problem
                yield catalog.workshop_doc(key).diag(
                    "seat-value", f"{message} (seat {seat})", "seat_values", name)
                break


def _first_problem(computed: dict[str, str], offset: int,
                   context: dict[str, object]) -> tuple[str, str] | None:
    """(name, why) of the first value that cannot be computed, or None."""
    from wodsync.render import seatvalues

    values: dict[str, object] = {**context, "SEAT_OFFSET": offset}
    for name, expression in computed.items():
        try:
            values[name] = seatvalues.compute(name, expression, values)
        except seatvalues.SeatValueError as exc:
            return exc.name, str(exc)
    return None
