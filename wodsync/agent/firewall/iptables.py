"""The seats' egress rules in iptables, where nft is absent: chain `WODSYNC-EGRESS` of the
filter table, wodsync's alone, for IPv4 (`iptables`) and IPv6 (`ip6tables`).

Each seat has its workshop's rules, each matching its uid (`-m owner --uid-owner`) and
carrying a comment `wodsync <uid> …`: rules grow with seats here (nft's with workshops). The
chain is written whole by `iptables-restore --noflush` with the text on stdin (declaring the
chain flushes it, in the same commit as its new rules; the rest of the filter table is left
alone), then one jump from OUTPUT is added if it is not there. The two families are two
commits. Read back with `iptables-save -c`.
"""

from __future__ import annotations

import shlex

from wodsync.agent.firewall import (
    Rule,
    Ruleset,
    SeatRules,
    WorkshopRules,
    check,
    empty_workshop,
    entries,
    run,
    take,
    workshop_rules,
)

NAME = "iptables"
CHAIN = "WODSYNC-EGRESS"
PROBE = ["iptables-save", "-t", "filter"]
# (restore, save, the tool itself, its IP version, the REJECT's ICMP type)
FAMILIES = (("iptables-restore", "iptables-save", "iptables", 4, "icmp-admin-prohibited"),
            ("ip6tables-restore", "ip6tables-save", "ip6tables", 6, "icmp6-adm-prohibited"))


def _line(uid: int, rule: Rule, version: int, reject_with: str, counted: int) -> list[str]:
    owner = f"-A {CHAIN} -m owner --uid-owner {uid}"
    where = f" -d {rule.network}" if rule.network else ""
    comment = f' -m comment --comment "wodsync {uid} {rule.comment}"'
    if rule.action == "replies":
        return [f"{owner} -m conntrack --ctstate ESTABLISHED,RELATED{comment} -j RETURN"]
    if rule.action == "reject":
        return [f"[{counted}:0] {owner}{comment} -j REJECT --reject-with {reject_with}"]
    if rule.action == "count":
        return [f"{owner}{comment}"] if version == 4 else []
    if rule.network and entries.version(rule.network) != version:
        return []
    if rule.port is None:
        return [f"{owner}{where}{comment} -j RETURN"]
    return [f"{owner}{where} -p {proto} --dport {rule.port}{comment} -j RETURN"
            for proto in ("tcp", "udp")]


def _seat_lines(uid: int, seat: SeatRules, rules: WorkshopRules, version: int,
                reject_with: str) -> list[str]:
    found = workshop_rules(rules)
    found[0] = found[0]._replace(comment=f"seat {seat['user']} {seat['workshop']}")
    found.append(Rule(None, None, "reject", "reject"))
    counted = seat["rejected"] if version == 4 else 0  # read back as the sum of both
    return [line for rule in found for line in _line(uid, rule, version, reject_with, counted)]


def text(ruleset: Ruleset, version: int, reject_with: str) -> str:
    check(ruleset)
    lines = ["*filter", f":{CHAIN} - [0:0]"]
    for uid, seat in sorted(ruleset.seats.items()):
        lines += _seat_lines(uid, seat, ruleset.workshops[seat["workshop"]], version,
                             reject_with)
    return "\n".join([*lines, "COMMIT"]) + "\n"


def write(ruleset: Ruleset) -> None:
    for restore, _save, tool, version, reject_with in FAMILIES:
        done = run([restore, "--noflush", "--counters"], text(ruleset, version, reject_with))
        if done.returncode != 0:
            raise RuntimeError(f"{restore} exited {done.returncode}: "
                               f"{done.stderr.strip()[-800:]}")
        if run([tool, "-C", "OUTPUT", "-j", CHAIN]).returncode != 0:
            added = run([tool, "-I", "OUTPUT", "1", "-j", CHAIN])
            if added.returncode != 0:
                raise RuntimeError(f"{tool} -I OUTPUT exited {added.returncode}: "
                                   f"{added.stderr.strip()[-800:]}")


def _rules(listing: str) -> list[tuple[int, str]]:
    """(packets, comment) of each rule of wodsync's chain in an `iptables-save -c` listing."""
    found = []
    for line in listing.splitlines():
        counters, _, rest = line.partition(" ")
        if not rest.startswith(f"-A {CHAIN} ") or not counters.startswith("["):
            continue
        words = shlex.split(rest)
        comment = words[words.index("--comment") + 1] if "--comment" in words else ""
        found.append((int(counters[1:].split(":")[0]), comment))
    return found


def _seat(comment: str) -> tuple[int, SeatRules] | None:
    """The seat a `wodsync <uid> seat <user> <workshop>` comment names."""
    words = comment.split()
    if len(words) == 5 and words[0] == "wodsync" and words[1].isdigit() and words[2] == "seat":
        return int(words[1]), {"user": words[3], "workshop": words[4], "rejected": 0}
    return None


def parse(listings: list[str]) -> Ruleset:
    """Both families' listings read back, by the rules' comments: the seats, and each
    workshop's rules as its seats have them."""
    rules = [rule for listing in listings for rule in _rules(listing)]
    seats = dict(found for _packets, comment in rules if (found := _seat(comment)))
    workshops = {s["workshop"]: empty_workshop() for s in seats.values()}
    foreign = 0
    for packets, comment in rules:
        words = comment.split(maxsplit=2)
        if _seat(comment) is not None:
            continue
        if len(words) == 3 and words[0] == "wodsync" and words[1].isdigit() \
                and int(words[1]) in seats:
            seat = seats[int(words[1])]
            if words[2] == "reject":
                seat["rejected"] += packets
            if take(workshops[seat["workshop"]], words[2]):
                continue
        foreign += 1
    return Ruleset(workshops, seats, foreign)


def read() -> Ruleset:
    listings = []
    for _restore, save, _tool, _version, _reject in FAMILIES:
        done = run([save, "-c", "-t", "filter"])
        if done.returncode != 0:
            raise RuntimeError(f"{save} exited {done.returncode}: {done.stderr.strip()[-800:]}")
        listings.append(done.stdout)
    return parse(listings)
