"""Egress allow-lists without a host: the entries the catalog accepts (and its located errors),
the rulesets' text and how a listing is read back, and the kind's plan from facts.

The rules against the real kernel (nft, iptables) are tests/test_egress.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from wodsync.agent.firewall import Ruleset, SeatRules, WorkshopRules, entries, iptables, nft
from wodsync.agent.kinds import egress as host_half
from wodsync.catalog import validate
from wodsync.catalog.models import Host, Hub
from wodsync.engine.change import Action
from wodsync.engine.kinds import egress
from wodsync.engine.kinds.base import PlanContext
from wodsync.engine.kinds.seat import Seats

from helpers import errors_of

CHL = "catalog/workshops/WKSHP-Regex-Challenge/workshop.yaml"


@pytest.mark.parametrize(("entry", "canonical"), [
    ("10.0.0.0/8", "10.0.0.0/8"), ("10.0.0.0/8:443", "10.0.0.0/8:443"),
    ("10.1.2.3/32:80", "10.1.2.3:80"), ("[2001:DB8::1]:443", "[2001:db8::1]:443"),
    ("2001:db8::/32", "2001:db8::/32"), ("PyPI.org:443", "pypi.org:443"), ("pypi.org", "pypi.org"),
])
def test_an_entry_has_one_spelling(entry, canonical):
    assert entries.canonical(entry) == canonical
    assert entries.canonical(canonical) == canonical


@pytest.mark.parametrize(("entry", "why"), [
    ("10.0.0.1/8", "host bits set"), ("pypi.org:0", "port '0'"), ("pypi.org:https", "port"),
    ("under_score.org", "neither an address"), ("[2001:db8::1:443", "[address]:port"),
    ("300.1.2.3", "does not appear"), ("", "non-empty"),
])
def test_a_malformed_entry_says_what_is_wrong(entry, why):
    with pytest.raises(ValueError, match=r"egress entry|non-empty") as caught:
        entries.canonical(entry)
    assert why in str(caught.value)


def test_a_malformed_entry_in_the_catalog_is_located_and_a_good_one_canonical(repo):
    repo.replace(CHL, "egress: [pypi.org:443, files.pythonhosted.org:443]",
                 "egress:\n  - PyPI.org:443\n  - 10.0.0.1/8:443")
    found = errors_of(repo.root)
    assert [(d.path, d.line, d.code) for d in found] == \
        [(CHL, repo.line_of(CHL, "10.0.0.1/8"), "egress-entry")]
    assert "10.0.0.1/8 has host bits set" in found[0].message
    repo.replace(CHL, "  - 10.0.0.1/8:443", "  - 10.0.0.0/8:443")
    catalog, diags = validate(repo.root)
    assert catalog is not None and not diags
    assert catalog.workshops["WKSHP-Regex-Challenge"].egress == ["pypi.org:443",
                                                                   "10.0.0.0/8:443"]
    assert catalog.workshops["WKSHP-Python101"].egress is None


def test_the_resolvers_are_read_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# managed\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"
                    "nameserver 2001:db8::53\nsearch example.org\nnameserver 192.0.2.53\n")
    assert entries.resolvers(str(conf)) == ["192.0.2.53/32", "2001:db8::53/128"]
    assert entries.resolvers(str(tmp_path / "none")) == []


WS = "WKSHP-Regex-Challenge"


def _rules(**changes: Any) -> WorkshopRules:
    rules: WorkshopRules = {"allow": {"pypi.org:443": ["203.0.113.80/32", "2001:db8::80/128"],
                                      "gone.example:443": []},
                            "hub": {"127.0.0.0/8": ["127.0.0.0/8"], "::1": ["::1/128"]},
                            "dns": ["192.0.2.53/32"]}
    rules.update(changes)  # type: ignore[typeddict-item]
    return rules


def _ruleset(user: str = "student3", **changes: Any) -> Ruleset:
    return Ruleset({WS: _rules(**changes)},
                   {2003: {"user": user, "workshop": WS, "rejected": 7}})


def test_the_nft_table_is_replaced_whole_with_a_chain_per_workshop_and_a_counter_per_seat():
    text = nft.text(_ruleset())
    assert text.startswith("add table inet wodsync\ndelete table inet wodsync\n")
    assert "elements = { 2003 : jump ws_WKSHP-Regex-Challenge }" in text
    assert 'elements = { 2003 : "u_student3" }' in text
    assert "counter u_student3 { packets 7 bytes 0 }" in text
    assert "meta skuid vmap @seats" in text
    assert ("ip daddr 203.0.113.80/32 meta l4proto { tcp, udp } th dport 443 accept "
            'comment "allow pypi.org:443 203.0.113.80/32"') in text
    assert 'ip6 daddr 2001:db8::80/128 meta l4proto { tcp, udp } th dport 443 accept' in text
    assert 'counter comment "allow gone.example:443 -"' in text  # did not resolve: no accept
    assert text.index("established,related") < text.index("hub 127.0.0.0/8") \
        < text.index("dns 192.0.2.53/32") < text.index("allow pypi.org") \
        < text.index("counter name meta skuid map @refused") \
        < text.index("reject with icmpx type admin-prohibited")
    assert nft.text(Ruleset({WS: _rules()}, {})) == \
        "add table inet wodsync\ndelete table inet wodsync\n"


def test_nothing_unchecked_reaches_the_ruleset_text():
    with pytest.raises(ValueError, match="not a seat's name"):
        nft.text(_ruleset(user='x" ; flush ruleset ; "'))
    with pytest.raises(ValueError):
        iptables.text(_ruleset(dns=["192.0.2.53/32 -j ACCEPT"]), 4, "icmp-admin-prohibited")
    with pytest.raises(ValueError, match="has no rules"):
        nft.text(Ruleset({}, {2003: {"user": "student3", "workshop": WS, "rejected": 0}}))


def _nft_rule(chain: str, comment: str | None, *expr: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"family": "inet", "table": "wodsync", "chain": chain, "handle": 9,
                            "expr": list(expr)}
    if comment is not None:
        rule["comment"] = comment
    return {"rule": rule}


ACCEPT = {"accept": None}
CHAIN = f"ws_{WS}"


def test_an_nft_listing_is_read_back_and_what_wodsync_did_not_write_is_counted():
    listing = [
        {"counter": {"family": "inet", "name": "u_student3", "table": "wodsync", "packets": 5,
                     "bytes": 300}},
        {"map": {"family": "inet", "name": "seats", "table": "wodsync", "type": "uid",
                 "map": "verdict", "elem": [[2003, {"jump": {"target": CHAIN}}],
                                            [2004, {"jump": {"target": CHAIN}}]]}},
        {"map": {"family": "inet", "name": "refused", "table": "wodsync", "type": "uid",
                 "map": "counter", "elem": [[2003, "u_student3"]]}},
        {"chain": {"family": "inet", "table": "wodsync", "name": "output", "hook": "output"}},
        {"chain": {"family": "inet", "table": "wodsync", "name": CHAIN}},
        {"chain": {"family": "inet", "table": "wodsync", "name": "mine"}},
        _nft_rule("output", None, {"vmap": {"key": {"meta": {"key": "skuid"}},
                                            "data": "@seats"}}),
        _nft_rule("output", None, ACCEPT),
        _nft_rule(CHAIN, "replies", ACCEPT),
        _nft_rule(CHAIN, "hub ::1 ::1/128", ACCEPT),
        _nft_rule(CHAIN, "dns 192.0.2.53/32", ACCEPT),
        _nft_rule(CHAIN, "allow pypi.org:443 203.0.113.80/32", ACCEPT),
        _nft_rule(CHAIN, "allow gone.example:443 -", {"counter": {"packets": 0}}),
        _nft_rule(CHAIN, None, ACCEPT),
        _nft_rule(CHAIN, "refused", {"counter": {"map": {}}}),
        _nft_rule(CHAIN, "reject", {"reject": None}),
    ]
    workshops, seats, foreign = nft.parse(json.loads(json.dumps(listing)))
    assert seats == {2003: {"user": "student3", "workshop": WS, "rejected": 5}}
    assert workshops == {WS: {"allow": {"pypi.org:443": ["203.0.113.80/32"],
                                        "gone.example:443": []},
                              "hub": {"::1": ["::1/128"]}, "dns": ["192.0.2.53/32"]}}
    # a seat without its counter, an output rule, a workshop rule, a chain: not wodsync's
    assert foreign == 4


def test_an_iptables_listing_is_read_back_from_both_families():
    v4 = ("*filter\n:OUTPUT ACCEPT [0:0]\n:WODSYNC-EGRESS - [0:0]\n"
          "[8:476] -A OUTPUT -j WODSYNC-EGRESS\n"
          "[2:104] -A WODSYNC-EGRESS -m owner --uid-owner 2003 -m conntrack --ctstate "
          'RELATED,ESTABLISHED -m comment --comment "wodsync 2003 seat student3 WKSHP-X" '
          "-j RETURN\n"
          "[1:60] -A WODSYNC-EGRESS -d 203.0.113.80/32 -p tcp -m owner --uid-owner 2003 -m tcp "
          '--dport 443 -m comment --comment "wodsync 2003 allow pypi.org:443 203.0.113.80/32" '
          "-j RETURN\n"
          "[0:0] -A WODSYNC-EGRESS -d 198.51.100.1/32 -j RETURN\n"
          '[3:180] -A WODSYNC-EGRESS -m owner --uid-owner 2003 -m comment --comment '
          '"wodsync 2003 reject" -j REJECT --reject-with icmp-admin-prohibited\nCOMMIT\n')
    v6 = ("*filter\n[4:0] -A WODSYNC-EGRESS -m owner --uid-owner 2003 -m comment --comment "
          '"wodsync 2003 reject" -j REJECT --reject-with icmp6-adm-prohibited\nCOMMIT\n')
    workshops, seats, foreign = iptables.parse([v4, v6])
    assert seats == {2003: {"user": "student3", "workshop": "WKSHP-X", "rejected": 7}}
    assert workshops["WKSHP-X"]["allow"] == {"pypi.org:443": ["203.0.113.80/32"]}
    assert foreign == 1


def test_the_iptables_text_puts_each_address_in_its_family_and_ports_for_tcp_and_udp():
    v4 = iptables.text(_ruleset(), 4, "icmp-admin-prohibited")
    v6 = iptables.text(_ruleset(), 6, "icmp6-adm-prohibited")
    assert v4.startswith("*filter\n:WODSYNC-EGRESS - [0:0]\n") and v4.endswith("COMMIT\n")
    assert '--comment "wodsync 2003 seat student3 WKSHP-Regex-Challenge" -j RETURN' in v4
    assert "-d 203.0.113.80/32 -p tcp --dport 443" in v4
    assert "-d 203.0.113.80/32 -p udp --dport 443" in v4 and "2001:db8::80" not in v4
    assert "-d 2001:db8::80/128 -p tcp --dport 443" in v6 and "203.0.113.80" not in v6
    assert "[7:0] -A WODSYNC-EGRESS -m owner --uid-owner 2003" in v4  # the count kept once
    assert "[0:0] -A WODSYNC-EGRESS -m owner --uid-owner 2003" in v6


def test_a_seat_set_reuses_its_workshops_rules_unless_the_list_changed():
    wish: host_half.SeatWish = {"user": "student4", "workshop": WS,
                                "allow": ["pypi.org:443", "gone.example:443"],
                                "hub": ["127.0.0.0/8", "::1"]}
    kept = host_half._changed(_ruleset(), {2004: wish}, [])
    assert kept.workshops == {WS: _rules()}  # not resolved again
    assert kept.seats[2004] == {"user": "student4", "workshop": WS, "rejected": 0}
    assert kept.seats[2003]["rejected"] == 7
    changed = host_half._changed(_ruleset(), {2004: {**wish, "allow": ["192.0.2.0/24:22"]}},
                                 [2003])
    assert changed.workshops[WS]["allow"] == {"192.0.2.0/24:22": ["192.0.2.0/24"]}
    assert list(changed.seats) == [2004]
    assert host_half._changed(_ruleset(), {}, [2003]) == Ruleset({}, {})


def test_the_refused_counts_do_not_change_the_digest_of_the_facts():
    seat: SeatRules = {"user": "student3", "workshop": WS, "rejected": 7}
    facts: host_half.Facts = {"backend": "nft", "foreign": 0, "workshops": {WS: _rules()},
                              "seats": {"2003": seat}}
    moved: host_half.Facts = {**facts, "seats": {"2003": {**seat, "rejected": 99}}}
    assert host_half.stable(facts) == host_half.stable(moved)
    assert host_half.stable(facts) != host_half.stable({**facts, "workshops": {}})


def _wish(allow: list[str], user: str = "student3") -> host_half.SeatWish:
    return {"user": user, "workshop": "WKSHP-Regex-Challenge", "allow": allow,
            "hub": ["127.0.0.0/8", "::1"]}


def _have(user: str = "student3", rejected: int = 0, workshop: str = WS) -> SeatRules:
    return {"user": user, "workshop": workshop, "rejected": rejected}


def _listed(allow: list[str]) -> WorkshopRules:
    return {"allow": {e: [] if "gone" in e else ["203.0.113.80/32"] for e in allow},
            "hub": {"127.0.0.0/8": ["127.0.0.0/8"], "::1": ["::1/128"]},
            "dns": ["192.0.2.53/32"]}


def _plan(want: dict[int, host_half.SeatWish], have: dict[int, SeatRules],
          workshops: dict[str, WorkshopRules] | None = None, foreign: int = 0,
          backend: str | None = "nft", occupied: dict[str, Any] | None = None,
          sessions: dict[str, str] | None = None) -> PlanContext:
    plan = PlanContext("hub-amer",
                       {"egress": want, "seat": Seats(sessions or {}, {})},
                       {"egress": {"backend": backend, "foreign": foreign,
                                   "workshops": workshops or {},
                                   "seats": {str(u): s for u, s in have.items()}},
                        "seat": {"occupied": occupied or {}}})
    egress.diff(plan)
    return plan


def test_the_plan_adds_changes_and_drops_seats_and_says_why_others_stay():
    other = "WKSHP-Other"
    plan = _plan({2001: _wish(["pypi.org:443"], "student1"),
                  2002: {**_wish(["pypi.org:443", "10.0.0.0/8"], "student2"),
                         "workshop": other},
                  2003: _wish(["pypi.org:443", "gone.example:443"])},
                 {2002: _have("student2", workshop=other), 2003: _have(rejected=4),
                  2004: _have("student4")},
                 {WS: _listed(["pypi.org:443", "gone.example:443"]),
                  other: _listed(["pypi.org:443", "192.0.2.0/24"])})
    assert [(c.action, str(c.address), c.detail) for c in plan.changes] == [
        (Action.CREATE, "egress:student1",
         "WKSHP-Regex-Challenge allows pypi.org:443 (and loopback, hub, DNS)"),
        (Action.UPDATE, "egress:student2", "+10.0.0.0/8 -192.0.2.0/24"),
        (Action.DELETE, "egress:student4", "no longer in use by WKSHP-Regex-Challenge: its "
                                           "rules go")]
    assert [n.reason for n in plan.noops] == [
        "WKSHP-Regex-Challenge allows pypi.org:443, gone.example:443 (and loopback, hub, DNS);"
        " 4 packets refused"]
    assert plan.notes == ["egress of WKSHP-Regex-Challenge: gone.example:443 did not resolve "
                          "on the host when its rules were written: nothing allowed for them"]
    part = egress.batch(plan.want["egress"], plan.changes)
    assert part == {"set": {"2001": _wish(["pypi.org:443"], "student1"),
                            "2002": {**_wish(["pypi.org:443", "10.0.0.0/8"], "student2"),
                                     "workshop": other}},
                    "drop": ["2004"], "rewrite": False}


def test_a_seat_held_by_a_session_the_store_does_not_know_keeps_its_rules():
    plan = _plan({}, {2004: _have("student4")}, {WS: _listed(["pypi.org:443"])},
                 occupied={"student4": {"session": "S-1", "state": "active",
                                        "workshop": "WKSHP-Regex-Challenge"}})
    assert plan.changes == [] and "does not know" in plan.noops[0].reason


def test_foreign_rules_rewrite_the_ruleset_and_a_host_without_a_firewall_is_an_error():
    plan = _plan({}, {}, foreign=2)
    assert [str(c.address) for c in plan.changes] == ["egress:*"]
    assert egress.batch({}, plan.changes) == {"set": {}, "drop": [], "rewrite": True}
    plan = _plan({2001: _wish(["pypi.org:443"], "student1")}, {}, backend=None)
    assert plan.changes == [] and "student1 cannot be enforced" in plan.errors[0]
    assert _plan({}, {}, backend=None).errors == []


def test_a_seat_reaches_loopback_and_the_hub_besides_its_list():
    host = Host(address="hub.example.org", location="lab", pool="p", transport="local",
                hub=Hub(ip="198.51.100.7", port=443,
                        api_url="https://hub-api.example.org:8443/hub/api"))
    assert egress.hub_entries(host) == ["127.0.0.0/8", "::1", "198.51.100.7:443",
                                        "hub-api.example.org:8443"]
    local = Host(address="localhost", location="lab", pool="p", transport="local",
                 hub=Hub(ip="127.0.0.1"))
    assert egress.hub_entries(local) == ["127.0.0.0/8", "::1"]


def test_only_seats_of_workshops_with_a_list_are_wanted(repo):
    from wodsync.engine.context import DesiredContext, LiveSeat
    from wodsync.secrets import Secrets

    catalog, _ = validate(repo.root)
    assert catalog is not None
    seats = [LiveSeat("student3", "S-3", "WKSHP-Regex-Challenge"),
             LiveSeat("student4", "S-4", "WKSHP-Regex-Challenge", in_group=False),
             LiveSeat("student5", "S-5", "WKSHP-Python101")]
    ctx = DesiredContext(catalog, "hub-amer", Secrets(env={}), seats)
    uid = catalog.pools[ctx.host.pool].uid_base + 3
    assert egress.desired(ctx) == {uid: {"user": "student3",
                                         "workshop": "WKSHP-Regex-Challenge",
                                         "allow": ["pypi.org:443", "files.pythonhosted.org:443"],
                                         "hub": ["127.0.0.0/8", "::1"]}}
    assert egress.seat_egress(catalog, "hub-amer", "WKSHP-Python101") is None
