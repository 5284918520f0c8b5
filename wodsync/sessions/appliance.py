"""A session's seat on its workshop's appliance (controller side).

At CREATE, before the hub host is touched, the seat's account on the appliance host
(`seatvalues.appliance_of`) is made ready for the participant: a fresh ed25519 key pair made
here, on the controller (`cryptography`, no tool run), its public half the only authorized key
of that account, and the session's password. The private half travels, with the appliance's
pinned host key, only in the hub host's CREATE payload on stdin (`SeatKey`), and lands in the
seat's `~/.ssh` there: the seat's ssh kernel logs in to the appliance as the seat's account,
host key checked. The key is never stored, logged or shown; each CREATE makes a new one.

At the end of the session (and after a CREATE that failed) the appliance account is released:
password locked, processes ended, home and its authorized key emptied — the old key no longer
logs in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wodsync.agent.protocol import ApplianceSeat, SeatKey
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import Host
from wodsync.engine.connections import Connections
from wodsync.engine.context import LiveSeat
from wodsync.engine.remote import HostError, host_payload
from wodsync.engine.transport import TransportError
from wodsync.render.seatvalues import SeatValueError, appliance_of
from wodsync.store import Session


@dataclass(frozen=True)
class ApplianceSeatRef:
    """Where a session's seat lives on its appliance: the host and the account."""

    host: str
    user: str
    uid: int


def appliance_seat(catalog: Catalog, session: Session) -> ApplianceSeatRef | None:
    """The session's appliance account; None for a workshop without an appliance host (or
    gone from the catalog)."""
    ws = catalog.workshops.get(session.workshop)
    if ws is None:
        return None
    where = appliance_of(catalog, ws, session.seat)
    if where is None:
        return None
    pool = catalog.pools[catalog.hosts[where[0]].pool]
    return ApplianceSeatRef(where[0], where[1], pool.uid_base + session.seat)


def new_key(comment: str) -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key in OpenSSH's format, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def known_hosts_line(host: Host) -> str:
    """The appliance's pinned host key as `known_hosts` spells it (`[address]:port` off 22)."""
    name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
    return f"{name} {host.host_key}" if host.host_key else ""


def seat_key(catalog: Catalog, ref: ApplianceSeatRef, private: str, public: str) -> SeatKey:
    return {"private": private, "public": public,
            "known_hosts": known_hosts_line(catalog.hosts[ref.host])}


def create_payload(catalog: Catalog, ref: ApplianceSeatRef, password: str,
                   public: str) -> ApplianceSeat:
    return {**host_payload(ref.host, catalog.hosts[ref.host]), "user": ref.user,
            "uid": ref.uid, "password": password, "public_key": public}


def release_payload(catalog: Catalog, ref: ApplianceSeatRef) -> ApplianceSeat:
    return {**host_payload(ref.host, catalog.hosts[ref.host]), "user": ref.user,
            "uid": ref.uid}


class ApplianceFailed(Exception):
    """The appliance host refused the seat's account (the message names the steps)."""


class ApplianceUnreachable(TransportError):
    """The appliance host could not be reached (`host` names it)."""

    def __init__(self, host: str, problem: str) -> None:
        super().__init__(problem)
        self.host = host


class Appliances:
    """The appliance side of CREATE and release, over the session service's connections."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def _call(self, catalog: Catalog, name: str, op: str, payload: ApplianceSeat) -> Any:
        try:
            return self.connections.call(name, catalog.hosts[name], op, payload)
        except TransportError as exc:
            raise ApplianceUnreachable(name, f"appliance {name}: {exc}") from None

    def create(self, catalog: Catalog, session: Session) -> SeatKey | None:
        """The seat's appliance account ready, and the key for the seat's `~/.ssh`; None for
        a workshop without an appliance host."""
        ref = appliance_seat(catalog, session)
        if ref is None:
            return None
        private, public = new_key(f"{session.username}@{session.host}")
        answer = self._call(catalog, ref.host, "appliance_seat_create",
                            create_payload(catalog, ref, session.password, public))
        if not answer["ok"]:
            raise ApplianceFailed(f"appliance {ref.host} ({ref.user}): "
                                  + "; ".join(answer["errors"]))
        return seat_key(catalog, ref, private, public)

    def release(self, catalog: Catalog, session: Session) -> list[str]:
        """The seat's appliance account released; what did not finish (nothing: released, or
        no appliance to release)."""
        try:
            ref = appliance_seat(catalog, session)
        except SeatValueError as exc:
            return [str(exc)]
        if ref is None:
            return []
        try:
            answer = self._call(catalog, ref.host, "appliance_seat_release",
                                release_payload(catalog, ref))
        except (TransportError, HostError) as exc:
            return [str(exc)]
        return [f"appliance {ref.host} ({ref.user}): {e}" for e in answer["errors"]]


def live_on_appliance(catalog: Catalog, name: str,
                      holding: Callable[[str], list[Session]]) -> list[LiveSeat]:
    """The accounts of appliance host `name` that sessions hold (`holding(host)`: the sessions
    holding a seat on a hub host): a full apply keeps their passwords and homes, as it does
    their seats' on the hub host."""
    host = catalog.hosts.get(name)
    if host is None or host.role != "appliance":
        return []
    found = []
    for hub in sorted(n for n, h in catalog.hosts.items() if h.role == "hub"):
        for session in holding(hub):
            try:
                ref = appliance_seat(catalog, session)
            except SeatValueError:
                continue
            if ref is not None and ref.host == name:
                found.append(LiveSeat(ref.user, session.id, session.workshop, in_group=False))
    return found
