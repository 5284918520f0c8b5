"""Per-seat values: what differs from seat to seat besides WoD's STDID and PASSSTU.

WoD's appliance workshops compute ports while creating a seat (`base + stdid - range[0]`) and
scrape tokens from the containers their create script starts, then render the notebooks with
them. In wodsync a workshop declares them (`seat_values`):

- **computed**: a Jinja expression of the seat, e.g. `HTTPPORT: "{{ 8000 + SEAT_OFFSET }}"`,
  rendered in the sandbox with the seat's variables (global < host < workshop < seat) and
  `SEAT_OFFSET` = seat - the workshop's first seat; later values see earlier ones. The result
  is a string, as WoD's were;
- **written by the create hook**: `SPARKTOK: {hook: create}` — the hook writes it to
  `$WOD_VALUES` (`agent.hookvalues`) and the seat's files are rendered after the hook, with
  it. Where no hook ran (a preview, `validate`) it is a placeholder naming where it comes from.

A workshop with an appliance also gets `APPLIANCE_HOST` (its address) and `APPLIANCE_USER`
(the seat's account there). Values named like a secret (ending in TOK, TOKEN or PASSWORD) or
declared `secret` are kept like passwords: rendered into that seat's own files only, never in
a log, a history or a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError

from wodsync.catalog.models import Appliance, HookValue, Workshop
from wodsync.render import jinja
from wodsync.render.sandbox import RenderLimitError

SECRET_SUFFIXES = ("TOK", "TOKEN", "PASSWORD")


class SeatValueError(Exception):
    """A computed value that cannot be computed; the message names the value."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"seat_values.{name}: {problem}")
        self.name = name


def seat_offset(workshop: Workshop, seat: int) -> int:
    """WoD's `stdid - range[0]`: 0 for the workshop's first seat."""
    return seat - workshop.seats.first


def hook_names(workshop: Workshop) -> list[str]:
    """The values the workshop's create hook must write."""
    return [n for n, v in workshop.seat_values.items() if isinstance(v, HookValue)]


def is_secret(workshop: Workshop, name: str) -> bool:
    value = workshop.seat_values.get(name)
    declared = isinstance(value, HookValue) and value.secret
    return declared or name.upper().endswith(SECRET_SUFFIXES)


def secret_values(workshop: Workshop, values: Mapping[str, str]) -> list[str]:
    """The values of `values` to keep like passwords (masked in hook outputs)."""
    return [v for n, v in values.items() if v and is_secret(workshop, n)]


def placeholder(name: str) -> str:
    return f"<{name}: written by the create hook>"


def appliance_of(catalog: Any, workshop: Workshop, seat: int) -> tuple[str, str] | None:
    """(appliance host, the seat's account there), or None without an appliance declared as
    hosts: `shared` the one host, `per_seat` host number SEAT_OFFSET; the account is the
    appliance pool's seat of the same number (on real machines pools share the scheme)."""
    appliance = workshop.appliance
    if not isinstance(appliance, Appliance):
        return None
    index = 0 if appliance.mode == "shared" else seat_offset(workshop, seat)
    if index >= len(appliance.hosts):
        raise SeatValueError("appliance", f"seat {seat} has no appliance host (offset "
                             f"{index}, {len(appliance.hosts)} hosts)")
    name = appliance.hosts[index]
    host = catalog.hosts.get(name)
    if host is None or host.pool not in catalog.pools:
        raise SeatValueError("appliance", f"appliance host '{name}' is not in the catalog")
    return name, catalog.pools[host.pool].user(seat)


def seat_values(catalog: Any, workshop: Workshop, seat: int, context: Mapping[str, Any],
                produced: Mapping[str, str] | None) -> dict[str, Any]:
    """`SEAT_OFFSET`, the appliance's names, the computed values (each seeing `context` and
    the values before it) and the hook's (`produced`; None: placeholders, as a preview has no
    hook run; a mapping: exactly the names it holds)."""
    out: dict[str, Any] = {"SEAT_OFFSET": seat_offset(workshop, seat)}
    where = appliance_of(catalog, workshop, seat)
    if where is not None:
        out["APPLIANCE_HOST"] = catalog.hosts[where[0]].address
        out["APPLIANCE_USER"] = where[1]
    for name, value in workshop.seat_values.items():
        if isinstance(value, HookValue):
            if produced is None:
                out[name] = placeholder(name)
            elif name in produced:
                out[name] = produced[name]
            continue
        out[name] = compute(name, value, {**context, **out})
    return out


def compute(name: str, expression: str, context: Mapping[str, Any]) -> str:
    try:
        template = jinja.compile_template(expression, f"seat_values.{name}")
        return jinja.render_text(template, context)
    except (RenderLimitError, TemplateError, ArithmeticError, LookupError, TypeError,
            ValueError) as exc:
        raise SeatValueError(name, f"{type(exc).__name__}: {exc}") from None
