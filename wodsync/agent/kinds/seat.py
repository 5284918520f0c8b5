"""seat, host half: the seats this host records in use (`agent.records`), as a full apply must
know them — the accounts kind never locks or empties one, and a plan names the sessions a
catalog edit would orphan. The seat operations themselves are `agent.seats`.
"""

from __future__ import annotations

from typing import TypedDict

from wodsync.agent import records
from wodsync.agent.factspec import NAME, SESSION, MapOf, Nullable, Record
from wodsync.agent.host import HostSide

KIND = "seat"


class Probe(TypedDict):
    """Nothing to ask: every record is read."""


class Occupied(TypedDict):
    session: str | None
    state: str | None
    workshop: str | None


class Facts(TypedDict):
    occupied: dict[str, Occupied]


FACTS = Record({"occupied": MapOf(Record({}, {"session": Nullable(SESSION),
                                              "state": Nullable(NAME),
                                              "workshop": Nullable(NAME)}))})


def observe(probe: Probe, host: HostSide) -> Facts:
    return {"occupied": {u: {"session": r.get("session"), "state": r.get("state"),
                             "workshop": r.get("workshop")}
                         for u, r in records.read_all(host.state_dir).items()}}


PHASES = ()
