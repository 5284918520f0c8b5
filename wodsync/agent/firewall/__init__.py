"""The egress rules of the seats, as one ruleset wodsync owns, written and read back through
nftables (`nft.py`, preferred) or iptables (`iptables.py`, where nft is absent).

The rules are a workshop's (`WorkshopRules`): replies of connections already made, loopback
and the hub, the host's resolvers on port 53, its list, then a REJECT; each seat with a list
(`SeatRules`) is sent to its workshop's rules by its uid (the packet's socket owner) and has a
count of the packets refused to it. Every rule carries a comment naming what it is (`allow
<entry> <network>`, `dns <network>`, …), so the ruleset read back says what it enforces; a
rule without such a comment is not wodsync's (`foreign`), and the whole ruleset is written
again. Both backends write the whole ruleset at once, the refused counts kept. Standard
library only.
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


class WorkshopRules(TypedDict):
    """A workshop's rules: each entry of its list and of the hub's with the networks it
    resolved to when written (none: it did not resolve), and the resolvers allowed on port 53."""

    allow: dict[str, list[str]]
    hub: dict[str, list[str]]
    dns: list[str]


class SeatRules(TypedDict):
    """A seat with rules: whose it is, its workshop's rules, and the packets refused to it
    since they were written."""

    user: str
    workshop: str
    rejected: int


class Ruleset(NamedTuple):
    workshops: dict[str, WorkshopRules]
    seats: dict[int, SeatRules]
    foreign: int = 0  # rules or chains in wodsync's ruleset that wodsync did not write


class Rule(NamedTuple):
    """A rule of a workshop's chain, for either backend: its destination (None: any), its port
    (TCP and UDP; None: any), what it does (`accept`, `reject`, `count`: a placeholder that
    only carries its comment) and its comment."""

    network: str | None
    port: int | None
    action: str
    comment: str


class Backend(Protocol):
    NAME: str

    def read(self) -> Ruleset: ...

    def write(self, ruleset: Ruleset) -> None: ...


class Unenforceable(RuntimeError):
    """Neither nft nor iptables works on this host."""


def check(ruleset: Ruleset) -> None:
    """Everything that goes into the ruleset's text, checked: names, entries, networks."""
    for uid, seat in ruleset.seats.items():
        if not isinstance(uid, int) or uid < 1:
            raise ValueError(f"egress: uid {uid!r} is not a seat's uid")
        if not USER_RE.match(seat["user"]) or seat["workshop"] not in ruleset.workshops:
            raise ValueError(f"egress: {seat['user']!r} is not a seat's name, or its workshop "
                             f"{seat['workshop']!r} has no rules")
    for workshop, rules in ruleset.workshops.items():
        if not WORKSHOP_RE.match(workshop):
            raise ValueError(f"egress: {workshop!r} is not a workshop's name")
        for group in (rules["allow"], rules["hub"]):
            for entry, networks in group.items():
                if entries.canonical(entry) != entry:
                    raise ValueError(f"egress entry {entry!r} is not in its canonical form")
                for network in networks:
                    ipaddress.ip_network(network)
        for network in rules["dns"]:
            ipaddress.ip_network(network)


def _entry_rules(kind: str, entry: str, networks: list[str]) -> list[Rule]:
    port = entries.parse(entry).port
    if not networks:
        return [Rule(None, None, "count", f"{kind} {entry} {NOWHERE}")]
    return [Rule(n, port, "accept", f"{kind} {entry} {n}") for n in networks]


def workshop_rules(rules: WorkshopRules) -> list[Rule]:
    """A workshop's rules, in order: replies, hub, DNS, its list (the REJECT is the
    backend's, with the seat's count)."""
    found = [Rule(None, None, "replies", "replies")]
    for entry, networks in rules["hub"].items():
        found += _entry_rules("hub", entry, networks)
    found += [Rule(n, 53, "accept", f"dns {n}") for n in rules["dns"]]
    for entry, networks in rules["allow"].items():
        found += _entry_rules("allow", entry, networks)
    return found


def empty_workshop() -> WorkshopRules:
    return {"allow": {}, "hub": {}, "dns": []}


def take(rules: WorkshopRules, comment: str) -> bool:
    """Add what a rule's comment says to its workshop's rules; False when the comment is not
    one wodsync writes (`replies`, `reject` and `refused` carry nothing)."""
    words = comment.split()
    if words in (["replies"], ["reject"], ["refused"]):
        return True
    if len(words) == 2 and words[0] == "dns":
        if words[1] not in rules["dns"]:
            rules["dns"].append(words[1])
        return True
    if len(words) == 3 and words[0] in ("allow", "hub"):
        networks = rules["allow" if words[0] == "allow" else "hub"].setdefault(words[1], [])
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
