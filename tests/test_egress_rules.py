"""Egress allow-lists without a host: the entries the catalog accepts (and its located errors),
the rulesets' text and how a listing is read back, and the kind's plan from facts.

The rules against the real kernel (nft, iptables) are tests/test_egress.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from wodsync.agent.firewall import SeatRules, entries, iptables, nft
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


def _seat(**changes: Any) -> SeatRules:
    seat: SeatRules = {"user": "student3", "workshop": "WKSHP-Regex-Challenge",
                       "allow": {"pypi.org:443": ["203.0.113.80/32", "2001:db8::80/128"],
                                 "gone.example:443": []},
                       "hub": {"127.0.0.0/8": ["127.0.0.0/8"], "::1": ["::1/128"]},
                       "dns": ["192.0.2.53/32"], "rejected": 7}
    seat.update(changes)  # type: ignore[typeddict-item]
    return seat


def test_the_nft_table_is_replaced_whole_with_each_rule_named():
    text = nft.text({2003: _seat()})
    assert text.startswith("add table inet wodsync\ndelete table inet wodsync\n")
    assert 'meta skuid 2003 jump seat_2003 comment "seat student3 WKSHP-Regex-Challenge"' in text
    assert ("ip daddr 203.0.113.80/32 meta l4proto { tcp, udp } th dport 443 accept "
            'comment "allow pypi.org:443 203.0.113.80/32"') in text
    assert 'ip6 daddr 2001:db8::80/128 meta l4proto { tcp, udp } th dport 443 accept' in text
    assert 'counter comment "allow gone.example:443 -"' in text  # did not resolve: no accept
    assert ("counter packets 7 bytes 0 reject with icmpx type admin-prohibited "
            'comment "reject"') in text
    assert text.index("established,related") < text.index("hub 127.0.0.0/8") \
        < text.index("dns 192.0.2.53/32") < text.index("allow pypi.org") < text.index("reject")
    assert nft.text({}) == "add table inet wodsync\ndelete table inet wodsync\n"


def test_nothing_unchecked_reaches_the_ruleset_text():
    with pytest.raises(ValueError, match="seat and workshop"):
        nft.text({2003: _seat(user='x" ; flush ruleset ; "')})
    with pytest.raises(ValueError):
        iptables.text({2003: _seat(dns=["192.0.2.53/32 -j ACCEPT"])}, 4, "icmp-admin-prohibited")


def _nft_rule(chain: str, comment: str | None, *expr: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"family": "inet", "table": "wodsync", "chain": chain, "handle": 9,
                            "expr": list(expr)}
    if comment is not None:
        rule["comment"] = comment
    return {"rule": rule}


ACCEPT = {"accept": None}


def test_an_nft_listing_is_read_back_by_its_comments_and_foreign_rules_are_counted():
    skuid = {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 2003}}
    listing = [
        {"table": {"family": "inet", "name": "wodsync", "handle": 1}},
        {"chain": {"family": "inet", "table": "wodsync", "name": "output", "hook": "output"}},
        {"chain": {"family": "inet", "table": "wodsync", "name": "seat_2003"}},
        {"chain": {"family": "inet", "table": "wodsync", "name": "mine"}},
        _nft_rule("output", "seat student3 WKSHP-Regex-Challenge", skuid,
                  {"jump": {"target": "seat_2003"}}),
        _nft_rule("output", None, ACCEPT),
        _nft_rule("seat_2003", "replies", ACCEPT),
        _nft_rule("seat_2003", "hub ::1 ::1/128", ACCEPT),
        _nft_rule("seat_2003", "dns 192.0.2.53/32", ACCEPT),
        _nft_rule("seat_2003", "allow pypi.org:443 203.0.113.80/32", ACCEPT),
        _nft_rule("seat_2003", "allow gone.example:443 -", {"counter": {"packets": 0}}),
        _nft_rule("seat_2003", None, ACCEPT),
        _nft_rule("seat_2003", "reject", {"counter": {"packets": 5, "bytes": 300}},
                  {"reject": None}),
    ]
    seats, foreign = nft.parse(json.loads(json.dumps(listing)))
    assert seats == {2003: {"user": "student3", "workshop": "WKSHP-Regex-Challenge",
                            "allow": {"pypi.org:443": ["203.0.113.80/32"],
                                      "gone.example:443": []},
                            "hub": {"::1": ["::1/128"]}, "dns": ["192.0.2.53/32"],
                            "rejected": 5}}
    assert foreign == 3  # an output rule, a seat rule and a chain wodsync did not write


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
    seats, foreign = iptables.parse([v4, v6])
    assert seats[2003]["allow"] == {"pypi.org:443": ["203.0.113.80/32"]}
    assert seats[2003]["rejected"] == 7 and foreign == 1


def test_the_iptables_text_puts_each_address_in_its_family_and_ports_for_tcp_and_udp():
    v4 = iptables.text({2003: _seat()}, 4, "icmp-admin-prohibited")
    v6 = iptables.text({2003: _seat()}, 6, "icmp6-adm-prohibited")
    assert v4.startswith("*filter\n:WODSYNC-EGRESS - [0:0]\n") and v4.endswith("COMMIT\n")
    assert "-d 203.0.113.80/32 -p tcp --dport 443" in v4
    assert "-d 203.0.113.80/32 -p udp --dport 443" in v4 and "2001:db8::80" not in v4
    assert "-d 2001:db8::80/128 -p tcp --dport 443" in v6 and "203.0.113.80" not in v6
    assert "[7:0] -A WODSYNC-EGRESS -m owner --uid-owner 2003" in v4  # the count kept once
    assert "[0:0] -A WODSYNC-EGRESS -m owner --uid-owner 2003" in v6


def test_the_refused_counts_do_not_change_the_digest_of_the_facts():
    facts: host_half.Facts = {"backend": "nft", "foreign": 0, "seats": {"2003": _seat()}}
    moved: host_half.Facts = {**facts, "seats": {"2003": _seat(rejected=99)}}
    assert host_half.stable(facts) == host_half.stable(moved)
    assert host_half.stable(facts) != host_half.stable(
        {**facts, "seats": {"2003": _seat(dns=[])}})


def _wish(allow: list[str], user: str = "student3") -> host_half.SeatWish:
    return {"user": user, "workshop": "WKSHP-Regex-Challenge", "allow": allow,
            "hub": ["127.0.0.0/8", "::1"]}


def _have(allow: list[str], user: str = "student3", rejected: int = 0) -> SeatRules:
    return {"user": user, "workshop": "WKSHP-Regex-Challenge",
            "allow": {e: [] if "gone" in e else ["203.0.113.80/32"] for e in allow},
            "hub": {"127.0.0.0/8": ["127.0.0.0/8"], "::1": ["::1/128"]},
            "dns": ["192.0.2.53/32"], "rejected": rejected}


def _plan(want: dict[int, host_half.SeatWish], have: dict[int, SeatRules], foreign: int = 0,
          backend: str | None = "nft", occupied: dict[str, Any] | None = None,
          sessions: dict[str, str] | None = None) -> PlanContext:
    plan = PlanContext("hub-amer",
                       {"egress": want, "seat": Seats(sessions or {}, {})},
                       {"egress": {"backend": backend, "foreign": foreign,
                                   "seats": {str(u): s for u, s in have.items()}},
                        "seat": {"occupied": occupied or {}}})
    egress.diff(plan)
    return plan


def test_the_plan_adds_changes_and_drops_seats_and_says_why_others_stay():
    plan = _plan({2001: _wish(["pypi.org:443"], "student1"),
                  2002: _wish(["pypi.org:443", "10.0.0.0/8"], "student2"),
                  2003: _wish(["pypi.org:443", "gone.example:443"])},
                 {2002: _have(["pypi.org:443", "192.0.2.0/24"], "student2"),
                  2003: _have(["pypi.org:443", "gone.example:443"], rejected=4),
                  2004: _have(["pypi.org:443"], "student4")})
    assert [(c.action, str(c.address), c.detail) for c in plan.changes] == [
        (Action.CREATE, "egress:student1",
         "WKSHP-Regex-Challenge allows pypi.org:443 (and loopback, hub, DNS)"),
        (Action.UPDATE, "egress:student2", "+10.0.0.0/8 -192.0.2.0/24"),
        (Action.DELETE, "egress:student4", "no longer in use by WKSHP-Regex-Challenge: its "
                                           "rules go")]
    assert [n.reason for n in plan.noops] == [
        "WKSHP-Regex-Challenge allows pypi.org:443, gone.example:443 (and loopback, hub, DNS);"
        " 4 packets refused"]
    assert plan.notes == ["egress of student3: gone.example:443 did not resolve on the host "
                          "when its rules were written: nothing allowed for them"]
    part = egress.batch(plan.want["egress"], plan.changes)
    assert part == {"set": {"2001": _wish(["pypi.org:443"], "student1"),
                            "2002": _wish(["pypi.org:443", "10.0.0.0/8"], "student2")},
                    "drop": ["2004"], "rewrite": False}


def test_a_seat_held_by_a_session_the_store_does_not_know_keeps_its_rules():
    plan = _plan({}, {2004: _have(["pypi.org:443"], "student4")},
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
