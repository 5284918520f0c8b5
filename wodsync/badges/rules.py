"""The catalog's word on a workshop's badge, for the store's award (`Badges.rules`).

Why a function of the deployment: a session ends under the revision deployed then (the one its
cleanup ran with), and a workshop that has left the catalog still ends its sessions; its badge
then keeps WoD's default (every CLEANUP earns it) and its key as title.
"""

from __future__ import annotations

from collections.abc import Callable

from wodsync.source.revision import Deployment, NotDeployed
from wodsync.store.badges import Rule


def catalog_rules(deployment: Callable[[], Deployment]) -> Callable[[str], Rule]:
    """`Badges.rules` reading the deployed catalog's workshops when a session ends."""

    def rule(workshop: str) -> Rule:
        try:
            found = deployment().catalog.workshops.get(workshop)
        except NotDeployed:
            found = None
        if found is None:
            return Rule()
        return Rule(threshold=found.badge_threshold, title=found.name,
                    image=found.badge_image or "")

    return rule
