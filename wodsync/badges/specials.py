"""WoD's special badges: Apprentice, Expert, Hero, Super Hero and Legend at 3, 5, 7, 10 and 15
completed workshops per person.

WoD (wod-api-db, `CheckCustomers`) counts the distinct workshops an e-mail finished; here a
workshop counts once its badge was awarded (at the default threshold of 0 that is every
workshop ended by CLEANUP, as in WoD), per folded address (`identity.fold_email`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Special:
    key: str          # the level's key in the store and its badge class URL
    title: str
    completed: int    # distinct workshops completed to earn it

    @property
    def criteria(self) -> str:
        return f"Completed {self.completed} different Workshops-on-Demand."


SPECIALS: tuple[Special, ...] = (
    Special("apprentice", "Apprentice", 3),
    Special("expert", "Expert", 5),
    Special("hero", "Hero", 7),
    Special("superhero", "Super Hero", 10),
    Special("legend", "Legend", 15),
)
BY_KEY = {s.key: s for s in SPECIALS}


def earned(completed: int) -> list[Special]:
    """The levels `completed` distinct workshops reach."""
    return [s for s in SPECIALS if completed >= s.completed]
