"""egress, host half: the seats' egress allow-lists as firewall rules matching their uids
(`agent.firewall`: nftables, or iptables where nft is absent).

Two ways change them, both under one lock (`<state_dir>/egress.lock`) and both rewriting the
whole ruleset from what it holds now, so neither loses the other's seats:

- an apply of this kind (`write`): the seats the controller wants set or dropped;
- the seat operations (`for_seat`): a CREATE sets the seat's rules before anything of the
  new occupant runs (the previous occupant's go at once), a release drops them.

Names in a list are resolved here, when a workshop's rules are written: for its first seat
with rules, or when its list changed (the facts say what they resolved to). `observe` reads
the ruleset back: the facts are what the kernel enforces, with each seat's count of refused
packets (`rejected`, also `rejections()` for the sentinel).

The controller half (`engine.kinds.egress`) decides which seats need which list.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import time
from collections.abc import Iterator
from typing import Any, TypedDict, cast

from wodsync.agent.factspec import INT, NAME, NAMES, MapOf, Nullable, Record
from wodsync.agent.firewall import (
    Backend,
    Ruleset,
    SeatRules,
    Unenforceable,
    WorkshopRules,
    entries,
    iptables,
    nft,
    works,
)
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import Egress, Seat

KIND = "egress"
LOCK_FILE = "egress.lock"
SEATS_FILE = "egress.json"  # the uids the ruleset was last written with


class SeatWish(Egress):
    """A seat's list and whose it is."""

    user: str
    workshop: str


class Probe(TypedDict):
    """Nothing to ask: the whole ruleset is read."""


class Facts(TypedDict):
    """The backend in use (None: neither nft nor iptables works here), each workshop's rules,
    each seat's by uid, and how many rules or chains in wodsync's ruleset are not wodsync's."""

    backend: str | None
    workshops: dict[str, WorkshopRules]
    seats: dict[str, SeatRules]
    foreign: int


FACTS = Record({"backend": Nullable(NAME), "foreign": INT,
                "workshops": MapOf(Record({"allow": MapOf(NAMES), "hub": MapOf(NAMES),
                                           "dns": NAMES})),
                "seats": MapOf(Record({"user": NAME, "workshop": NAME, "rejected": INT}))})


class Part(TypedDict):
    """Seats whose rules are written (by uid), seats whose rules go, and whether the ruleset
    is written again even if no seat changes (it holds rules that are not wodsync's)."""

    set: dict[str, SeatWish]
    drop: list[str]
    rewrite: bool


@functools.lru_cache(maxsize=1)
def backend() -> Backend | None:
    """nft where it works, else iptables where it works, else None: asked once per agent
    call (a CREATE burst sets many seats' rules in one)."""
    for module in (nft, iptables):
        if works(module.PROBE):
            return cast(Backend, module)
    return None


@contextlib.contextmanager
def _locked(state_dir: str, timeout: float = 30.0) -> Iterator[None]:
    """One writer of the ruleset at a time on this host (seat operations run side by side)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"egress rules locked by another call for {timeout:g} s"
                                       ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _written(state_dir: str) -> set[int] | None:
    """The uids wodsync last wrote rules for (none: it never wrote any on this host), or None
    when that cannot be read (the ruleset itself is read then)."""
    try:
        with open(os.path.join(state_dir, SEATS_FILE), encoding="utf-8") as f:
            return {int(uid) for uid in json.load(f)["uids"]}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _note_written(state_dir: str, uids: list[int]) -> None:
    """Replaced atomically: a seat operation for a seat not in it runs no firewall tool."""
    path = os.path.join(state_dir, SEATS_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"uids": sorted(uids)}, f)
    os.replace(path + ".tmp", path)


def _resolved(wish: SeatWish) -> WorkshopRules:
    """A workshop's rules from a seat's wish: names resolved now, the host's resolvers."""
    def networks(group: list[str]) -> dict[str, list[str]]:
        return {entry: entries.resolve(entries.parse(entry)) for entry in group}
    return {"allow": networks(wish["allow"]), "hub": networks(wish["hub"]),
            "dns": entries.resolvers()}


