"""Placeholders: values `wodsync import` could not know and an operator must decide.

The importer writes what WoD's data does not hold — a hub host's address, a per-seat value a
WoD script computed, a host variable — as a string starting with `CHANGE-ME`, followed by what
to put there. `validate` reports each one still present as a located error, so a catalog with
an undecided value never deploys, and the list of errors is the operator's to-do list. A host
whose address is still the placeholder is not asked for its pinned key yet: the placeholder's
error says how to pin it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from wodsync.diagnostics import Diagnostic

MARK = "CHANGE-ME"
ADDRESS = MARK
CODE = "placeholder"


def placeholder(why: str) -> str:
    """A placeholder value saying what to decide."""
    return f"{MARK}: {why}"


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MARK)


def _reason(value: str) -> str:
    return value[len(MARK):].lstrip(": ") or "decide this value"


def check_placeholders(catalog: Any) -> Iterator[Diagnostic]:
    """An error at every placeholder left in the hosts and the variables (global, host,
    workshop)."""
    from wodsync.catalog.loader import VARIABLES_FILE  # the loader imports the models

    for name, value in sorted(catalog.variables.items()):
        if is_placeholder(value):
            yield catalog.docs[VARIABLES_FILE].diag(
                CODE, f"{name} is a placeholder: {_reason(value)}", name)
    for name, host in sorted(catalog.hosts.items()):
        doc = catalog.host_doc(name)
        if host.address == ADDRESS:
            yield doc.diag(CODE, "address is a placeholder: write the host's address, and pin "
                           "its SSH key as `host_key` (`ssh-keyscan -t ed25519 ADDRESS`, its "
                           "fingerprint checked with the host's owner)", "address")
        for var, value in sorted(host.variables.items()):
            if is_placeholder(value):
                yield doc.diag(CODE, f"variables.{var} is a placeholder: {_reason(value)}",
                               "variables", var)
    for key, ws in sorted(catalog.workshops.items()):
        for var, value in sorted(ws.variables.items()):
            if is_placeholder(value):
                yield catalog.workshop_doc(key).diag(
                    CODE, f"variables.{var} is a placeholder: {_reason(value)}",
                    "variables", var)
