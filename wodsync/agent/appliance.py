"""A seat's account on an appliance host: the remote machine of a workshop (a docker host, a
Spark cluster's gateway) that the seat's ssh kernel logs in to.

The account itself is the appliance's pool's, made and kept by the engine like any seat. At
CREATE (`appliance_seat_create`) the previous occupant's processes are ended, the home is reset
from /etc/skel, the seat's public key becomes the only line of `~/.ssh/authorized_keys` and the
seat's password is set (the host's own `chpasswd`, on stdin). At the end of the session
(`appliance_seat_release`) the password is locked, the processes ended and the home emptied:
the old key no longer logs in. Every write below the home goes through `agent.safefs`, never
following a link the previous occupant left; every step is tried whatever failed before.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from typing import Any

from wodsync.agent import accountsdb, safefs
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import ApplianceAnswer, ApplianceSeat
from wodsync.agent.run import kill_uid, run
from wodsync.agent.steps import Steps

Step = tuple[str, Callable[[], Any]]


def _user(payload: ApplianceSeat) -> pwd.struct_passwd:
    return accountsdb.seat_account(payload["user"], payload["uid"])


def _reset_home(user: pwd.struct_passwd, public_key: str) -> None:
    """The home as /etc/skel has it, with the seat's key as its only authorized key."""
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        result, _ = safefs.reset_home(fd, safefs.read_skel(), user.pw_uid, user.pw_gid)
        if result.left:
            raise RuntimeError("home not emptied: " + "; ".join(
                f"{path}: {why}" for path, why in result.left[:5]))
        safefs.write_tree(fd, ".ssh", [("authorized_keys", public_key.encode() + b"\n", 0o600)],
                          user.pw_uid, user.pw_gid, keep_existing=False, dir_mode=0o700)


def _empty_home(user: pwd.struct_passwd) -> list[str]:
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        return [f"{path}: {why}" for path, why in safefs.empty_dir(fd).left]


def _lock_password(user: str) -> None:
    outcome = accountsdb.apply({"password_fields": {user: "!"}})
    if outcome["errors"]:
        raise RuntimeError("; ".join(e["message"] for e in outcome["errors"]))


def _steps(pairs: list[Step], stop_at_failure: bool) -> ApplianceAnswer:
    steps = Steps()
    errors: list[str] = []
    for name, fn in pairs:
        try:
            with steps.step(name):
                left = fn()
            if isinstance(left, list) and left:
                errors.append(f"{name}: left " + "; ".join(left[:5]))
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            if stop_at_failure:
                break
    return {"ok": not errors, "timings": steps.timings, "errors": errors}


def create(payload: ApplianceSeat, host: HostSide) -> ApplianceAnswer:
    """Operation `appliance_seat_create`: the seat's account ready for its new occupant."""
    found: list[pwd.struct_passwd] = []
    answer = _steps([("account", lambda: found.append(_user(payload))),
                     ("kill processes", lambda: kill_uid(payload["uid"])),
                     ("reset home", lambda: _reset_home(found[0], payload["public_key"])),
                     ("password", lambda: run(["chpasswd"], f"{payload['user']}:"
                                              f"{payload['password']}\n", timeout=60))],
                    stop_at_failure=True)
    return answer


def release(payload: ApplianceSeat, host: HostSide) -> ApplianceAnswer:
    """Operation `appliance_seat_release`: nobody's any more — password locked, processes
    ended, home (and its authorized key) emptied. A seat whose account is gone is released."""
    try:
        user: pwd.struct_passwd | None = _user(payload)
    except KeyError:
        user = None
    pairs: list[Step] = [("lock password", lambda: _lock_password(payload["user"])
                          if user else None),
                         ("kill processes", lambda: kill_uid(payload["uid"]))]
    if user is not None:
        home = user
        pairs.append(("empty home", lambda: _empty_home(home)))
    return _steps(pairs, stop_at_failure=False)


OPERATIONS: dict[str, Callable[[Any, HostSide], Any]] = {
    "appliance_seat_create": create,
    "appliance_seat_release": release,
}
