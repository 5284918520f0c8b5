"""Live update (`seat_update`): a newer revision's files brought into running sessions' seats
without losing what the students did — nbgitpuller's rules, decided per file against the
seat's base (`seatbase`: what the seat was given):

- unchanged upstream → nothing;
- changed upstream, untouched locally → `updated`;
- deleted locally (or a link where the file was) → `restored`; new upstream and absent → `added`;
- edited locally → `kept`; a notebook edited locally is `merged` cell by cell when the two sides
  changed different cells (`nbmerge`), else kept, with the upstream one `beside` it as
  `<stem>.updated.ipynb`;
- a student's own file where the new revision adds one → kept, the new one `beside` it. Unlike
  nbgitpuller, which renames the student's file, root never moves or rewrites what a student
  made: their file (perhaps open in their browser) stays at its name, the new one lands beside
  under the same `.updated` name as a notebook conflict's;
- a folder or special file where a file goes (or a file where a folder goes) → `kept`.

One call takes many seats of a host (one round trip); each seat under its lock, only while its
record says it holds an active session of that workshop (so never during its release). Reads
and writes are link-safe (`safefs`: directory fds, O_NOFOLLOW, files created anew with
O_EXCL and given to the seat; a link where a file lands is removed, never followed). The base
becomes what was applied. Standard library only: shipped to hosts.
"""

from __future__ import annotations

import base64
import errno
import os
import pwd
import stat
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from wodsync.agent import accountsdb, nbmerge, records, safefs, seatbase
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import (
    FileReport,
    Seat,
    SeatUpdateAnswer,
    SeatUpdated,
    SeatUpdateRequest,
)

LIMIT = 64 * 1024 * 1024  # a local file larger than this counts as edited (never merged)
BESIDE = ".updated"

Local = Tuple[str, Optional[bytes]]
"""What the home holds at a path: ("missing" | "file" | "blocked", its bytes when a file)."""
Decision = Tuple[str, List[Tuple[str, bytes]], str]
"""(action, the files to write (path, bytes), a note for the report)."""


def beside(rel: str) -> str:
    """Where an upstream file lands beside the student's: `a/nb.ipynb` → `a/nb.updated.ipynb`."""
    folder, _, name = rel.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    new = f"{stem}{BESIDE}.{ext}" if stem and dot else name + BESIDE
    return f"{folder}/{new}" if folder else new


def probe(home_fd: int, parts: List[str]) -> Local:
    """The entry at `parts` below the home, walked through directory fds without following a
    link: a link on the way or at the end is `missing` (what lands there replaces the link)."""
    fds: List[int] = []
    try:
        current = home_fd
        for part in parts[:-1]:
            try:
                current = os.open(part, safefs.DIR_FLAGS, dir_fd=current)
            except FileNotFoundError:
                return "missing", None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and not _is_link(current, part):
                    return "blocked", None
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    return "missing", None
                raise
            fds.append(current)
        return _probe_file(current, parts[-1])
    finally:
        for fd in fds:
            os.close(fd)


def _is_link(dir_fd: int, name: str) -> bool:
    return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)


