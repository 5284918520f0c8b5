"""The seat operations on the host: CREATE, CLEANUP, RESET and PURGE of one session's seat.

A session's seat is set up in one round trip (`seat_create`): the previous occupant's server
stopped, processes ended and hub identity replaced, the home reset from /etc/skel, the
workshop's `create` hook, its `compile` scripts compiled with `shc` (their sources never reach
the student), the rendered workshop folder written, `post_copy`, a new password (hashed by the
host's own `chpasswd`, read on stdin), the seat added to the workshop's hub group and its server
started without waiting. The call takes the several seats of a burst too (one python3 start,
one `chpasswd`, one hub request per group for all of them). A step that fails releases its seat
alone and the seat's answer says which step and why, with the hooks' output.

The end of a session (`seat_cleanup`, `seat_reset`, `seat_purge`) is a release that nothing a
student did can stop: the checks (`agent.checks`, scored at CLEANUP before the hook), the hook
and the completion count may fail, the release steps run
regardless, each tried whatever failed before; the answer lists what did not finish, and the
seat's record stays until a release has finished (the controller retries it).

A seat recorded for another session (`records`) is never touched: the answer says who holds
it. Every write below the home goes through `agent.safefs`; hooks are root's and run from
root's own folder (`hooks`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, cast

from wodsync.agent import (
    accountsdb,
    checks,
    completion,
    hooks,
    hubapi,
    hubseat,
    limits,
    records,
    safefs,
    seatbase,
    sweep,
)
from wodsync.agent.host import HostSide
from wodsync.agent.kinds import egress
from wodsync.agent.protocol import (
    CheckResult,
    HostPayload,
    Seat,
    SeatAnswer,
    SeatCreateAnswer,
    SeatCreateRequest,
    SeatRecordsAnswer,
    SeatServersAnswer,
    SeatServersRequest,
)
from wodsync.agent.run import kill_uid, run
from wodsync.agent.steps import Steps

__all__ = ["OPERATIONS", "Steps"]

Step = tuple[str, Callable[[], Any]]
"""A release step: its name, and what it does (a list it returns names what it left)."""


def _user(payload: Seat) -> pwd.struct_passwd:
    return accountsdb.seat_account(payload["user"], payload["uid"])


def _lock_timeout(payload: Mapping[str, object]) -> float:
    timeout = payload.get("lock_timeout", 30.0)
    return timeout if isinstance(timeout, (int, float)) else 30.0


def _write_record(payload: Seat, state: str) -> None:
    record: records.Record = {**(payload.get("record") or {})}
    record.update({"session": payload["session"], "workshop": payload["workshop"],
                   "state": state, "since": time.time()})
    records.write(payload["state_dir"], payload["user"], record)


def _occupied(record: records.Record) -> records.Record:
    """What the controller learns of a seat held by another session (no secret in a record)."""
    return cast(records.Record, {k: v for k, v in record.items() if k in records.FIELDS})


# ---- pieces of a seat ------------------------------------------------------------------------

def _compile(payload: Seat, files: list[safefs.TreeFile]) -> list[safefs.TreeFile]:
    """Scripts listed in `compile` become shc binaries under the same name; their sources
    never reach the home."""
    wanted = set(payload.get("compile") or [])
    if not wanted:
        return files
    folder = tempfile.mkdtemp(prefix="wodsync-shc-", dir=hooks.run_dir(payload["state_dir"]))
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


def _files(payload: Seat) -> list[safefs.TreeFile]:
    return [(f["path"], base64.b64decode(f["data"]), f["mode"]) for f in payload.get("files", [])]


def _set_passwords(payloads: Sequence[Seat]) -> None:
    """New passwords, hashed by the host's own `chpasswd`, read on stdin: one run for all."""
    run(["chpasswd"], "".join(f"{p['user']}:{p['password']}\n" for p in payloads), timeout=60)


def _lock_password(payload: Seat) -> None:
    outcome = accountsdb.apply({"password_fields": {payload["user"]: "!"}})
    if outcome["errors"]:
        raise RuntimeError("; ".join(e["message"] for e in outcome["errors"]))


def _lock_passwords(payloads: Sequence[Seat]) -> None:
    """Hot seats (`hot`): set up for no one yet, so no password opens them."""
    for payload in payloads:
        _lock_password(payload)


