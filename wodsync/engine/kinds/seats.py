"""seat: a seat given to a session — CREATE, CLEANUP, RESET and PURGE on the host, and what a
full apply must know of seats in use.

A session's seat is set up in one round trip (`seat_create`): the previous occupant's server
stopped and processes ended, the home reset from /etc/skel, the workshop's `create` hook, its
`compile` scripts compiled with `shc` (their sources never reach the student), the rendered
workshop folder written, `post_copy`, a new password (hashed by the host's own `chpasswd`, read
on stdin), the seat added to the workshop's hub group and its server started without waiting.
The call takes the several seats of a burst too (one python3 start, one `chpasswd`, one hub
request per group for all of them). A step that fails purges its seat alone (nothing half-made
remains) and the seat's answer says which step and why, with the hooks' output.

Every write below the home goes through `agent.safefs`: a link the seat's student, or its
previous occupant, planted is never followed. Hook scripts are root's: they run from a folder
of root's (never from the home, which the student controls) with a fixed environment, and are
not copied into the home.

Seat operations hold the host's lock shared (so they never interleave with an apply, which
holds it exclusively) and the seat's own lock exclusively. Each seat in use is recorded on the
host (`<state_dir>/seats/<user>.json`), so a full apply never locks or empties it even if the
controller's store were lost; the accounts kind reads these records.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wodsync.agent import accountsdb, hostlock, hubapi, safefs
from wodsync.agent.run import BASE_PATH, kill_uid, run

if TYPE_CHECKING:
    from wodsync.engine.desired import DesiredContext
    from wodsync.engine.kinds.base import PlanContext

KIND = "seat"
SEATS_DIR = "seats"
HOOK_OUTPUT = 64 * 1024
NOTEBOOK_LIMIT = 32 << 20
HOME_FILE_LIMIT = 5000


@dataclass(frozen=True)
class Seats:
    """Seats of this host given to live sessions (user → session id)."""

    sessions: dict[str, str]


DATA = None


def desired(ctx: DesiredContext) -> Seats:
    return Seats({s.username: s.session for s in ctx.live_seats})


def probe(want: Seats) -> dict[str, Any]:
    return {}


# ---- records of seats in use ------------------------------------------------------------------

def _records_dir(state_dir):
    return os.path.join(state_dir, SEATS_DIR)


def read_records(state_dir):
    """user → record, for every seat the host knows to be in use."""
    found = {}
    folder = _records_dir(state_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    found[name[:-5]] = json.load(f)
            except (OSError, ValueError):
                found[name[:-5]] = {"session": "?", "state": "unreadable"}
    return found


def _write_record(state_dir, user, record):
    folder = _records_dir(state_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".seat-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(folder, user + ".json"))


def _read_record(state_dir, user):
    try:
        with open(os.path.join(_records_dir(state_dir), user + ".json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _drop_record(state_dir, user):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(_records_dir(state_dir), user + ".json"))


@contextlib.contextmanager
def _seat_lock(payload, users=None):
    """The host shared (no apply meanwhile), the seats exclusively — in name order, so two
    calls locking several seats never wait for each other in a circle."""
    state_dir = payload["state_dir"]
    with hostlock.hold(state_dir, "seat", exclusive=False,
                       timeout=payload.get("lock_timeout", 30.0)), contextlib.ExitStack() as held:
        os.makedirs(_records_dir(state_dir), mode=0o700, exist_ok=True)
        for user in sorted(users or [payload["user"]]):
            fd = os.open(os.path.join(_records_dir(state_dir), user + ".lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            held.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield


# ---- full apply: observe and diff ---------------------------------------------------------------

def observe(probe: dict[str, Any], host: Any) -> dict[str, Any]:
    return {"occupied": {u: {"session": r.get("session"), "state": r.get("state")}
                         for u, r in read_records(host.state_dir).items()}}


def diff(plan: PlanContext) -> None:
    want: Seats = plan.want[KIND]
    occupied = plan.facts[KIND]["occupied"]
    for user, record in sorted(occupied.items()):
        session = want.sessions.get(user)
        if session is None:
            plan.notes.append(f"seat {user} holds session {record['session']} on the host, "
                              "unknown to the store: left alone (purge it to free the seat)")
        elif session != record["session"]:
            plan.notes.append(f"seat {user} holds session {record['session']} on the host, "
                              f"the store says {session}: left alone")
        else:
            plan.noop(KIND, user, f"is in use by session {session}")
    for user, session in sorted(want.sessions.items()):
        if user not in occupied:
            plan.notes.append(f"session {session} has no record of seat {user} on the host")


def batch(want: Seats, changes: list[Any]) -> dict[str, Any]:
    return {}


PHASES = ()


# ---- steps of the seat operations ---------------------------------------------------------

class Steps:
    """Timings and hook outputs of one seat operation, step by step."""

    def __init__(self):
        self.timings = {}
        self.outputs = []
        self.notes = []
        self.current = ""

    @contextlib.contextmanager
    def step(self, name):
        self.current = name
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 4)

    def answer(self, **extra):
        return {"timings": self.timings, "outputs": self.outputs, "notes": self.notes, **extra}


def _user(payload):
    entry = pwd.getpwnam(payload["user"])
    if entry.pw_uid != payload["uid"]:
        raise RuntimeError(f"{payload['user']} has uid {entry.pw_uid}, expected "
                           f"{payload['uid']}: not a seat of this pool")
    return entry


def _hub(payload, method, path, body=None):
    hub = payload["hub"]
    return hubapi.request(hub["api"], hub["token"], method, path, body, timeout=20)


def _stop_server(payload, wait=True):
    if payload.get("hub"):
        hub = payload["hub"]
        try:
            hubapi.stop_server(hub["api"], hub["token"], payload["user"],
                               wait=30 if wait else 0)
        except hubapi.HubApiError as exc:
            if exc.status != 404:
                raise


def _group(payload, add, users=None):
    """The seat (or `users`, seats of one workshop) into or out of its workshop's hub group."""
    hub = payload.get("hub")
    if not hub or not hub.get("group"):
        return
    path = f"/groups/{hubapi.quote(hub['group'])}/users"
    body = {"users": users or [payload["user"]]}
    try:
        _hub(payload, "POST" if add else "DELETE", path, body)
    except hubapi.HubApiError as exc:
        if exc.status != 404:
            raise
        if add:  # the workshop's group is not there yet: make it with the seat in it
            _hub(payload, "POST", f"/groups/{hubapi.quote(hub['group'])}", body)


