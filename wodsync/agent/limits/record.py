"""The record the hub's spawner reads: which `cgroup.procs` files a seat's server joins.

The agent writes `<state_dir>/limits/<user>.json` (a root-only folder) when it sets a seat's
cgroup up, and removes it at release. The hub's spawner (templates/hub/jupyterhub_config.py.j2)
reads it, as root, in the server's process before it becomes the student, and writes the
process's pid into each file: the server, and every kernel and terminal it starts, are then
inside the seat's cgroup. Only data crosses: no catalog text is ever rendered into that code.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Optional, TypedDict, cast

FOLDER = "limits"


class SpawnRecord(TypedDict, total=False):
    """`procs`: the seat's `cgroup.procs` files; `quota`: the mount its disk quota is on."""

    workshop: str
    procs: list[str]
    quota: Optional[str]


def folder(state_dir: str) -> str:
    path = os.path.join(state_dir, FOLDER)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write(state_dir: str, user: str, record: SpawnRecord) -> None:
    where = folder(state_dir)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=where)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(where, user + ".json"))
    except BaseException:
        os.unlink(tmp)
        raise


def read(state_dir: str, user: str) -> Optional[SpawnRecord]:
    try:
        with open(os.path.join(state_dir, FOLDER, user + ".json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return cast(SpawnRecord, data) if isinstance(data, dict) else None


def drop(state_dir: str, user: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, FOLDER, user + ".json"))