def _empty_home(user: pwd.struct_passwd, skel: list[safefs.SkelEntry] | None = None) -> list[str]:
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        if skel is None:
            result = safefs.empty_dir(fd)
        else:
            result, _ = safefs.reset_home(fd, skel, user.pw_uid, user.pw_gid)
    return [f"{path}: {why}" for path, why in result.left]


def _release_steps(payload: Seat, user: pwd.struct_passwd | None,
                   empty: bool = True) -> list[Step]:
    """What makes a seat nobody's: the password locked first (no new login), the server asked
    to stop without waiting (ending the seat's processes ends it at once), the hub identity
    replaced (tokens, grants, cookie), the processes ended again (anything started meanwhile),
    everything the uid owns outside the home removed (the next occupant gets the same uid),
    and the home emptied unless the seat is held for RESET. A step returning a list names
    what it could not remove."""
    uid = payload["uid"]
    pairs: list[Step] = [("lock password", lambda: _lock_password(payload)),
             ("stop server", lambda: hubseat.stop_server(payload, wait=False)),
             ("kill processes", lambda: kill_uid(uid)),
             ("new hub identity", lambda: hubseat.rotate(payload)),
             ("kill late processes", lambda: kill_uid(uid)),
             ("egress rules", lambda: egress.for_seat(payload, released=True)),
             ("limits", lambda: limits.release(payload)),
             ("sweep leftovers", lambda: sweep.sweep(uid, payload["user"], keep=_homes(user)))]
    if empty and user is not None:
        home = user
        pairs.append(("empty home", lambda: _empty_home(home)))
    return pairs


def _homes(user: pwd.struct_passwd | None) -> tuple[str, ...]:
    """What the sweep must leave alone: the seat's home and the folder homes live in."""
    if user is None:
        return ()
    return (user.pw_dir, os.path.dirname(user.pw_dir.rstrip("/")) or "/")


def _try_all(pairs: list[Step], steps: Steps, errors: list[str]) -> None:
    """Every step is tried, whatever failed before: a half-freed seat is worse."""
    for name, fn in pairs:
        try:
            with steps.step(name):
                left = fn()
            if isinstance(left, list) and left:
                errors.append(f"{name}: left " + "; ".join(left[:5])
                              + (f" (and {len(left) - 5} more)" if len(left) > 5 else ""))
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")


# ---- CREATE ---------------------------------------------------------------------------------

class _Seat:
    """One seat of a `seat_create` call: its payload, steps, account, and why it failed."""

    def __init__(self, payload: Seat) -> None:
        self.payload = payload
        self.steps = Steps()
        self.user: pwd.struct_passwd | None = None
        self.error: str | None = None
        self.occupied: records.Record | None = None
        self.release_errors: list[str] = []
        self.server: str | None = None
        self.values: dict[str, str] | None = None  # stage `hook`: what the create hook wrote

    @property
    def waits(self) -> bool:
        """Set up to its create hook (stage `hook`): the rest comes with the next call."""
        return self.values is not None and self.error is None

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = f"{self.steps.current}: {type(exc).__name__}: {exc}"


def create(payload: SeatCreateRequest, host: HostSide) -> SeatCreateAnswer:
    """Operation `seat_create`: the seats of `seats` (one, or the CREATEs of a burst brought
    together by the controller), each answered on its own. A burst shares the round trip, one
    `chpasswd` and one hub request per workshop group; a seat that fails is released alone."""
    seats = [_Seat(p) for p in payload["seats"]]
    with records.locked(payload["state_dir"], [s.payload["user"] for s in seats],
                        _lock_timeout(payload)):
        for seat in seats:
            _prepare(seat)
        ready = [s for s in seats if not s.error and not s.waits]
        hot = [s for s in ready if s.payload.get("hot")]
        ready = [s for s in ready if not s.payload.get("hot")]
        _together(hot, "lock password", _lock_passwords)
        _together(ready, "password", _set_passwords)
        _together([s for s in ready if not s.error], "join group", hubseat.join_groups)
        for seat in seats:
            _finish(seat)
    return {"seats": [_answer(seat) for seat in seats]}