def _same_list(rules: WorkshopRules | None, wish: SeatWish) -> bool:
    return rules is not None and (sorted(rules["allow"]), sorted(rules["hub"])) == \
        (sorted(wish["allow"]), sorted(wish["hub"]))


def _changed(ruleset: Ruleset, set_: dict[int, SeatWish], drop: list[int]) -> Ruleset:
    """The ruleset with `drop` gone and `set_` set: a seat set starts its count at 0; a
    workshop's rules are resolved again only when its list is not the one written; workshops
    left without seats go."""
    workshops, seats = ruleset.workshops, ruleset.seats
    for uid in drop:
        seats.pop(uid, None)
    for uid, wish in set_.items():
        if not _same_list(workshops.get(wish["workshop"]), wish):
            workshops[wish["workshop"]] = _resolved(wish)
        seats[uid] = {"user": wish["user"], "workshop": wish["workshop"], "rejected": 0}
    used = {seat["workshop"] for seat in seats.values()}
    return Ruleset({w: r for w, r in workshops.items() if w in used}, seats)


def _change(state_dir: str, set_: dict[int, SeatWish], drop: list[int],
            rewrite: bool = False) -> None:
    """The ruleset read, the seats of `set_` and `drop` changed, the whole written back (other
    seats as they were, their refused counts kept). Nothing is run when nothing changes: a
    drop of seats wodsync never wrote rules for (most releases) runs no firewall tool."""
    with _locked(state_dir):
        written = _written(state_dir)
        if not (set_ or rewrite) and written is not None and not written.intersection(drop):
            return
        found = backend()
        if found is None:
            if set_:
                users = ", ".join(w["user"] for w in set_.values())
                raise Unenforceable("neither nft nor iptables works on this host: egress "
                                    f"lists cannot be enforced ({users})")
            return
        ruleset = found.read()
        if not (set_ or rewrite or any(uid in ruleset.seats for uid in drop)):
            return
        ruleset = _changed(ruleset, set_, drop)
        found.write(ruleset)
        _note_written(state_dir, list(ruleset.seats))


def observe(probe: Probe, host: HostSide) -> Facts:
    found = backend()
    if found is None:
        return {"backend": None, "workshops": {}, "seats": {}, "foreign": 0}
    ruleset = found.read()
    return {"backend": found.NAME, "workshops": ruleset.workshops,
            "seats": {str(u): s for u, s in ruleset.seats.items()}, "foreign": ruleset.foreign}


def stable(facts: Facts) -> Any:
    """The facts without what moves on its own (the refused counts): a plan is not stale
    because a seat was refused a packet meanwhile."""
    return {**facts, "seats": {uid: {k: v for k, v in seat.items() if k != "rejected"}
                               for uid, seat in facts["seats"].items()}}


def write(part: Part, host: HostSide) -> None:
    _change(host.state_dir, {int(uid): wish for uid, wish in part["set"].items()},
            [int(uid) for uid in part["drop"]], part["rewrite"])
    host.say(f"egress rules: {len(part['set'])} seats set, {len(part['drop'])} dropped")


PHASES = ((30, "write", write),)


def for_seat(payload: Seat, released: bool = False) -> None:
    """The seat operations' one call: a CREATE (`released` False) gives the seat the rules of
    its workshop's list (`egress` in the payload) or none; a release drops its rules."""
    wish = None if released else payload.get("egress")
    uid = payload["uid"]
    if wish is None:
        _change(payload["state_dir"], {}, [uid])
    else:
        _change(payload["state_dir"], {uid: {"user": payload["user"],
                                             "workshop": payload["workshop"], **wish}}, [])


def rejections() -> dict[int, int]:
    """uid → packets refused since its rules were written (for the sentinel, on the host)."""
    found = backend()
    if found is None:
        return {}
    return {uid: seat["rejected"] for uid, seat in found.read().seats.items()}
