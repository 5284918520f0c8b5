"""The api-db routes wod-frontend calls, under the catalog's `wod_api.prefix`.

Why `/{prefix:path}/…`: the prefix is the deployed catalog's (`catalog/portal.yaml`), which
the daemon learns after its application is built; each route matches any prefix and answers
404 unless it is the deployed one and `wod_api.enabled`. Routes of the application that were
registered first (`/api/v1/workshops`) still win on their own paths.

Public like WoD's, no token; answers carry CORS headers for the catalog's `wod_api.origins`
(wod-frontend's browser calls from its own site). Refusals are `{"message": …}`, the field
wod-frontend shows (`err.response.data.message`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from wodsync.api.deps import SessionsDep
from wodsync.api.pages import STATUS
from wodsync.api.routes.register import portal_of
from wodsync.catalog.models import WodApi
from wodsync.portal.screening import Refusal
from wodsync.sessions.service import SessionService
from wodsync.store.wodids import WodIds, popular
from wodsync.wodapi import shapes
from wodsync.wodapi.customers import Customers, Denied, Unknown

router = APIRouter(tags=["WoD api-db"], include_in_schema=False)
TEXT = 400


class CustomerIn(BaseModel):
    """wod-frontend's registration form (`ScheduleCard.js` `formData`); what else it sends is
    ignored, as wod-api-db ignores it."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field("", max_length=TEXT)
    email: str = Field("", max_length=TEXT)
    company: str = Field("", max_length=TEXT)
    title: str = Field("", max_length=TEXT)
    notebook: str = Field("", max_length=100)
    termsAndConditions: bool = False  # WoD's name


class CredentialsIn(BaseModel):
    """What the participant typed in the unregister dialog."""

    model_config = ConfigDict(extra="ignore")
    username: str = Field(max_length=100)
    password: str = Field(max_length=TEXT)


def settings(service: SessionService, prefix: str) -> WodApi:
    """The deployed `wod_api` settings if `prefix` is theirs and they are on; else a 404."""
    wod = service.deployment().catalog.portal.wod_api
    if not wod.enabled or "/" + prefix != wod.prefix:
        raise HTTPException(404, "Not Found")
    return wod


def cors(request: Request, wod: WodApi) -> dict[str, str]:
    """The CORS headers a request from an allowed origin gets (none for another)."""
    origin = request.headers.get("origin")
    if origin not in wod.origins:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def answer(request: Request, wod: WodApi, body: Any, status: int = 200) -> JSONResponse:
    """`body` with the CORS headers an allowed origin needs."""
    return JSONResponse(body, status, headers=cors(request, wod))


def refused(request: Request, wod: WodApi, message: str, status: int) -> JSONResponse:
    return answer(request, wod, {"message": message}, status)


def client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/{prefix:path}/workshops")
def workshops(prefix: str, request: Request, service: SessionsDep,
              active: bool | None = None) -> Response:
    """WoD's workshops by priority (`?active=true`: only the active ones), with `popular`."""
    wod = settings(service, prefix)
    catalog = service.deployment().catalog
    ids = WodIds(service.store.engine).workshops(
        {k: shapes.digest(w) for k, w in catalog.workshops.items()})
    live = service.store.sessions.live_per_workshop()
    top = set(popular(service.store.engine))
    replays = {r.id: r for r in catalog.replays if r.active}
    rows = [shapes.workshop(k, w, ids[k], w.capacity - live.get(k, 0), k in top,
                            replays.get(w.replay) if w.replay else None)
            for k, w in sorted(catalog.workshops.items(),
                               key=lambda kv: (kv[1].priority, ids[kv[0]].id))
            if active is None or w.active == active]
    return answer(request, wod, rows)


@router.get("/{prefix:path}/workshops/{ident}")
def workshop(prefix: str, ident: int, request: Request, service: SessionsDep) -> Response:
    """One workshop by its number (wod-frontend reads its `capacity`)."""
    wod = settings(service, prefix)
    catalog = service.deployment().catalog
    ids = WodIds(service.store.engine).workshops(
        {k: shapes.digest(w) for k, w in catalog.workshops.items()})
    key = next((k for k, i in ids.items() if i.id == ident), None)
    if key is None:
        return refused(request, wod, "Workshop Not Found", 404)
    w = catalog.workshops[key]
    live = service.store.sessions.live_per_workshop().get(key, 0)
    replay = next((r for r in catalog.replays if r.active and r.id == w.replay), None)
    return answer(request, wod, shapes.workshop(
        key, w, ids[key], w.capacity - live, key in popular(service.store.engine), replay))