def _probe_file(dir_fd: int, name: str) -> Local:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing", None
    if stat.S_ISLNK(st.st_mode):
        return "missing", None
    if not stat.S_ISREG(st.st_mode):
        return "blocked", None
    try:
        fd = os.open(name, safefs.READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return "missing", None
    except OSError as exc:  # swapped for a link meanwhile: never followed
        if exc.errno == errno.ELOOP:
            return "missing", None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "blocked", None
        chunks, size = [], 0
        while size <= LIMIT:
            chunk = os.read(fd, min(1 << 20, LIMIT + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return "file", b"".join(chunks)
    finally:
        os.close(fd)


def decide(rel: str, base_sha: Optional[str], new: bytes, local: Local,
           base_blob: Optional[bytes]) -> Optional[Decision]:
    """nbgitpuller's rule for one file (None: nothing to do). `base_sha`: what the seat was
    given at this path (None: the path is new upstream); `base_blob`: that notebook's copy."""
    new_sha = seatbase.digest(new)
    if base_sha == new_sha:
        return None
    kind, data = local
    if kind == "blocked":
        return "kept", [], "a folder or special file is where it goes; nothing written"
    if kind == "missing":
        return ("restored" if base_sha else "added"), [(rel, new)], ""
    assert data is not None
    mine = seatbase.digest(data) if len(data) <= LIMIT else ""
    if mine == new_sha:
        return None
    if base_sha is not None and mine == base_sha:
        return "updated", [(rel, new)], ""
    if base_sha is None:
        return "beside", [(beside(rel), new)], f"the student's own {rel} is kept"
    if not rel.endswith(seatbase.NOTEBOOK):
        return "kept", [], "edited by the student; the upstream change is not applied"
    merged = _merge(base_blob, data, new)
    if merged is not None:
        return "merged", [(rel, merged)], ""
    return "beside", [(beside(rel), new)], "edited by the student in the cells the fix changes"


def _merge(base_blob: Optional[bytes], local: bytes, new: bytes) -> Optional[bytes]:
    if base_blob is None or len(local) > LIMIT:
        return None
    sides = [nbmerge.parse(b) for b in (base_blob, local, new)]
    if any(s is None for s in sides):
        return None
    b, mine, up = cast(List[Dict[str, Any]], sides)
    merged = nbmerge.merge(b, mine, up)
    return None if merged is None else nbmerge.dump(merged)


# ---- the operation ----------------------------------------------------------------------------

def _refusal(seat: Seat, record: Optional[records.Record]) -> Optional[str]:
    """Why this seat is not updated now (None: it is): only a seat whose record says it holds
    an active session of the workshop."""
    if record is None:
        return f"seat {seat['user']} is free on the host"
    if record.get("session") != seat["session"]:
        return f"seat {seat['user']} is held on the host by session {record.get('session')}"
    if record.get("workshop") != seat["workshop"]:
        return f"seat {seat['user']} holds workshop {record.get('workshop')} on the host"
    if record.get("state") != "active":
        return f"seat {seat['user']} is {record.get('state')} on the host"
    return None


def _given(seat: Seat) -> Dict[str, Tuple[bytes, int]]:
    """The new revision's files for the seat; scripts compiled at CREATE are left out (their
    binaries are not the sources)."""
    compiled = set(seat.get("compile") or [])
    return {f["path"]: (base64.b64decode(f["data"]), f["mode"])
            for f in seat.get("files", []) if f["path"] not in compiled}


def _apply(seat: Seat, base: seatbase.Base, user: pwd.struct_passwd) -> List[FileReport]:
    """Every file decided, the writes made in one link-safe pass, the report."""
    given = _given(seat)
    folder = safefs.split_rel(seat["workshop"])
    reports: List[FileReport] = []
    writes: List[safefs.TreeFile] = []
    with safefs.opened_home(user.pw_dir, user.pw_uid, user.pw_gid) as fd:
        for rel in sorted(given):
            data, mode = given[rel]
            sha = base["files"].get(rel)
            blob = seatbase.blob(seat["state_dir"], seat["user"], sha) if sha else None
            decision = decide(rel, sha, data, probe(fd, folder + safefs.split_rel(rel)), blob)
            if decision is None:
                continue
            action, files, note = decision
            if action == "beside" and probe(fd, folder + safefs.split_rel(files[0][0]))[0] \
                    == "blocked":  # a folder of the student's where the copy would land
                action, files, note = "kept", [], f"{note}; {files[0][0]} is a folder"
            writes += [(path, content, mode) for path, content in files]
            report: FileReport = {"path": rel, "action": action}
            if action == "beside":
                report["beside"] = files[0][0]
            if note:
                report["note"] = note
            reports.append(report)
        if writes:
            safefs.write_tree(fd, seat["workshop"], writes, user.pw_uid, user.pw_gid,
                              keep_existing=False)
    new_base: seatbase.Base = {"revision": seat.get("revision", ""), "session": seat["session"],
                               "workshop": seat["workshop"],
                               "files": {rel: seatbase.digest(d) for rel, (d, _) in given.items()}}
    seatbase.save(seat["state_dir"], seat["user"], new_base,
                  [(rel, d) for rel, (d, _) in given.items()])
    return reports


def _account(seat: Seat) -> pwd.struct_passwd:
    return accountsdb.seat_account(seat["user"], seat["uid"])


def update_seat(seat: Seat, timeout: float) -> SeatUpdated:
    """One seat of a `seat_update` call, under its lock."""
    started = time.monotonic()
    out: SeatUpdated = {"user": seat["user"], "session": seat["session"], "ok": False,
                        "error": None, "revision": seat.get("revision", ""), "files": []}
    try:
        with records.locked(seat["state_dir"], [seat["user"]], timeout):
            refusal = _refusal(seat, records.read(seat["state_dir"], seat["user"]))
            base = seatbase.load(seat["state_dir"], seat["user"])
            if refusal is None and (base is None or base["session"] != seat["session"]):
                refusal = (f"seat {seat['user']} has no record of what it was given (created "
                           "before live updates): not updated")
            if refusal is not None or base is None:
                out["error"] = refusal
                return out
            out["files"] = _apply(seat, base, _account(seat))
            out["ok"] = True
    except Exception as exc:  # this seat's failure is this seat's answer
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.monotonic() - started, 4)
    return out


def update(payload: SeatUpdateRequest, host: HostSide) -> SeatUpdateAnswer:
    """Operation `seat_update`: the seats of `seats` (one host's), each answered on its own."""
    timeout = payload.get("lock_timeout", 30.0)
    return {"seats": [update_seat(s, timeout) for s in payload["seats"]]}


OPERATIONS: Dict[str, Callable[[Any, HostSide], Any]] = {"seat_update": update}
