"""The egress rules of the seats, as one ruleset wodsync owns, written and read back through
nftables (`nft.py`, preferred) or iptables (`iptables.py`, where nft is absent).

A seat with an egress list gets rules matching its uid (the packet's socket owner): replies
of connections already made, loopback and the hub, the host's resolvers on port 53, its
list, then a counted REJECT for everything else. Every rule carries a comment naming what it
is (`allow <entry> <network>`, `dns <network>`, …), so the ruleset read back says, seat by
seat, what it enforces and how many packets it refused; a rule without such a comment is not
wodsync's (`foreign`), and the whole ruleset is written again. Both backends write the whole
ruleset at once, the rejected counts of seats kept as they were. Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from typing import NamedTuple, Protocol, TypedDict

from wodsync.agent.firewall import entries

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
WORKSHOP_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
NOWHERE = "-"  # the network of an entry whose name did not resolve


class SeatRules(TypedDict):
    """One seat's rules as the ruleset holds them: whose (`user`, `workshop`), each entry of
    its list and of the hub's with the networks it resolved to (none: it did not resolve), the
    resolvers allowed on port 53, and the packets refused since the rules were written."""

    user: str
    workshop: str
    allow: dict[str, list[str]]
    hub: dict[str, list[str]]
    dns: list[str]
    rejected: int


class Ruleset(NamedTuple):
    seats: dict[int, SeatRules]
    foreign: int  # rules or chains in wodsync's ruleset that wodsync did not write


class Rule(NamedTuple):
    """A rule of a seat's chain, for either backend: its destination (None: any), its port
    (TCP and UDP; None: any), what it does (`accept`, `reject`, `count`: a placeholder that
    only carries its comment) and its comment."""

    network: str | None
    port: int | None
    action: str
    comment: str


class Backend(Protocol):
    NAME: str

    def read(self) -> Ruleset: ...

    def write(self, seats: dict[int, SeatRules]) -> None: ...


class Unenforceable(RuntimeError):
    """Neither nft nor iptables works on this host."""


def check(uid: int, seat: SeatRules) -> None:
    """Everything that goes into the ruleset's text, checked: names, entries, networks."""
    if not isinstance(uid, int) or uid < 1:
        raise ValueError(f"egress: uid {uid!r} is not a seat's uid")
    if not USER_RE.match(seat["user"]) or not WORKSHOP_RE.match(seat["workshop"]):
        raise ValueError(f"egress: {seat['user']!r}/{seat['workshop']!r} is not a seat "
                         "and workshop name")
    for group in (seat["allow"], seat["hub"]):
        for entry, networks in group.items():
            if entries.canonical(entry) != entry:
                raise ValueError(f"egress entry {entry!r} is not in its canonical form")
            for network in networks:
                ipaddress.ip_network(network)
    for network in seat["dns"]:
        ipaddress.ip_network(network)


def _entry_rules(kind: str, entry: str, networks: list[str]) -> list[Rule]:
    port = entries.parse(entry).port
    if not networks:
        return [Rule(None, None, "count", f"{kind} {entry} {NOWHERE}")]
    return [Rule(n, port, "accept", f"{kind} {entry} {n}") for n in networks]


def seat_rules(seat: SeatRules) -> list[Rule]:
    """A seat's chain, in order: replies, hub, DNS, its list, the REJECT."""
    rules = [Rule(None, None, "replies", "replies")]
    for entry, networks in seat["hub"].items():
        rules += _entry_rules("hub", entry, networks)
    rules += [Rule(n, 53, "accept", f"dns {n}") for n in seat["dns"]]
    for entry, networks in seat["allow"].items():
        rules += _entry_rules("allow", entry, networks)
    rules.append(Rule(None, None, "reject", "reject"))
    return rules


def seat_comment(seat: SeatRules) -> str:
    return f"seat {seat['user']} {seat['workshop']}"


def empty_seat(comment: str) -> SeatRules | None:
    """A seat's rules started from its `seat <user> <workshop>` comment (None: not one)."""
    words = comment.split()
    if len(words) != 3 or words[0] != "seat":
        return None
    return {"user": words[1], "workshop": words[2], "allow": {}, "hub": {}, "dns": [],
            "rejected": 0}


def take(seat: SeatRules, comment: str, packets: int) -> bool:
    """Add what a rule's comment says to its seat; False when the comment is not wodsync's."""
    words = comment.split()
    if words == ["replies"]:
        return True
    if words == ["reject"]:
        seat["rejected"] += packets
        return True
    if len(words) == 2 and words[0] == "dns":
        if words[1] not in seat["dns"]:
            seat["dns"].append(words[1])
        return True
    if len(words) == 3 and words[0] in ("allow", "hub"):
        networks = seat["allow" if words[0] == "allow" else "hub"].setdefault(words[1], [])
        if words[2] != NOWHERE and words[2] not in networks:
            networks.append(words[2])
        return True
    return False


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A firewall tool, its answer whatever it is (the caller reads the status)."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def works(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        return run(argv).returncode == 0
    except OSError:
        return False
