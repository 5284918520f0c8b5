"""Re-planning WoD's seat ranges so that no two workshops of a location share a seat.

WoD's ranges overlap (12 `seats-overlap` errors in its public corpus: 6 pairs, each reported
at both workshops) and some lie outside the pool the importer writes. `replan` keeps as many
workshops where they are as possible — the most ranges that fit the pool without overlap,
chosen by earliest end, which is optimal for that count — and moves every other one, whole, to
the first gap of the pool it fits in (the largest first), growing the pool past its last seat
only when no gap is left. Each move is reported old → new with its reason, for the
operator's checklist and for WoD's api-db, whose records still hold the old ranges.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    workshop: str
    old: tuple[int, int]
    new: tuple[int, int]
    why: str

    def text(self) -> str:
        return f"{self.workshop}: seats {self.old[0]}-{self.old[1]} → {self.new[0]}-" \
               f"{self.new[1]} ({self.why})"


@dataclass(frozen=True)
class SeatPlan:
    ranges: dict[str, tuple[int, int]]
    moves: list[Move]
    pool_last: int          # the pool's last seat, grown when the ranges needed it


def _keep(ranges: dict[str, tuple[int, int]], first: int, last: int) -> dict[str, str]:
    """The workshops left in place (inside the pool, disjoint: earliest end first), and why
    each other one moves."""
    kept: list[tuple[str, tuple[int, int]]] = []
    why: dict[str, str] = {}
    for key, (a, b) in sorted(ranges.items(), key=lambda kv: (kv[1][1], kv[1][0], kv[0])):
        if a < first or b > last:
            why[key] = f"outside the pool {first}-{last}"
        elif kept and a <= kept[-1][1][1]:
            clash = [k for k, (x, y) in kept if x <= b and a <= y]
            why[key] = f"overlapped {', '.join(clash)}"
        else:
            kept.append((key, (a, b)))
            why[key] = ""
    return why


def replan(ranges: dict[str, tuple[int, int]], first: int, last: int) -> SeatPlan:
    """Ranges (workshop → (first, last)) packed into the pool `first..last` without overlap."""
    why = _keep(ranges, first, last)
    taken = sorted(r for k, r in ranges.items() if not why[k])
    result = {k: r for k, r in ranges.items() if not why[k]}
    moves = []
    pool_last = last
    # The largest first (first-fit decreasing): small ranges then fill the gaps left.
    for key in sorted((k for k in ranges if why[k]), key=lambda k: (-_size(ranges[k]), k)):
        size = _size(ranges[key])
        start = _gap(taken, first, size, last)
        new = (start, start + size - 1)
        pool_last = max(pool_last, new[1])
        taken = sorted([*taken, new])
        result[key] = new
        moves.append(Move(key, ranges[key], new, why[key]))
    return SeatPlan(result, sorted(moves, key=lambda m: (m.old, m.workshop)), pool_last)


def _size(r: tuple[int, int]) -> int:
    return r[1] - r[0] + 1


def _gap(taken: list[tuple[int, int]], first: int, size: int, last: int) -> int:
    """The first seat of the first gap of `size` seats (past `last` when none is left)."""
    start = first
    for a, b in taken:
        if a - start >= size and start + size - 1 <= last:
            return start
        start = max(start, b + 1)
    return start
