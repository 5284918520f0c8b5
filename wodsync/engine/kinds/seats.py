"""seat: a seat handed to a participant — its password, its workshop folder, its mark in the
inventory so that full applies leave it alone.

(First cut: the demo's `seat_claim`; sessions make this the CREATE/CLEANUP/RESET/PURGE of a
seat.) Every write below the home goes through `agent.safefs`: a link the seat's student (or
its previous occupant) planted is never followed.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

from wodsync.agent import safefs
from wodsync.agent.run import run

KIND = "seat"


def claim(payload: dict[str, Any], host: Any) -> dict[str, Any]:
    """Operation `seat_claim`: password, workshop files (existing ones kept: the student may
    have changed them) and the seat marked in use."""
    user = pwd.getpwnam(payload["user"])
    inv = host.inventory
    inv.data.setdefault("seats", {})[payload["user"]] = {"session": payload.get("session", ""),
                                                        "workshop": payload["workshop"]}
    inv.save()
    run(["chpasswd"], f"{payload['user']}:{payload['password']}\n")
    files = [(f["path"], bytes.fromhex(f["data"]), int(f["mode"], 8)) for f in payload["files"]]
    fd = safefs.open_home(user.pw_dir, user.pw_uid, user.pw_gid)
    try:
        counts = safefs.write_tree(fd, payload["workshop"], files, user.pw_uid, user.pw_gid,
                                   keep_existing=True)
    finally:
        os.close(fd)
    return {"home": user.pw_dir, "written": counts.written, "kept": counts.kept}