def _prepare(seat: _Seat) -> None:
    """Everything of a CREATE that is the seat's alone, up to its password. A seat the host
    records for another session is left exactly as it is."""
    try:
        with seat.steps.step("account"):
            seat.user = _user(seat.payload)
        record = records.read(seat.payload["state_dir"], seat.payload["user"])
        if record is not None and records.belongs_to_other(record, seat.payload["session"]):
            seat.occupied = _occupied(record)
            seat.error = (f"seat {seat.payload['user']} is held on the host by session "
                          f"{record.get('session')} ({record.get('state')})")
            return
        stage = seat.payload.get("stage", "all")
        if stage == "rest":
            _check_first_stage(seat.payload, record)
        else:
            _write_record(seat.payload, "creating")
            values = _set_up(seat.payload, seat.user, seat.steps)
            if stage == "hook":
                seat.values = values
                return
        _set_up_rest(seat.payload, seat.user, seat.steps)
    except Exception as exc:
        seat.fail(exc)


def _check_first_stage(payload: Seat, record: records.Record | None) -> None:
    """Stage `rest` continues only the CREATE whose stage `hook` left the seat `creating`."""
    if record is None or record.get("session") != payload["session"] \
            or record.get("state") != "creating":
        raise RuntimeError(f"seat {payload['user']} was not set up to its create hook for "
                           f"session {payload['session']}")


def _together(seats: list[_Seat], step: str, fn: Callable[[list[Seat]], None]) -> None:
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


def _finish(seat: _Seat) -> None:
    """The server asked for, the seat recorded in use — or, after a failure, released (its
    record kept, as `releasing`, when the release itself did not finish)."""
    if seat.occupied is not None or seat.waits:
        return
    if seat.error is None:
        try:
            with seat.steps.step("start server"):
                seat.server = hubseat.start_server(seat.payload, seat.steps)
            _write_record(seat.payload, "hot" if seat.payload.get("hot") else "active")
            return
        except Exception as exc:
            seat.fail(exc)
    if seat.user is None:  # without its account, nothing of the seat was touched
        return
    errors: list[str] = []
    _try_all(_release_steps(seat.payload, seat.user), seat.steps, errors)
    seat.release_errors = errors
    if errors:
        _write_record(seat.payload, "releasing")
    else:
        records.drop(seat.payload["state_dir"], seat.payload["user"])


def _answer(seat: _Seat) -> SeatAnswer:
    if seat.waits:
        return seat.steps.answer(ok=True, server=None, values=seat.values)
    if seat.error is None:
        return seat.steps.answer(ok=True, server=seat.server)
    return seat.steps.answer(ok=False, error=seat.error, occupied=seat.occupied,
                             release_errors=seat.release_errors)


def _set_up(payload: Seat, user: pwd.struct_passwd, steps: Steps) -> dict[str, str]:
    """A CREATE up to its create hook; what the hook wrote to `$WOD_VALUES` (`hookvalues`)."""
    with steps.step("stop server"):
        hubseat.stop_server(payload)
    with steps.step("kill processes"):
        kill_uid(user.pw_uid)
    with steps.step("egress rules"):
        egress.for_seat(payload)
    with steps.step("limits"):
        steps.notes += limits.set_up(payload)
    with steps.step("new hub identity"):
        hubseat.rotate(payload)
    with steps.step("reset home"):
        left = _empty_home(user, safefs.read_skel())
        if left:
            raise RuntimeError("home not emptied: " + "; ".join(left[:5]))
    if payload.get("ssh_key"):
        with steps.step("ssh key"):
            _write_key(payload, user)
    with steps.step("create hook"):
        return hooks.run_hook(payload, "create", steps)


def _write_key(payload: Seat, user: pwd.struct_passwd) -> None:
    """The seat's key pair for its appliance and the appliance's pinned host key, in
    `~/.ssh` (0700; the private key 0600), written as every file of the home is: through
    directory descriptors, a link on the way replaced and never followed."""
    key = payload["ssh_key"]
    assert key is not None
    files: list[safefs.TreeFile] = [("id_ed25519", key["private"].encode(), 0o600),
                                    ("id_ed25519.pub", key["public"].encode() + b"\n", 0o644),
                                    ("known_hosts", key["known_hosts"].encode() + b"\n", 0o644)]
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        safefs.write_tree(fd, ".ssh", files, user.pw_uid, user.pw_gid, keep_existing=False,
                          dir_mode=0o700)


