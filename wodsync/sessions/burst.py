"""CREATEs of a burst share agent calls: the seats waiting for one host go in one round trip.

A seat operation's fixed costs dwarf its own work: an exec channel and a python3 start
(≈ 180 ms), a `chpasswd` run, a hub request for the group. When a hundred participants
register at once they would pay them a hundred times over while competing for the same cores.
So at most `lanes` calls per host are in flight; a CREATE that finds them all busy waits, and
the next call to leave takes every seat waiting (up to `most`) in one `seat_create`. A CREATE
alone never waits: with a free lane its call leaves at once, with its seat alone.

Each waiting thread either carries a call or waits for the one that carries its seat, so no
thread works past the end of its own CREATE for the others' sake.

The ends of sessions (CLEANUP, RESET, PURGE) burst the same way, in a `Burst` of their own
whose call is `seat_end`: each seat carries its `end`, so one call may mix them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wodsync.agent.protocol import Seat, SeatCreateRequest, SeatEndRequest
from wodsync.catalog.models import Host

LANES = 3
MOST = 16

# (host name, host, payload of the call) → the agent's answer: `Connections.call` for one op
Call = Callable[[str, Host, SeatCreateRequest | SeatEndRequest], Any]


@dataclass
class _Ticket:
    seat: Seat
    answer: Any = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Host:
    waiting: list[_Ticket] = field(default_factory=list)
    busy: int = 0


class Burst:
    """Seat payloads in, each seat's own answer out; calls shared between concurrent callers."""

    def __init__(self, call: Call, lanes: int = LANES, most: int = MOST) -> None:
        self._call = call
        self.lanes = lanes
        self.most = most
        self._cond = threading.Condition()
        self._hosts: dict[str, _Host] = {}

    def waiting(self, name: str) -> int:
        """How many CREATEs wait for a lane on the host."""
        with self._cond:
            return len(self._hosts[name].waiting) if name in self._hosts else 0

    def create(self, name: str, host: Host, seat: Seat) -> dict[str, Any]:
        """The seat's answer; an error of the whole call (transport, agent) is raised."""
        return self._send(name, host, seat)

    def end(self, name: str, host: Host, seat: Seat) -> dict[str, Any]:
        """The seat's answer to its end (`seat["end"]`); an error of the whole call is
        raised."""
        return self._send(name, host, seat)

    def _send(self, name: str, host: Host, seat: Seat) -> dict[str, Any]:
        ticket = _Ticket(seat)
        with self._cond:
            queue = self._hosts.setdefault(name, _Host())
            queue.waiting.append(ticket)
            while not ticket.done:
                if queue.busy < self.lanes and queue.waiting:
                    batch = queue.waiting[:self.most]
                    del queue.waiting[:self.most]
                    queue.busy += 1
                    self._cond.release()
                    try:
                        self._carry(name, host, batch)
                    finally:
                        self._cond.acquire()
                        queue.busy -= 1
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.answer

    def _carry(self, name: str, host: Host, batch: list[_Ticket]) -> None:
        """One agent call for the batch; every ticket of it is done afterwards, whatever
        happened."""
        first = batch[0].seat
        payload: SeatCreateRequest | SeatEndRequest = {
            "state_dir": first["state_dir"], "owner": first["owner"],
            "seats": [t.seat for t in batch]}
        try:
            answers = self._call(name, host, payload)["seats"]
            for ticket, answer in zip(batch, answers, strict=True):
                ticket.answer = answer
        except BaseException as exc:  # the whole call failed: each CREATE of it says so
            for ticket in batch:
                ticket.error = exc
        finally:
            for ticket in batch:
                ticket.done = True
