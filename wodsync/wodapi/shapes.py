"""The answers of WoD's api-db, built from wodsync's catalog and store.

Why their own module: the field names are WoD's (camelCase, as wod-api-db's Sequelize models
name them and wod-frontend reads them), each built from one wodsync value, so the mapping
between the two vocabularies is in one place. What a browser may not see is left out here:
a customer's name and e-mail (its id is a small integer anyone can count through) and a
student's password (checked on the server instead, `customers.unregister`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from wodsync.badges.specials import SPECIALS
from wodsync.catalog.models import Replay, Workshop
from wodsync.store.registrations import Registration
from wodsync.store.sessions import Session
from wodsync.store.wodids import WodId


def when(moment: datetime | None) -> str | None:
    """A time as Sequelize sends a DATE: ISO 8601 in UTC with milliseconds and `Z`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def number(value: float) -> int | float:
    """WoD's durations are integers (hours): a whole number is sent as one."""
    return int(value) if float(value).is_integer() else value


def digest(workshop: Workshop) -> str:
    """What `updatedAt` follows: any change of the workshop's definition."""
    return hashlib.sha256(workshop.model_dump_json().encode()).hexdigest()


def workshop(key: str, w: Workshop, ident: WodId, seats_left: int, popular: bool,
             replay: Replay | None) -> dict[str, Any]:
    """One row of WoD's `workshops` table (`models/workshop.js`) and its `popular` flag.
    `capacity` is what WoD's counter means: the seats left (the portal greys out a card at 0)."""
    return {
        "id": ident.id, "name": w.name, "notebook": key, "description": w.description,
        "capacity": max(0, seats_left), "priority": w.priority,
        "range": [w.seats.first, w.seats.last], "reset": w.reset, "varpass": w.varpass,
        "ldap": w.ldap, "monoappliance": w.appliance == "mono",
        "multiappliance": w.appliance == "multi", "beta": w.beta, "sessionId": None,
        "sessionType": w.session_type, "location": w.location, "avatar": w.avatar,
        "role": w.role, "presenter": w.presenter, "preRequisite": None,
        "compile": ",".join(w.compile) or None,
        "replayLink": replay.video if replay else None,
        "replayId": w.replay, "active": w.active, "workshopImg": w.workshop_image,
        "badgeImg": w.badge_image, "category": list(w.category),
        "alternateLocation": list(w.alternate_locations), "duration": number(w.duration),
        "createdAt": when(ident.created_at), "updatedAt": when(ident.updated_at),
        "popular": popular,
    }


def special_badges() -> list[dict[str, Any]]:
    """WoD's five special badges with the ids of its seeder (`05-special_badges.js`), their
    images where wod-frontend keeps them (`static/img/<n>_workshops_<level>.jpg`)."""
    return [{"id": n, "name": s.title,
             "title": f"Congratulations on earning your {s.title} badge!",
             "description": f"You have been awarded the {s.title} badge for completing "
                            f"{s.completed} Workshops-on-Demand.",
             "badgeImg": f"/img/{s.completed}_workshops_{s.key}.jpg"}
            for n, s in enumerate(SPECIALS, start=1)]


def customer(ident: int, registration: Registration | None, session: Session | None,
             title: str, student_id: int | None) -> dict[str, Any]:
    """What a customer's row may show anyone who knows its number: which workshop, when, and
    its student's number — not who registered (no name, e-mail, company)."""
    key = session.workshop if session else registration.workshop if registration else ""
    running = session is not None and session.state.value == "active"
    return {
        "id": ident, "sessionName": title, "notebook": key,
        "sessionType": "Workshops-on-Demand", "location": session.location if session else None,
        "active": running, "studentId": student_id,
        "startDate": when(session.started_at) if session else None,
        "endDate": when((session.ended_at or session.ends_at) if session else None),
        "completionPercentage": None if session is None or session.completion is None
        else round(session.completion),
        "createdAt": when(session.created_at if session else
                          registration.created_at if registration else None),
    }


def student(ident: int, username: str, location: str, assigned: bool) -> dict[str, Any]:
    """A student account as WoD's `students` row, without its `password` column."""
    return {"id": ident, "username": username, "location": location, "assigned": assigned}