@router.get("/{prefix:path}/special-badges")
def special_badges(prefix: str, request: Request, service: SessionsDep) -> Response:
    """WoD's special badges (wod-frontend builds a page per badge at its build)."""
    return answer(request, settings(service, prefix), shapes.special_badges())


@router.post("/{prefix:path}/customer")
def register(prefix: str, body: CustomerIn, request: Request,
             service: SessionsDep) -> Response:
    """A registration through the portal's journey: 200 `{id, name, email, studentId,
    proxy}` (the seat comes at the click on the mailed link); 202 `{id, title, endDate}`
    when the person already has a live session (wod-frontend's unregister dialog opens)."""
    wod = settings(service, prefix)
    portal = portal_of(request, service)
    customers = Customers(portal)
    key = _workshop_key(service, body)
    try:
        made = customers.register(key, body.name, body.email, body.company,
                                  body.termsAndConditions, client(request))
    except Refusal as exc:
        if exc.session is None:
            return refused(request, wod, str(exc), STATUS[exc.why])
        held = customers.of_session(exc.session)
        return answer(request, wod, {"id": held.id, "title": portal.title(held.workshop),
                                     "endDate": shapes.when(exc.session.ends_at)}, 202)
    assert made.registration is not None
    return answer(request, wod, {"id": made.id, "name": made.registration.name,
                                 "email": made.registration.email, "studentId": None,
                                 "proxy": "wod"})


def _workshop_key(service: SessionService, body: CustomerIn) -> str:
    """The workshop named by its folder (`notebook`), else by its title as wod-api-db finds
    it; "" when neither is one (the portal refuses it as unknown)."""
    catalog = service.deployment().catalog
    if body.notebook in catalog.workshops:
        return body.notebook
    return next((k for k, w in sorted(catalog.workshops.items()) if w.name == body.title), "")


@router.get("/{prefix:path}/customers/{ident}")
def customer(prefix: str, ident: int, request: Request, service: SessionsDep) -> Response:
    """A customer's workshop, times and student number — nothing that says who they are."""
    wod = settings(service, prefix)
    portal = portal_of(request, service)
    customers = Customers(portal)
    try:
        found = customers.get(ident)
    except Unknown:
        return refused(request, wod, "Customer Not Found", 404)
    return answer(request, wod, shapes.customer(
        found.id, found.registration, found.session, portal.title(found.workshop),
        customers.student_id(found)))


@router.get("/{prefix:path}/students/{ident}")
def student(prefix: str, ident: int, request: Request, service: SessionsDep) -> Response:
    """A student account: its username and whether it is taken; never its password."""
    wod = settings(service, prefix)
    try:
        username, location, taken = Customers(portal_of(request, service)).student(ident)
    except Unknown:
        return refused(request, wod, "Student Not Found", 404)
    return answer(request, wod, shapes.student(ident, username, location, taken))


@router.put("/{prefix:path}/customer/unregister/{ident}")
def unregister(prefix: str, ident: int, body: CredentialsIn, request: Request,
               service: SessionsDep) -> Response:
    """CLEANUP of the customer's running workshop, the seat's credentials checked here:
    200 the customer, ended; 403 wrong credentials; 410 nothing running; 429 too many tries."""
    wod = settings(service, prefix)
    portal = portal_of(request, service)
    customers = Customers(portal)
    try:
        found = customers.get(ident)
        ended = customers.unregister(found, body.username, body.password, client(request))
    except Unknown:
        return refused(request, wod, "Customer Not Found", 404)
    except Denied:
        return refused(request, wod, "Invalid user name or password", 403)
    except Refusal as exc:
        return refused(request, wod, str(exc), STATUS[exc.why])
    return answer(request, wod, shapes.customer(
        found.id, found.registration, ended, portal.title(ended.workshop),
        customers.student_id(found)))


@router.post("/{prefix:path}/login")
def login(prefix: str, request: Request, service: SessionsDep) -> Response:
    """wod-frontend logs in when a route answers 401, which none of these does: there are no
    accounts to log in to."""
    return refused(request, settings(service, prefix),
                   "No accounts here: these routes need no token.", 404)


@router.options("/{prefix:path}/customer")
@router.options("/{prefix:path}/customer/unregister/{ident}")
def preflight(prefix: str, request: Request, service: SessionsDep) -> Response:
    """CORS preflight of the two writes (a JSON body makes the browser ask first)."""
    headers = cors(request, settings(service, prefix))
    if headers:
        headers.update({"Access-Control-Allow-Methods": "POST, PUT",
                        "Access-Control-Allow-Headers": "content-type, x-access-token",
                        "Access-Control-Max-Age": "600"})
    return Response(status_code=204, headers=headers)