def _join_groups(payloads):
    """Each seat into its workshop's hub group: one request per group, whatever the seats."""
    groups = {}
    for p in payloads:
        if p.get("hub") and p["hub"].get("group"):
            groups.setdefault(p["hub"]["group"], []).append(p)
    for members in groups.values():
        _group(members[0], add=True, users=[p["user"] for p in members])


def _start_server(payload, steps):
    """Ask for the seat's server and go on: "started", or "deferred" when the hub already
    starts as many servers as its `spawn_limit` allows (429) — the controller asks again later
    (`seat_servers`), and the student's login would start it anyway."""
    if not payload.get("hub"):
        return None
    try:
        _hub(payload, "POST", f"/users/{hubapi.quote(payload['user'])}/server")
    except hubapi.HubApiError as exc:
        if exc.status == 429:
            steps.notes.append("server start deferred: the hub is starting as many servers as "
                               "its spawn_limit allows")
            return "deferred"
        if exc.status != 400:  # 400: already running or starting
            raise
    return "started"


def _hook(payload, name, steps):
    """A workshop hook, as root, from root's own folder, with a fixed environment."""
    hook = (payload.get("hooks") or {}).get(name)
    if not hook:
        return
    folder = tempfile.mkdtemp(prefix="wodsync-hook-", dir=_run_dir(payload["state_dir"]))
    try:
        script = os.path.join(folder, os.path.basename(hook["path"]))
        with open(os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as f:
            f.write(base64.b64decode(hook["data"]))
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **payload["env"]}
        try:
            done = subprocess.run([script], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=payload.get("hook_timeout", 120))
        except subprocess.TimeoutExpired as exc:
            steps.outputs.append({"hook": name, "status": None,
                                  "output": (exc.output or b"")[-HOOK_OUTPUT:].decode(
                                      errors="replace")})
            raise RuntimeError(f"hook {name} ({hook['path']}) did not finish within "
                               f"{payload.get('hook_timeout', 120)} s") from None
        output = done.stdout[-HOOK_OUTPUT:].decode(errors="replace")
        steps.outputs.append({"hook": name, "status": done.returncode, "output": output})
        if done.returncode != 0:
            raise RuntimeError(f"hook {name} ({hook['path']}) exited {done.returncode}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_dir(state_dir):
    folder = os.path.join(state_dir, "run")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def _compile(payload, files):
    """Scripts listed in `compile` become shc binaries under the same name; their sources
    never reach the home."""
    wanted = set(payload.get("compile") or [])
    if not wanted:
        return files
    folder = tempfile.mkdtemp(prefix="wodsync-shc-", dir=_run_dir(payload["state_dir"]))
    try:
        out = []
        for rel, data, mode in files:
            if rel not in wanted:
                out.append((rel, data, mode))
                continue
            source = os.path.join(folder, "script")
            with open(source, "wb") as f:
                f.write(data)
            run(["shc", "-f", source, "-o", source + ".bin"], timeout=120)
            with open(source + ".bin", "rb") as f:
                out.append((rel, f.read(), 0o755))
            for leftover in (source, source + ".bin", source + ".x.c"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _files(payload):
    return [(f["path"], base64.b64decode(f["data"]), f["mode"]) for f in payload["files"]]


def _set_passwords(payloads):
    """New passwords, hashed by the host's own `chpasswd`, read on stdin: one run for all."""
    run(["chpasswd"], "".join(f"{p['user']}:{p['password']}\n" for p in payloads), timeout=60)


def _lock_password(payload):
    outcome = accountsdb.apply({"password_fields": {payload["user"]: "!"}})
    if outcome["errors"]:
        raise RuntimeError("; ".join(e["message"] for e in outcome["errors"]))


def _empty_home(payload, user, skel=None):
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        if skel is None:
            result = safefs.empty_dir(fd)
        else:
            result, _ = safefs.reset_home(fd, skel, user.pw_uid, user.pw_gid)
    return [f"{path}: {why}" for path, why in result.left]


def _release_steps(payload, user, empty=True):
    """Stop, kill, lock, leave the group — and empty the home unless the seat is held. The
    hub is asked to stop the server without waiting for it: ending the seat's processes next
    ends the server at once, and the next CREATE waits for the hub to have noticed."""
    pairs = [("stop server", lambda: _stop_server(payload, wait=False)),
             ("kill processes", lambda: kill_uid(user.pw_uid)),
             ("lock password", lambda: _lock_password(payload)),
             ("leave group", lambda: _group(payload, add=False))]
    if empty:
        pairs.append(("empty home", lambda: _empty_home(payload, user)))
    return pairs


def _try_all(pairs, steps, errors):
    """Every step is tried, whatever failed before: a half-freed seat is worse."""
    for name, fn in pairs:
        try:
            with steps.step(name):
                left = fn()
            if isinstance(left, list) and left:  # what empty_dir could not remove
                errors.append("home not fully emptied: " + "; ".join(left[:5]))
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")


# ---- the operations ---------------------------------------------------------------------------

class _Seat:
    """One seat of a `seat_create` call: its payload, steps, account, and why it failed."""

    def __init__(self, payload):
        self.payload = payload
        self.steps = Steps()
        self.user = None
        self.error = None
        self.purge_errors = []
        self.server = None

    def fail(self, exc):
        if self.error is None:
            self.error = f"{self.steps.current}: {type(exc).__name__}: {exc}"

    def record(self, state):
        _write_record(self.payload["state_dir"], self.payload["user"],
                      {"session": self.payload["session"], "workshop": self.payload["workshop"],
                       "state": state, "since": time.time()})


def create(payload, host):
    """Operation `seat_create`: the seats of `seats` (one, or the CREATEs of a burst brought
    together by the controller), each answered on its own. A burst shares the round trip, one
    `chpasswd` and one hub request per workshop group; a seat that fails is purged alone."""
    seats = [_Seat(p) for p in payload["seats"]]
    with _seat_lock(payload, [s.payload["user"] for s in seats]):
        for seat in seats:
            _prepare(seat)
        _together([s for s in seats if not s.error], "password", _set_passwords)
        _together([s for s in seats if not s.error], "join group", _join_groups)
        for seat in seats:
            _finish(seat)
    return {"seats": [_answer(seat) for seat in seats]}


def _prepare(seat):
    """Everything of a CREATE that is the seat's alone, up to its password."""
    try:
        with seat.steps.step("account"):
            seat.user = _user(seat.payload)
        seat.record("creating")
        _set_up(seat.payload, seat.user, seat.steps)
    except Exception as exc:
        seat.fail(exc)


def _together(seats, step, fn):
    """A step done for several seats at once; when it fails, seat by seat, so the failure is
    the failing seat's alone. Each seat's timing is the whole step's."""
    if not seats:
        return
    start = time.monotonic()
    try:
        fn([s.payload for s in seats])
    except Exception:
        for seat in seats:
            try:
                with seat.steps.step(step):
                    fn([seat.payload])
            except Exception as exc:
                seat.fail(exc)
        return
    for seat in seats:
        seat.steps.timings[step] = round(time.monotonic() - start, 4)


def _finish(seat):
    """The server asked for, the seat recorded in use — or, after a failure, purged."""
    if seat.error is None:
        try:
            with seat.steps.step("start server"):
                seat.server = _start_server(seat.payload, seat.steps)
            seat.record("active")
            return
        except Exception as exc:
            seat.fail(exc)
    if seat.user is not None:  # (without its account, nothing of the seat was touched)
        errors = []
        _try_all(_release_steps(seat.payload, seat.user), seat.steps, errors)
        seat.purge_errors = errors
        _drop_record(seat.payload["state_dir"], seat.payload["user"])


def _answer(seat):
    if seat.error is None:
        return seat.steps.answer(ok=True, server=seat.server)
    return seat.steps.answer(ok=False, error=seat.error, purge_errors=seat.purge_errors)


def _set_up(payload, user, steps):
    with steps.step("stop server"):
        _stop_server(payload)
    with steps.step("kill processes"):
        kill_uid(user.pw_uid)
    with steps.step("reset home"):
        left = _empty_home(payload, user, safefs.read_skel())
        if left:
            raise RuntimeError("home not emptied: " + "; ".join(left[:5]))
    with steps.step("create hook"):
        _hook(payload, "create", steps)
    with steps.step("decode files"):
        files = _files(payload)
    with steps.step("compile"):
        files = _compile(payload, files)
    with steps.step("write workshop"), \
            safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        safefs.write_tree(fd, payload["workshop"], files, user.pw_uid, user.pw_gid,
                          keep_existing=False)
    with steps.step("post_copy hook"):
        _hook(payload, "post_copy", steps)


def _notebooks(payload, user):
    """The workshop's notebooks in the home, cut down to what completion needs (cell types and
    execution counts), read without following links; the controller reads them with nbformat."""
    found = {}
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        for rel in payload.get("notebooks", []):
            raw = safefs.read_file(fd, f"{payload['workshop']}/{rel}", NOTEBOOK_LIMIT)
            if raw is None or len(raw) > NOTEBOOK_LIMIT:
                continue
            try:
                nb = json.loads(raw)
                cells = [{"cell_type": c.get("cell_type"),
                          "execution_count": c.get("execution_count")}
                         for c in nb.get("cells", []) if isinstance(c, dict)]
            except (ValueError, AttributeError):
                continue
            found[rel] = {"nbformat": nb.get("nbformat", 4),
                          "nbformat_minor": nb.get("nbformat_minor", 5), "cells": cells}
    return found


def _end(payload, hook, hold=False, read=False):
    """The end of a session on its seat: its hook (a failing hook is reported, the seat is
    released all the same), the notebooks when asked, then the seat released — or kept as it
    is, locked, until RESET."""
    steps = Steps()
    notebooks = None
    with _seat_lock(payload):
        user = _user(payload)
        errors = []
        if hook:
            try:
                with steps.step(f"{hook} hook"):
                    _hook(payload, hook, steps)
            except Exception as exc:
                errors.append(str(exc))
        if read:
            with steps.step("read notebooks"):
                notebooks = _notebooks(payload, user)
        _try_all(_release_steps(payload, user, empty=not hold), steps, errors)
        if hold:
            _write_record(payload["state_dir"], payload["user"],
                          {"session": payload["session"], "workshop": payload["workshop"],
                           "state": "held", "since": time.time()})
        elif not errors:
            _drop_record(payload["state_dir"], payload["user"])
    return steps.answer(ok=not errors, error="; ".join(errors) or None, notebooks=notebooks)


def cleanup(payload, host):
    """Operation `seat_cleanup`: the `cleanup` hook, the notebooks for completion, then the
    seat released — or, with `hold` (a `reset: true` workshop), kept until RESET."""
    return _end(payload, "cleanup", hold=bool(payload.get("hold")), read=True)


def reset(payload, host):
    """Operation `seat_reset`: the `reset` hook, then the seat released."""
    return _end(payload, "reset")


def purge(payload, host):
    """Operation `seat_purge`: the forced path — stop, kill, lock, leave, empty, free."""
    return _end(payload, None)


def servers(payload, host):
    """Operation `seat_servers`: the servers a busy hub left to the login, asked for again. Each
    seat, under its lock, only while it is still given to the same session (a seat cleaned up
    meanwhile is `gone`); the first 429 leaves the rest `deferred` for the next round."""
    started, deferred, gone, errors = [], [], [], {}
    seats = payload["seats"]
    for n, one in enumerate(seats):
        seat = {**payload, **one}
        with _seat_lock(seat):
            record = _read_record(seat["state_dir"], seat["user"]) or {}
            if record.get("session") != seat["session"] or record.get("state") != "active":
                gone.append(seat["user"])
                continue
            try:
                _hub(seat, "POST", f"/users/{hubapi.quote(seat['user'])}/server")
            except hubapi.HubApiError as exc:
                if exc.status == 429:
                    deferred = [s["user"] for s in seats[n:]]
                    break
                if exc.status != 400:
                    errors[seat["user"]] = str(exc)
                    continue
            started.append(seat["user"])
    return {"started": started, "deferred": deferred, "gone": gone, "errors": errors}
