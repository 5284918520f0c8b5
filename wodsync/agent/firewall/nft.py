"""The seats' egress rules in nftables: `table inet wodsync`, wodsync's alone.

Its `output` chain (a filter hook on output) jumps to `seat_<uid>` for each seat's uid (`meta
skuid`); nothing else of the machine's rules is read or touched. The whole table is written in
one transaction, `nft -f -` with the text on stdin: the table added (in case it is not there),
deleted and declared again, so a reader never sees half a ruleset and a failure leaves the
previous table in force. Read back with `nft -j list table inet wodsync`.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from wodsync.agent.firewall import (
    Rule,
    Ruleset,
    SeatRules,
    check,
    empty_seat,
    run,
    seat_comment,
    seat_rules,
    take,
)

NAME = "nft"
TABLE = ("inet", "wodsync")
PROBE = ["nft", "list", "tables"]


def _match(rule: Rule) -> str:
    parts = []
    if rule.network is not None:
        family = "ip" if ipaddress.ip_network(rule.network).version == 4 else "ip6"
        parts.append(f"{family} daddr {rule.network}")
    if rule.port is not None:
        parts.append(f"meta l4proto {{ tcp, udp }} th dport {rule.port}")
    return " ".join(parts)


def _line(rule: Rule, rejected: int) -> str:
    verdict = {"accept": "accept", "count": "counter",
               "replies": "ct state established,related accept",
               "reject": f"counter packets {rejected} bytes 0 "
                         "reject with icmpx type admin-prohibited"}[rule.action]
    return " ".join(p for p in (_match(rule), verdict, f'comment "{rule.comment}"') if p)


def text(seats: dict[int, SeatRules]) -> str:
    """The whole table as `nft -f` reads it (only the delete when no seat has rules)."""
    family, table = TABLE
    out = [f"add table {family} {table}", f"delete table {family} {table}"]
    if not seats:
        return "\n".join(out) + "\n"
    out.append(f"table {family} {table} {{")
    out.append("  chain output {\n    type filter hook output priority filter; policy accept;")
    for uid, seat in sorted(seats.items()):
        check(uid, seat)
        out.append(f'    meta skuid {uid} jump seat_{uid} comment "{seat_comment(seat)}"')
    out.append("  }")
    for uid, seat in sorted(seats.items()):
        out.append(f"  chain seat_{uid} {{")
        out += [f"    {_line(rule, seat['rejected'])}" for rule in seat_rules(seat)]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def write(seats: dict[int, SeatRules]) -> None:
    done = run(["nft", "-f", "-"], text(seats))
    if done.returncode != 0:
        raise RuntimeError(f"nft -f - exited {done.returncode}: {done.stderr.strip()[-800:]}")


def _listing() -> list[dict[str, Any]]:
    family, table = TABLE
    done = run(["nft", "-j", "list", "table", family, table])
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return []
        raise RuntimeError(f"nft list table exited {done.returncode}: "
                           f"{done.stderr.strip()[-800:]}")
    return [item for item in json.loads(done.stdout).get("nftables", [])
            if "metainfo" not in item]


def _packets(rule: dict[str, Any]) -> int:
    for expr in rule.get("expr", []):
        if isinstance(expr, dict) and "counter" in expr:
            return int(expr["counter"].get("packets", 0))
    return 0


def _jump(rule: dict[str, Any]) -> int | None:
    """The uid of an `output` rule `meta skuid N jump seat_N` (None: any other rule)."""
    for expr in rule.get("expr", []):
        target = expr.get("jump", {}).get("target", "") if isinstance(expr, dict) else ""
        if target.startswith("seat_") and target[5:].isdigit():
            return int(target[5:])
    return None


def parse(items: list[dict[str, Any]]) -> Ruleset:
    """The table's listing (`nft -j`) read back into seats: each `output` jump with its seat
    comment, then each seat chain's rules by their comments."""
    seats: dict[int, SeatRules] = {}
    chains: dict[str, int] = {}
    foreign = 0
    rules = [item["rule"] for item in items if "rule" in item]
    for rule in rules:
        if rule.get("chain") != "output":
            continue
        uid = _jump(rule)
        seat = empty_seat(rule.get("comment", "")) if uid is not None else None
        if uid is None or seat is None:
            foreign += 1
            continue
        seats[uid] = seat
        chains[f"seat_{uid}"] = uid
    for rule in rules:
        chain = rule.get("chain")
        if chain == "output":
            continue
        if chain not in chains or not take(seats[chains[chain]], rule.get("comment", ""),
                                           _packets(rule)):
            foreign += 1
    names = {item["chain"]["name"] for item in items if "chain" in item}
    foreign += len(names - set(chains) - {"output"})
    foreign += sum(1 for item in items if not {"table", "chain", "rule"} & set(item))
    return Ruleset(seats, foreign)


def read() -> Ruleset:
    return parse(_listing())