def _set_up_rest(payload: Seat, user: pwd.struct_passwd, steps: Steps) -> None:
    """A CREATE after its create hook: the workshop's files (rendered with the hook's values
    when it wrote some) and `post_copy`."""
    with steps.step("decode files"):
        files = _files(payload)
    with steps.step("keep base"):
        _keep_base(payload, files)
    with steps.step("compile"):
        files = _compile(payload, files)
    with steps.step("write workshop"), \
            safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        safefs.write_tree(fd, payload["workshop"], files, user.pw_uid, user.pw_gid,
                          keep_existing=False)
    with steps.step("post_copy hook"):
        hooks.run_hook(payload, "post_copy", steps)


def _keep_base(payload: Seat, files: list[safefs.TreeFile]) -> None:
    """What the seat is given, kept root-only beside its record (`seatbase`): the base of a
    live update's three-way decision. Compiled scripts are left out (never updated live)."""
    compiled = set(payload.get("compile") or [])
    given = [(rel, data) for rel, data, _ in files if rel not in compiled]
    seatbase.save(payload["state_dir"], payload["user"],
                  {"revision": payload.get("revision", ""), "session": payload["session"],
                   "workshop": payload["workshop"],
                   "files": {rel: seatbase.digest(data) for rel, data in given}}, given)


# ---- the end of a session ---------------------------------------------------------------------

def _completion(payload: Seat, user: pwd.struct_passwd | None,
                ) -> dict[str, completion.Counted] | None:
    """rel → [executed, code] or {"error": …}; None when the workshop's notebooks are unknown."""
    notebooks = payload.get("notebooks")
    if notebooks is None or user is None:
        return None
    try:
        with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
            return completion.count_home(fd, payload["workshop"], notebooks)
    except Exception as exc:  # no home to read: nothing counted, the release goes on
        return {rel: {"error": f"{type(exc).__name__}: {exc}"} for rel in notebooks}


def _checks(payload: Seat, user: pwd.struct_passwd | None,
            steps: Steps) -> list[CheckResult] | None:
    """The workshop's checks on the student's work as they left it (before the cleanup hook
    and the release); None when there are none or they could not run — never an error: a
    score never holds a seat back from its release."""
    scripts = payload.get("checks")
    if not scripts or user is None:
        return None
    try:
        with steps.step("run checks"):
            return checks.run_checks(scripts, _user(payload), payload)
    except Exception as exc:
        steps.notes.append(f"checks not run: {type(exc).__name__}: {exc}")
        return None


def _account(payload: Seat, errors: list[str]) -> pwd.struct_passwd | None:
    """The seat's account, or None when it is gone (the release goes on by uid)."""
    try:
        return _user(payload)
    except KeyError:
        return None
    except Exception as exc:
        errors.append(f"account: {type(exc).__name__}: {exc}")
        return None


def _end(payload: Seat, hook: Optional[str], hold: bool = False,
         read: bool = False) -> SeatAnswer:
    """The end of a session on its seat: its hook and the completion count (either may fail:
    reported), then — in any case — the seat released, or kept locked as it is until RESET.
    The record goes once the release finished; with `force` (an operator's `seat release`) a
    record of another session does not stop it."""
    steps = Steps()
    errors: list[str] = []
    counted = scored = None
    with records.locked(payload["state_dir"], [payload["user"]], _lock_timeout(payload)):
        record = records.read(payload["state_dir"], payload["user"])
        if record is not None and records.belongs_to_other(record, payload["session"]) \
                and not payload.get("force"):
            return steps.answer(ok=False, error=f"seat {payload['user']} is held on the host "
                                f"by session {record.get('session')}",
                                occupied=_occupied(record))
        user = _account(payload, errors)
        try:
            if read:
                scored = _checks(payload, user, steps)
            if hook:
                try:
                    with steps.step(f"{hook} hook"):
                        hooks.run_hook(payload, hook, steps)
                except Exception as exc:
                    errors.append(str(exc))
            if read:
                with steps.step("count completion"):
                    counted = _completion(payload, user)
        finally:
            _try_all(_release_steps(payload, user, empty=not hold), steps, errors)
            _settle_record(payload, record, hold, errors)
    return steps.answer(ok=not errors, error="; ".join(errors) or None, completion=counted,
                        checks=scored)


def _settle_record(payload: Seat, record: records.Record | None, hold: bool,
                   errors: list[str]) -> None:
    """The record after a release: gone once it finished, `held` for RESET, `releasing` while
    not finished (a forced release that failed leaves whatever record there was)."""
    if errors:
        if not payload.get("force"):
            _write_record(payload, "releasing")
    elif hold:
        _write_record(payload, "held")
    else:
        records.drop(payload["state_dir"], payload["user"])


