"""`catalog/guard.yaml`: the seat guard's rules, one policy for every host of the catalog.

Why one catalog file rather than a section per host: what counts as abuse (a miner, a seat
pinning a core for minutes, a kernel left running for hours, anything running in a seat nobody
holds) does not depend on the machine, and a rule that kills students' processes or takes a seat
out of service deserves one reviewed place (its own CODEOWNERS line) rather than a copy in every
host file that drifts. Without the file no round runs: the guard is switched on by committing it,
best first with every action `report` (a dry run whose events show what the rules would do).

Each rule has a `type` (what it looks for) and an `action` (what happens to what it finds):
`report` only records an event; `kill` ends the process (by pid, after checking on the host that
the pid is still the same process); `stop_server` stops the seat's hub server (the session
stays); `purge` ends the session (PURGE); `quarantine` purges it and keeps the seat out of
allocation until an operator runs `wodsync seat release HOST SEAT`. Patterns are Python regular
expressions searched in a process's command line (its arguments joined by spaces); a pattern
that does not compile is an error located at its item.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from wodsync.catalog.models import Name, Strict, located

Action = Literal["report", "kill", "stop_server", "purge", "quarantine"]
ACTIONS: tuple[str, ...] = ("report", "kill", "stop_server", "purge", "quarantine")
# WoD's wod-kill-processes list and the miners operators of public hubs meet most often.
MINERS = ("xmrig", "packetcrypt", "ethminer", "cpuminer", "minerd", "nbminer", "t-rex",
          "lolminer", "phoenixminer", "nanominer", "gminer", "teamredminer", "srbminer",
          "xmr-stak", "cgminer", "bfgminer")
# The processes a seat runs for its lab: they may be busy, they are not the abuse.
CPU_ALLOWED = ("jupyterhub-singleuser",)


def _compiles(value: str) -> str:
    """A pattern is searched as a Python regular expression; one that does not compile is
    refused at its own item, with the regular expression module's reason."""
    try:
        re.compile(value)
    except re.error as exc:
        raise located("bad-pattern", f"pattern {value!r} is not a regular expression: "
                                     f"{exc.msg} at position {exc.pos}") from None
    return value


Pattern = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_compiles)]


class _Rule(Strict):
    name: Name = Field(description="The rule's name, in events and metrics.")
    action: Action = Field("report", description="report (dry run), kill, stop_server, purge "
                                                 "or quarantine.")


class BannedRule(_Rule):
    """Processes whose command line matches one of `patterns` (miners by default)."""

    type: Literal["banned"]
    patterns: list[Pattern] = Field(list(MINERS), min_length=1)


class CpuRule(_Rule):
    """One seat's processes together above `percent` of one core for `minutes` in a row
    (WoD: 98 % for 5 minutes), processes matching `allow` not counted."""

    type: Literal["cpu"]
    percent: Annotated[float, Field(gt=0, le=100_000)] = 98.0
    minutes: Annotated[float, Field(gt=0, le=10_080)] = 5.0
    allow: list[Pattern] = Field(list(CPU_ALLOWED))


class KernelAgeRule(_Rule):
    """Kernels (`ipykernel_launcher` processes) started more than `hours` ago (WoD: 4)."""

    type: Literal["kernel_age"]
    hours: Annotated[float, Field(gt=0, le=8760)] = 4.0


class FreeSeatRule(_Rule):
    """Any process of a seat no session holds (the host has no record of it): nobody should
    be running there."""

    type: Literal["free_seat"]

    @model_validator(mode="after")
    def _no_session(self) -> FreeSeatRule:
        if self.action in ("stop_server", "purge"):
            raise located("free-seat-action", f"action {self.action} needs a session and a "
                          "free seat has none: use report, kill or quarantine", at="action")
        return self


class EgressRule(_Rule):
    """Outbound connections outside the seat's egress allow-list, as the host's egress rules
    report them (the egress kind fills the evidence; this rule decides the action)."""

    type: Literal["egress"]


Rule = Annotated[BannedRule | CpuRule | KernelAgeRule | FreeSeatRule | EgressRule,
                 Field(discriminator="type")]


class Idle(Strict):
    """A server is stopped when idle for `timeout` seconds: the hub saw no activity, no kernel
    is busy and the seat's processes stayed below `cpu_percent` of one core (0: never)."""

    timeout: Annotated[float, Field(ge=0, le=30 * 86400)] = 0.0
    cpu_percent: Annotated[float, Field(ge=0, le=100_000)] = 5.0


class GuardFile(Strict):
    """`catalog/guard.yaml`: how often each host is checked, the rules, and idle servers."""

    interval: Annotated[float, Field(ge=1, le=86400)] = Field(
        60.0, description="Seconds between two rounds on a host.")
    rules: list[Rule] = []
    idle: Idle = Idle()

    @field_validator("rules")
    @classmethod
    def _names_unique(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for n, rule in enumerate(rules):
            if rule.name in seen:
                raise located("duplicate-rule", f"rule name {rule.name!r} is used twice: "
                              "events and metrics name rules", at=n)
            seen.add(rule.name)
        return rules
