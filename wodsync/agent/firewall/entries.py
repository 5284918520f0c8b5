"""Egress entries: what a workshop's `egress:` list may say, in one canonical spelling, and
what a name resolves to on the host.

An entry is an address or network, or a host name, with an optional port: `10.1.2.3`,
`10.0.0.0/8`, `10.0.0.0/8:443`, `[2001:db8::1]:443`, `2001:db8::/32`, `pypi.org:443`,
`pypi.org`. A port allows TCP and UDP to it; no port allows every protocol and port. The
catalog (`catalog.models`) validates entries with `canonical` and the host builds rules from
them, so both ends read an entry alike. Standard library only: shipped with the agent.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple

# A DNS name: labels of letters, digits and '-', not starting or ending with '-'. Kept short
# enough that a rule's comment (nft allows 128 bytes) holds the entry and an address.
NAME_RE = re.compile(r"^(?=.{1,80}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Target(NamedTuple):
    """An entry taken apart: a network (a single address is a /32 or /128) or a name, and
    the port (None: every port and protocol)."""

    network: Network | None
    name: str | None
    port: int | None

    def __str__(self) -> str:
        if self.network is None:
            where = str(self.name)
        elif self.network.num_addresses == 1:
            where = str(self.network.network_address)
        else:
            where = str(self.network)
        if self.port is None:
            return where
        return f"[{where}]:{self.port}" if self.network is not None \
            and self.network.version == 6 else f"{where}:{self.port}"


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"egress entry {entry!r}: port {text!r} is not a number 1-65535")
    return int(text)


def _split(entry: str) -> tuple[str, int | None]:
    """The address part and the port: `[v6]:port`, `v6` (no port), `v4-or-name[:port]`."""
    if entry.startswith("["):
        where, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"egress entry {entry!r}: write an IPv6 address with a port as "
                             "[address]:port")
        return where, _port(rest[1:], entry) if rest else None
    if entry.count(":") > 1:
        return entry, None
    where, colon, port = entry.partition(":")
    return where, _port(port, entry) if colon else None


def parse(entry: str) -> Target:
    """An entry taken apart, or a ValueError that names it and says what is wrong."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError("an egress entry must be a non-empty string such as 10.0.0.0/8:443 "
                         "or pypi.org:443")
    where, port = _split(entry.strip())
    if where and (where[0].isdigit() or ":" in where):
        try:
            return Target(ipaddress.ip_network(where, strict=True), None, port)
        except ValueError as exc:
            raise ValueError(f"egress entry {entry!r}: {exc}") from None
    if not NAME_RE.match(where):
        raise ValueError(f"egress entry {entry!r}: {where!r} is neither an address, a network "
                         "(10.0.0.0/8) nor a host name")
    return Target(None, where.lower(), port)


def canonical(entry: str) -> str:
    """The one spelling of an entry (what plans, facts and rules show)."""
    return str(parse(entry))


def resolve(target: Target) -> list[str]:
    """The networks an entry stands for on this host, as rule addresses: a network as it is,
    a name as the host's resolver answers now (each address, IPv4 and IPv6; none when it
    does not resolve)."""
    if target.network is not None:
        return [str(target.network)]
    try:
        found = socket.getaddrinfo(target.name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}
    return [str(ipaddress.ip_network(a)) for a in sorted(addresses, key=lambda a: (a.version, a))]


def resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """The name servers of the host's resolver configuration, as networks (/32, /128); a
    scoped link-local one (fe80::1%eth0) is left out: a rule cannot name its interface."""
    found: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and "%" not in words[1]:
            try:
                network = str(ipaddress.ip_network(words[1]))
            except ValueError:
                continue
            if network not in found:
                found.append(network)
    return found


def version(network: str) -> int:
    return ipaddress.ip_network(network).version