def cleanup(payload: Seat, host: HostSide) -> SeatAnswer:
    """Operation `seat_cleanup`: the `cleanup` hook, completion, then the seat released — or,
    with `hold` (a `reset: true` workshop), kept until RESET."""
    return _end(payload, "cleanup", hold=bool(payload.get("hold")), read=True)


def reset(payload: Seat, host: HostSide) -> SeatAnswer:
    """Operation `seat_reset`: the `reset` hook, then the seat released."""
    return _end(payload, "reset")


def purge(payload: Seat, host: HostSide) -> SeatAnswer:
    """Operation `seat_purge`: the forced path — no hook; lock, stop, kill, new identity,
    empty, free."""
    return _end(payload, None)


def seat_records(payload: HostPayload, host: HostSide) -> SeatRecordsAnswer:
    """Operation `seat_records`: every seat the host records in use (no secret in them)."""
    return {"records": records.read_all(payload["state_dir"])}


def servers(payload: SeatServersRequest, host: HostSide) -> SeatServersAnswer:
    """Operation `seat_servers`: the servers a busy hub left to the login, asked for again. Each
    seat, under its lock, only while it is still given to the same session (a seat cleaned up
    meanwhile is `gone`); the first 429 leaves the rest `deferred` for the next round."""
    started: list[str] = []
    deferred: list[str] = []
    gone: list[str] = []
    errors: dict[str, str] = {}
    seats = payload["seats"]
    for n, one in enumerate(seats):
        seat = cast(Seat, {**payload, **one})  # the seat's own keys, the call's hub
        with records.locked(seat["state_dir"], [seat["user"]], _lock_timeout(seat)):
            record = records.read(seat["state_dir"], seat["user"]) or {}
            if record.get("session") != seat["session"] \
                    or record.get("state") not in ("active", "hot"):
                gone.append(seat["user"])
                continue
            try:
                outcome = hubseat.start_server(seat, Steps())
            except hubapi.HubApiError as exc:
                errors[seat["user"]] = str(exc)
                continue
            if outcome == "deferred":
                deferred = [s["user"] for s in seats[n:]]
                break
            started.append(seat["user"])
    return {"started": started, "deferred": deferred, "gone": gone, "errors": errors}


# ---- hot seats ------------------------------------------------------------------------------

def take(payload: SeatCreateRequest, host: HostSide) -> SeatCreateAnswer:
    """Operation `seat_take`: hot seats set up ahead of an event (`hot`) given to their
    participants — the password set (one `chpasswd`), the workshop group joined, the record
    rewritten with the participant; the home and the running server stay as they are. A seat
    the host does not record as this session's hot seat is refused, untouched."""
    seats = [_Seat(p) for p in payload["seats"]]
    with records.locked(payload["state_dir"], [s.payload["user"] for s in seats],
                        _lock_timeout(payload)):
        for seat in seats:
            _check_hot(seat)
        ready = [s for s in seats if not s.error]
        _together(ready, "password", _set_passwords)
        _together([s for s in ready if not s.error], "join group", hubseat.join_groups)
        for seat in seats:
            if seat.error is None:
                _write_record(seat.payload, "active")
    return {"seats": [_answer(seat) for seat in seats]}


def _check_hot(seat: _Seat) -> None:
    try:
        with seat.steps.step("account"):
            seat.user = _user(seat.payload)
        record = records.read(seat.payload["state_dir"], seat.payload["user"])
        if record is None or record.get("session") != seat.payload["session"] \
                or record.get("state") != "hot":
            seat.occupied = _occupied(record) if record is not None \
                and records.belongs_to_other(record, seat.payload["session"]) else None
            raise RuntimeError(f"seat {seat.payload['user']} is not the hot seat of session "
                               f"{seat.payload['session']} on the host "
                               f"({(record or {}).get('state') or 'no record'})")
    except Exception as exc:
        seat.fail(exc)


OPERATIONS: dict[str, Callable[[Any, HostSide], Any]] = {
    "seat_take": take,
    "seat_create": create,
    "seat_cleanup": cleanup,
    "seat_reset": reset,
    "seat_purge": purge,
    "seat_records": seat_records,
    "seat_servers": servers,
}
