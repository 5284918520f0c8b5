"""The seats' egress rules in nftables: `table inet wodsync`, wodsync's alone.

Its `output` chain (a filter hook on output) looks the packet's socket owner up in the verdict
map `seats` (uid → `jump ws_<workshop>`); a workshop's chain holds its rules once, whatever
the number of its seats, and ends by counting the packet on the seat's own counter (`u_<user>`,
through the map `refused`: uid → counter) and rejecting it. Rules scale with workshops and
seats are map elements: the whole table for 2000 seats is written in a fraction of a second
(`bench/egress.py`). Nothing else of the machine's rules is read or touched.

The whole table is written in one transaction, `nft -f -` with the text on stdin: the table
added (in case it is not there), deleted and declared again, so a reader never sees half a
ruleset and a failure leaves the previous table in force. Read back with `nft -j list table`.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from wodsync.agent.firewall import (
    Rule,
    Ruleset,
    SeatRules,
    WorkshopRules,
    check,
    empty_workshop,
    run,
    take,
    workshop_rules,
)

NAME = "nft"
TABLE = "inet wodsync"
PROBE = ["nft", "list", "tables"]
REJECT = "reject with icmpx type admin-prohibited"


def _match(rule: Rule) -> str:
    parts = []
    if rule.network is not None:
        family = "ip" if ipaddress.ip_network(rule.network).version == 4 else "ip6"
        parts.append(f"{family} daddr {rule.network}")
    if rule.port is not None:
        parts.append(f"meta l4proto {{ tcp, udp }} th dport {rule.port}")
    return " ".join(parts)


def _line(rule: Rule) -> str:
    verdict = {"accept": "accept", "count": "counter",
               "replies": "ct state established,related accept"}[rule.action]
    return " ".join(p for p in (_match(rule), verdict, f'comment "{rule.comment}"') if p)


def _chain(workshop: str, rules: WorkshopRules) -> list[str]:
    return [f"  chain ws_{workshop} {{", *(f"    {_line(r)}" for r in workshop_rules(rules)),
            '    counter name meta skuid map @refused comment "refused"',
            f'    {REJECT} comment "reject"', "  }"]


def _maps(seats: dict[int, SeatRules]) -> list[str]:
    jumps = ", ".join(f"{uid} : jump ws_{s['workshop']}" for uid, s in sorted(seats.items()))
    counters = ", ".join(f'{uid} : "u_{s["user"]}"' for uid, s in sorted(seats.items()))
    return ["  map seats {", "    type uid : verdict", f"    elements = {{ {jumps} }}", "  }",
            "  map refused {", "    type uid : counter", f"    elements = {{ {counters} }}",
            "  }",
            *(f"  counter u_{s['user']} {{ packets {s['rejected']} bytes 0 }}"
              for _uid, s in sorted(seats.items()))]


def text(ruleset: Ruleset) -> str:
    """The whole table as `nft -f` reads it (only its deletion when no seat has rules);
    workshops without seats are left out."""
    check(ruleset)
    out = [f"add table {TABLE}", f"delete table {TABLE}"]
    seats = ruleset.seats
    if seats:
        used = {s["workshop"] for s in seats.values()}
        out += [f"table {TABLE} {{", *_maps(seats), "  chain output {",
                "    type filter hook output priority filter; policy accept;",
                "    meta skuid vmap @seats", "  }"]
        for workshop, rules in sorted(ruleset.workshops.items()):
            if workshop in used:
                out += _chain(workshop, rules)
        out.append("}")
    return "\n".join(out) + "\n"


def write(ruleset: Ruleset) -> None:
    done = run(["nft", "-f", "-"], text(ruleset))
    if done.returncode != 0:
        raise RuntimeError(f"nft -f - exited {done.returncode}: {done.stderr.strip()[-800:]}")


def _listing() -> list[dict[str, Any]]:
    done = run(["nft", "-j", "list", "table", *TABLE.split()])
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return []
        raise RuntimeError(f"nft list table exited {done.returncode}: "
                           f"{done.stderr.strip()[-800:]}")
    return [item for item in json.loads(done.stdout).get("nftables", [])
            if "metainfo" not in item and "table" not in item]


def _elements(items: list[dict[str, Any]], name: str) -> list[tuple[Any, Any]]:
    for item in items:
        if item.get("map", {}).get("name") == name:
            return [(key, value) for key, value in item["map"].get("elem", [])]
    return []


def _seats(items: list[dict[str, Any]]) -> tuple[dict[int, SeatRules], int]:
    """The seats from the maps and counters; a seat without its counter is foreign."""
    counters = {item["counter"]["name"]: int(item["counter"].get("packets", 0))
                for item in items if "counter" in item}
    users = {uid: name for uid, name in _elements(items, "refused")
             if isinstance(name, str) and name.startswith("u_")}
    seats: dict[int, SeatRules] = {}
    foreign = 0
    for uid, verdict in _elements(items, "seats"):
        target = verdict.get("jump", {}).get("target", "") if isinstance(verdict, dict) else ""
        user = users.get(uid, "")
        if not (isinstance(uid, int) and target.startswith("ws_") and user in counters):
            foreign += 1
            continue
        seats[uid] = {"user": user[2:], "workshop": target[3:], "rejected": counters[user]}
    return seats, foreign


def parse(items: list[dict[str, Any]]) -> Ruleset:
    """The table's listing (`nft -j`) read back: seats from the maps and counters, each
    workshop's rules from its chain's comments; what wodsync does not write is counted."""
    seats, foreign = _seats(items)
    workshops: dict[str, WorkshopRules] = {}
    chains = {item["chain"]["name"] for item in items if "chain" in item}
    for name in chains - {"output"}:
        if name.startswith("ws_"):
            workshops[name[3:]] = empty_workshop()
        else:
            foreign += 1
    for item in items:
        rule = item.get("rule")
        if rule is None:
            continue
        chain, comment = rule.get("chain", ""), rule.get("comment", "")
        if chain == "output":
            foreign += 0 if "vmap" in json.dumps(rule.get("expr")) else 1
        elif chain[3:] not in workshops or not take(workshops[chain[3:]], comment):
            foreign += 1
    foreign += sum(1 for item in items if not {"chain", "rule", "map", "counter"} & set(item))
    return Ruleset(workshops, seats, foreign)


def read() -> Ruleset:
    return parse(_listing())
