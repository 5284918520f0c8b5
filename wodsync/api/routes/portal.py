"""`/api/v1/workshops` and `/api/v1/replays`: the registration portal's public, read-only feed,
from the deployed catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from wodsync.api.deps import SessionsDep
from wodsync.api.models import ReplayOut, WorkshopOut

router = APIRouter(prefix="/api/v1", tags=["portal"])


@router.get("/workshops", response_model=list[WorkshopOut])
def workshops(service: SessionsDep) -> Any:
    """Every active workshop, by priority, with the seats it has left."""
    catalog = service.deployment().catalog
    live = service.store.sessions.live_per_workshop()
    return [WorkshopOut(key=k, title=w.name, description=w.description,
                        category=list(w.category), duration=w.duration,
                        session_type=w.session_type, workshop_image=w.workshop_image,
                        badge_image=w.badge_image, presenter=w.presenter, role=w.role,
                        avatar=w.avatar, replay=w.replay, location=w.location,
                        alternate_locations=list(w.alternate_locations),
                        capacity=w.capacity,
                        seats_left=max(0, w.capacity - live.get(k, 0)))
            for k, w in sorted(catalog.workshops.items(), key=lambda kv: (
                kv[1].priority, kv[0])) if w.active]


@router.get("/replays", response_model=list[ReplayOut])
def replays(service: SessionsDep) -> Any:
    catalog = service.deployment().catalog
    return [ReplayOut(id=r.id, title=r.title, description=r.description,
                      presenter=r.presenter, role=r.role, avatar=r.avatar, video=r.video,
                      workshop=r.workshop) for r in catalog.replays if r.active]
