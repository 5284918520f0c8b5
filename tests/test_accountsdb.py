"""The bulk account databases (wodsync.agent.accountsdb) against copies of /etc and real accounts.

Consistency is judged by shadow-utils itself: `pwck -R <root> -r` and `grpck -R <root> -r`
check the four files of `<root>/etc` inside a chroot, so cross-file checks (a user's group, a
member's account) use the copy and not this machine's accounts. Messages about home folders and
shells missing in the chroot are facts of the test root, not of the databases, and are ignored.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wodsync.agent import accountsdb as db

FILES = ("passwd", "shadow", "group", "gshadow")
PREFIX = "wodta"
REAL_BASE = 55000  # real accounts: uids 55001..55050
BASE, POOL_GID, FOREIGN = 3100000, 3100999, 3099000  # in copies: far from any real id
IGNORED = re.compile(r"user '.*': (directory|program) '.*' does not exist|[pg][wr][cp]ck: no "
                     r"changes")
# What a kill may leave between two renames (see the module docstring), and nothing else.
WINDOW = re.compile(r"no matching password file entry in /etc/passwd|no matching group file "
                    r"entry in /etc/group|delete line '.*'\? No|'.*' is a member of the '.*' "
                    r"group in /etc/gshadow but not in /etc/group")


def seat(n: int, home_root: str = "/home", base: int = BASE) -> db.NewAccount:
    name = f"{PREFIX}{n}"
    return {"name": name, "uid": base + n, "gid": base + n,
            "home": f"{home_root}/{name}", "shell": "/bin/bash", "gecos": "wodsync seat"}


def names(first: int, last: int) -> list[str]:
    return [f"{PREFIX}{n}" for n in range(first, last + 1)]


class Etc:
    """A chroot-like folder whose etc/ holds copies of this machine's four databases."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.path = top / "etc"
        self.path.mkdir(parents=True)
        for name in FILES:
            shutil.copy2(f"/etc/{name}", self.path / name)
            st = Path(f"/etc/{name}").stat()
            os.chown(self.path / name, st.st_uid, st.st_gid)

    @property
    def root(self) -> str:
        return str(self.path)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def append(self, name: str, text: str) -> None:
        with (self.path / name).open("a", encoding="utf-8") as f:
            f.write(text)

    def snapshot(self) -> dict[str, str]:
        """The four files; shadow's last-change days blanked (a run may cross midnight)."""
        found = {n: self.read(n).decode() for n in FILES if (self.path / n).exists()}
        found["shadow"] = re.sub(r"^([^:\n]*:[^:\n]*:)\d+", r"\1D", found["shadow"], flags=re.M)
        return found

    def restore(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            (self.path / name).write_bytes(data)

    def problems(self) -> list[str]:
        found = []
        for tool in ("pwck", "grpck"):
            done = subprocess.run([tool, "-R", str(self.top), "-r"], capture_output=True,
                                  text=True, check=False)
            found += [ln for ln in (done.stdout + done.stderr).splitlines()
                      if ln and not IGNORED.fullmatch(ln)]
        return found

    def leftovers(self) -> list[str]:
        return [p.name for p in self.path.iterdir()
                if p.name.startswith((db.TEMP_PREFIX, db.JOURNAL))]


@pytest.fixture
def etc(tmp_path: Path) -> Etc:
    return Etc(tmp_path / "root")


def assert_parses(etc: Etc) -> None:
    """Every entry line has its file's field count and numeric ids: no file is cut short."""
    for name in FILES:
        for line in etc.read(name).decode().split("\n")[:-1]:
            if not line or line[0] in "#+-":
                continue
            fields = line.split(":")
            assert len(fields) == db.FIELDS[name], f"{name}: {line!r}"
            if name in ("passwd", "group"):
                assert fields[2].isdigit(), f"{name}: {line!r}"


def entries(etc: Etc, name: str) -> dict[str, str]:
    return {ln.split(":", 1)[0]: ln for ln in etc.read(name).decode().splitlines()
            if ln and ln[0] not in "#+-"}


# ---------------------------------------------------------------- creation


def test_create_2000_writes_every_entry_and_keeps_every_other_byte(etc: Etc) -> None:
    with (etc.path / "passwd").open("ab") as f:  # a gecos that is not UTF-8
        f.write(f"ren:x:{FOREIGN}:{FOREIGN}:Ren\xe9  Odd,,,:/home/ren:/bin/sh\n".encode("latin-1"))
    etc.append("passwd", "# a comment kept as it is\n+::::::\n")
    etc.append("group", f"ren:x:{FOREIGN}:root\n+:::")  # no newline at the end
    etc.append("gshadow", "ren:!::root\n")
    etc.append("shadow", "ren:*:19000:0:99999:7:::")
    before = {n: etc.read(n) for n in FILES}
    stats = {n: (etc.path / n).stat() for n in FILES}
    baseline = etc.problems()

    out = db.create([seat(n) for n in range(1, 2001)], root=etc.root)

    assert out["created"] == names(1, 2000) and not out["errors"]
    assert out["written"] == ["gshadow", "group", "shadow", "passwd"]
    assert etc.problems() == baseline
    passwd, shadow = etc.read("passwd"), etc.read("shadow")
    new_users = "".join(f"{PREFIX}{n}:x:{BASE + n}:{BASE + n}:wodsync seat:"
                        f"/home/{PREFIX}{n}:/bin/bash\n" for n in range(1, 2001)).encode()
    # new entries go before the first NIS entry, as shadow-utils puts them
    assert passwd == before["passwd"].replace(b"+::::::\n", new_users + b"+::::::\n")
    assert etc.read("group") == before["group"].replace(b"+:::", "".join(
        f"{PREFIX}{n}:x:{BASE + n}:\n" for n in range(1, 2001)).encode() + b"+:::")
    assert etc.read("gshadow") == before["gshadow"] + "".join(
        f"{PREFIX}{n}:!::\n" for n in range(1, 2001)).encode()
    days = int(time.time() // 86400)
    assert shadow.startswith(before["shadow"] + b"\n")
    assert f"\n{PREFIX}2000:!:{days}:0:99999:7:::\n".encode() in shadow
    for name in FILES:
        st = (etc.path / name).stat()
        assert (st.st_uid, st.st_gid, st.st_mode) == (
            stats[name].st_uid, stats[name].st_gid, stats[name].st_mode), name
        backup = etc.path / f"{name}-"
        assert backup.read_bytes() == before[name], f"{name}- is the previous version"
        assert backup.stat().st_mode == stats[name].st_mode
    assert etc.leftovers() == []


def test_read_databases_sees_the_new_accounts_groups_and_locked_passwords(etc: Etc) -> None:
    db.create([seat(1), seat(2)], root=etc.root)
    db.set_members("wodtapool", POOL_GID, names(1, 2), root=etc.root)

    found = db.read_databases(etc.root)

    assert found["users"]["wodta2"] == {"name": "wodta2", "uid": BASE + 2, "gid": BASE + 2,
                                        "gecos": "wodsync seat", "home": "/home/wodta2",
                                        "shell": "/bin/bash"}
    assert found["passwords"]["wodta1"] == "locked"
    assert found["groups"]["wodta1"] == {"name": "wodta1", "gid": BASE + 1, "members": []}
    assert found["groups"]["wodtapool"]["members"] == ["wodta1", "wodta2"]


def test_create_again_skips_converged_accounts_without_writing(etc: Etc) -> None:
    db.create([seat(n) for n in range(1, 11)], root=etc.root)
    before = etc.snapshot()

    out = db.create([seat(n) for n in range(1, 11)], root=etc.root)

    assert out["skipped"] == names(1, 10)
    assert out["written"] == [] and out["created"] == []
    assert etc.snapshot() == before


def test_create_refuses_seats_whose_name_uid_or_gid_another_entry_holds(etc: Etc) -> None:
    etc.append("passwd", f"squatter:x:{BASE + 3}:100::/home/squatter:/bin/sh\n"
                         f"{PREFIX}7:x:{FOREIGN + 7}:100::/home/other:/bin/sh\n")
    etc.append("shadow", f"squatter:!:19000:0:99999:7:::\n{PREFIX}7:!:19000:0:99999:7:::\n")
    etc.append("group", f"gsquat:x:{BASE + 5}:\n")
    etc.append("gshadow", "gsquat:!::\n")
    foreign = {n: entries(etc, n) for n in FILES}
    baseline = etc.problems()

    out = db.create([seat(n) for n in range(1, 11)], root=etc.root)

    refused = {e["subject"]: e["message"] for e in out["errors"]}
    assert sorted(refused) == ["wodta3", "wodta5", "wodta7"]
    assert f"uid {BASE + 3} is taken by account squatter" in refused["wodta3"]
    assert f"gid {BASE + 5} is taken by group gsquat" in refused["wodta5"]
    assert f"account wodta7 exists with uid {FOREIGN + 7}" in refused["wodta7"]
    assert out["created"] == [f"{PREFIX}{n}" for n in (1, 2, 4, 6, 8, 9, 10)]
    after = {n: entries(etc, n) for n in FILES}
    assert "wodta3" not in after["passwd"] and "wodta5" not in after["group"]
    for name in FILES:
        for key, line in foreign[name].items():
            assert after[name][key] == line, f"{name}: {key} untouched"
    assert etc.problems() == baseline


def test_create_refuses_a_malformed_request_per_account(etc: Etc) -> None:
    bad_gecos = dict(seat(2), gecos="a:b")
    bad_uid = dict(seat(3), uid="3")
    out = db.create([seat(1), bad_gecos, bad_uid, dict(seat(4), name="4ever"), seat(1)],
                    root=etc.root)

    refused = [e["message"] for e in out["errors"]]
    assert out["created"] == ["wodta1"]
    assert any("gecos 'a:b' cannot be written" in m for m in refused)
    assert any("uid '3' is not a number" in m for m in refused)
    assert any("'4ever' is not a valid account name" in m for m in refused)
    assert any("wodta1 is listed twice" in m for m in refused)


def test_create_completes_an_account_whose_shadow_entry_is_missing(etc: Etc) -> None:
    db.create([seat(1)], root=etc.root)
    shadow = etc.read("shadow").decode()
    (etc.path / "shadow").write_text(re.sub(r"^wodta1:.*\n", "", shadow, flags=re.M))

    out = db.create([seat(1)], root=etc.root)

    assert out["repaired"] == ["wodta1"] and out["written"] == ["shadow"]
    assert entries(etc, "shadow")["wodta1"].startswith("wodta1:!:")


def test_a_missing_gshadow_is_not_created(etc: Etc) -> None:
    (etc.path / "gshadow").unlink()

    out = db.create([seat(1), seat(2)], root=etc.root)
    db.set_members("wodtapool", POOL_GID, names(1, 2), root=etc.root)

    assert out["written"] == ["group", "shadow", "passwd"]
    assert not (etc.path / "gshadow").exists()
    assert entries(etc, "group")["wodtapool"] == f"wodtapool:x:{POOL_GID}:wodta1,wodta2"


def test_a_missing_passwd_is_an_error_naming_the_file(etc: Etc) -> None:
    (etc.path / "passwd").unlink()
    with pytest.raises(db.AccountsDbError, match=f"{etc.root}/passwd is missing"):
        db.create([seat(1)], root=etc.root)


def test_a_system_without_shadow_is_read_with_passwords_from_passwd_but_not_edited(
        etc: Etc) -> None:
    """Reading (what every observation of the accounts and the shared group does) needs no
    /etc/shadow: passwords are then passwd's, `x` meaning none. Editing still needs it."""
    db.create([seat(1)], root=etc.root)
    (etc.path / "shadow").unlink()
    etc.append("passwd", f"{PREFIX}8:$6$salt$hash:{FOREIGN + 8}:{FOREIGN + 8}::/h:/bin/sh\n"
                         f"{PREFIX}9::{FOREIGN + 9}:{FOREIGN + 9}::/h:/bin/sh\n")

    found = db.read_databases(etc.root)

    assert found["users"][f"{PREFIX}1"]["uid"] == BASE + 1
    assert found["groups"][f"{PREFIX}1"]["gid"] == BASE + 1
    assert {n: found["passwords"][n] for n in [*names(8, 9), f"{PREFIX}1"]} == \
        {f"{PREFIX}8": "set", f"{PREFIX}9": "empty", f"{PREFIX}1": "locked"}
    with pytest.raises(db.AccountsDbError, match=f"{etc.root}/shadow is missing"):
        db.create([seat(2)], root=etc.root)


# ---------------------------------------------------------------- deletion and groups


def test_delete_removes_accounts_private_groups_and_memberships(etc: Etc) -> None:
    etc.append("group", f"devs:x:{FOREIGN}:root,{PREFIX}2\n")
    etc.append("gshadow", f"devs:!:{PREFIX}2:root,{PREFIX}2\n")
    db.apply({"create": [seat(n) for n in range(1, 6)],
              "groups": [{"name": "wodtapool", "gid": POOL_GID, "members": names(1, 5)}]},
             root=etc.root)
    untouched = {n: {k: v for k, v in entries(etc, n).items()
                     if not k.startswith(PREFIX) and k not in ("devs", "wodtapool")}
                 for n in FILES}
    baseline = etc.problems()

    out = db.delete(["wodta2", "wodta3", "nobody-here"], root=etc.root)

    assert out["deleted"] == ["wodta2", "wodta3"] and out["absent"] == ["nobody-here"]
    after = {n: entries(etc, n) for n in FILES}
    for name in FILES:
        assert "wodta2" not in after[name] and "wodta3" not in after[name], name
        assert "wodta1" in after[name] and "wodta4" in after[name], name
        assert {k: v for k, v in after[name].items() if k in untouched[name]} == untouched[name]
    assert after["group"]["wodtapool"] == f"wodtapool:x:{POOL_GID}:wodta1,wodta4,wodta5"
    assert after["gshadow"]["wodtapool"] == "wodtapool:!::wodta1,wodta4,wodta5"
    assert after["group"]["devs"] == f"devs:x:{FOREIGN}:root"
    assert after["gshadow"]["devs"] == "devs:!::root"
    assert etc.problems() == baseline


def test_delete_keeps_a_private_group_another_account_uses(etc: Etc) -> None:
    db.create([seat(1)], root=etc.root)
    etc.append("passwd", f"buddy:x:{FOREIGN + 1}:{BASE + 1}::/home/buddy:/bin/sh\n")
    etc.append("shadow", "buddy:!:19000:0:99999:7:::\n")
    baseline = etc.problems()

    out = db.delete(["wodta1"], root=etc.root)

    assert "group wodta1 kept: it is the primary group of account buddy" in out["notes"]
    assert "wodta1" in entries(etc, "group") and "wodta1" not in entries(etc, "passwd")
    assert etc.problems() == baseline


def test_set_members_sets_the_list_exactly_in_group_and_gshadow(etc: Etc) -> None:
    db.create([seat(n) for n in range(1, 5)], root=etc.root)
    db.set_members("wodtapool", POOL_GID, ["wodta1", "wodta2"], root=etc.root)
    baseline = etc.problems()

    out = db.set_members("wodtapool", POOL_GID, ["wodta4", "wodta2", "wodta3", "wodta4"],
                         root=etc.root)
    again = db.set_members("wodtapool", POOL_GID, ["wodta4", "wodta2", "wodta3"],
                           root=etc.root)

    assert out["groups"] == ["wodtapool"]
    assert entries(etc, "group")["wodtapool"] == f"wodtapool:x:{POOL_GID}:wodta4,wodta2,wodta3"
    assert entries(etc, "gshadow")["wodtapool"] == "wodtapool:!::wodta4,wodta2,wodta3"
    assert again["written"] == [] and again["groups"] == []
    assert etc.problems() == baseline


def test_set_members_refuses_a_gid_or_name_held_by_another_group(etc: Etc) -> None:
    db.create([seat(1)], root=etc.root)
    etc.append("group", f"other:x:{POOL_GID}:\n")
    etc.append("gshadow", "other:!::\n")
    before = etc.snapshot()

    taken = db.set_members("wodtapool", POOL_GID, ["wodta1"], root=etc.root)
    moved = db.set_members("other", FOREIGN, ["wodta1"], root=etc.root)

    assert taken["errors"] == [{"subject": "wodtapool",
                                "message": f"gid {POOL_GID} is taken by group other"}]
    assert moved["errors"] == [{"subject": "other", "message":
                                f"group other exists with gid {POOL_GID} (wanted {FOREIGN})"}]
    assert etc.snapshot() == before


def test_set_members_refuses_members_that_are_no_accounts_and_sets_the_others(etc: Etc) -> None:
    db.create([seat(1)], root=etc.root)

    out = db.set_members("wodtapool", POOL_GID, ["wodta1", "ghost"], root=etc.root)

    assert out["errors"] == [{"subject": "wodtapool",
                              "message": "group wodtapool: member ghost is not an account"}]
    assert entries(etc, "group")["wodtapool"] == f"wodtapool:x:{POOL_GID}:wodta1"


def test_set_password_field_changes_many_accounts_in_one_write(etc: Etc) -> None:
    db.create([seat(n) for n in range(1, 101)], root=etc.root)

    unlocked = db.set_password_field(names(1, 100), "$6$salt$hash", root=etc.root)
    locked = db.set_password_field(names(1, 50), "!", root=etc.root)

    assert unlocked["written"] == ["shadow"] and len(unlocked["passwords"]) == 100
    assert locked["written"] == ["shadow"] and locked["passwords"] == names(1, 50)
    states = db.read_databases(etc.root)["passwords"]
    assert {states[n] for n in names(1, 50)} == {"locked"}
    assert {states[n] for n in names(51, 100)} == {"set"}
    assert entries(etc, "shadow")["wodta51"].split(":")[1] == "$6$salt$hash"


def test_one_change_does_everything_with_one_write_per_stage(etc: Etc) -> None:
    db.apply({"create": [seat(n) for n in range(1, 11)],
              "groups": [{"name": "wodtapool", "gid": POOL_GID, "members": names(1, 10)}]},
             root=etc.root)
    baseline = etc.problems()

    out = db.apply({"delete": names(1, 5), "create": [seat(n) for n in range(11, 16)],
                    "groups": [{"name": "wodtapool", "gid": POOL_GID,
                                "members": names(6, 15)}],
                    "password_fields": {n: "!*" for n in names(6, 8)}}, root=etc.root)

    assert out["written"] == ["group", "gshadow", "group", "shadow", "passwd", "shadow",
                              "gshadow", "group", "gshadow"]
    assert (out["deleted"], out["created"]) == (names(1, 5), names(11, 15))
    assert entries(etc, "group")["wodtapool"].endswith(":" + ",".join(names(6, 15)))
    assert entries(etc, "shadow")["wodta7"].split(":")[1] == "!*"
    assert etc.problems() == baseline


def test_leftover_temporary_files_are_removed_by_the_next_run(etc: Etc) -> None:
    (etc.path / f"{db.TEMP_PREFIX}abc123").write_text("half a passwd")

    db.apply({}, root=etc.root)

    assert etc.leftovers() == []


# ---------------------------------------------------------------- lock


def test_waits_for_the_lock_held_by_another_process(etc: Etc, tmp_path: Path) -> None:
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(0.3)\n"
         "open(sys.argv[2], 'w').close()\n",
         str(etc.path / ".pwd.lock"), str(released)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        out = db.create([seat(1)], root=etc.root, timeout=60)
    finally:
        holder.wait()
    assert released.exists(), "the change was written only after the holder let go"
    assert out["created"] == ["wodta1"]


def test_times_out_naming_the_process_that_holds_lckpwdf(etc: Etc) -> None:
    # glibc's own lckpwdf(), in a chroot whose /etc is the copy: the lock shadow-utils takes
    holder = subprocess.Popen(
        [sys.executable, "-c", "import ctypes, os, sys\nlibc = ctypes.CDLL(None)\n"
         "os.chroot(sys.argv[1])\nassert libc.lckpwdf() == 0\nprint('locked', flush=True)\n"
         "sys.stdin.read()\n", str(etc.top)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    before = etc.snapshot()
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(db.LockTimeout) as caught:
            db.create([seat(1)], root=etc.root, timeout=0.3)
    finally:
        holder.stdin.close()
        holder.wait()
    message = str(caught.value)
    assert message.startswith("account databases are locked by another process (")
    assert f"pid {holder.pid} (python" in message and f"{etc.root}/.pwd.lock" in message
    assert etc.snapshot() == before


# ---------------------------------------------------------------- kill -9


def _start_state(etc: Etc) -> dict[str, bytes]:
    """60 seats in a shared group, one a member and admin of a foreign group."""
    etc.append("group", f"devs:x:{FOREIGN}:root,{PREFIX}5\n")
    etc.append("gshadow", f"devs:!:{PREFIX}5:root,{PREFIX}5\n")
    db.apply({"create": [seat(n) for n in range(1, 61)],
              "groups": [{"name": "wodtapool", "gid": POOL_GID, "members": names(1, 60)}]},
             root=etc.root)
    return {n: etc.read(n) for n in FILES}


FORWARD: db.AccountsEdit = {
    "delete": names(1, 30), "create": [seat(n) for n in range(61, 91)],
    "groups": [{"name": "wodtapool", "gid": POOL_GID, "members": names(31, 90)}],
    "password_fields": {n: "!*" for n in names(31, 40)}}
BACKWARD: db.AccountsEdit = {
    "delete": names(61, 90), "create": [seat(n) for n in range(1, 31)],
    "groups": [{"name": "wodtapool", "gid": POOL_GID, "members": names(1, 60)},
               {"name": "devs", "gid": FOREIGN, "members": ["root", f"{PREFIX}5"]}],
    "password_fields": {n: "!" for n in names(31, 40)}}


def _run_killed(etc: Etc, change: db.AccountsEdit, at_step: int | None, delay: float = 0) -> int:
    """Run `change` in a forked child killed with SIGKILL at its `at_step`-th durable step,
    or after `delay` seconds when `at_step` is None."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            if at_step is not None:
                seen = []

                def hook(label: str) -> None:
                    seen.append(label)
                    if len(seen) == at_step:
                        os.kill(os.getpid(), signal.SIGKILL)
                db._HOOK = hook
            db.apply(change, root=etc.root)
        finally:
            os._exit(0)
    if at_step is None:
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _assert_window_only(etc: Etc, baseline: list[str]) -> None:
    assert_parses(etc)
    new = [ln for ln in etc.problems() if ln not in baseline]
    assert [ln for ln in new if not WINDOW.fullmatch(ln)] == [], "a kill left more than a window"


def _steps_of(etc: Etc, start: dict[str, bytes], change: db.AccountsEdit) -> tuple[list[str], dict]:
    labels: list[str] = []
    db._HOOK = labels.append
    try:
        db.apply(change, root=etc.root)
    finally:
        db._HOOK = None
    target = etc.snapshot()
    etc.restore(start)
    return labels, target


def test_a_kill_at_every_step_leaves_a_window_the_next_call_closes(etc: Etc) -> None:
    start = _start_state(etc)
    baseline = etc.problems()
    before = etc.snapshot()
    labels, target = _steps_of(etc, start, FORWARD)
    assert labels.count("journal") == 1 and len(labels) > 20
    for step in range(1, len(labels) + 1):
        etc.restore(start)
        status = _run_killed(etc, FORWARD, step)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        _assert_window_only(etc, baseline)
        journal = (etc.path / db.JOURNAL).exists()
        assert journal == ("journal" in labels[:step] and "journal-removed" not in labels[:step])

        out = db.apply({}, root=etc.root)  # any next call, not the same one

        assert out["recovered"] == journal, labels[step - 1]
        assert etc.snapshot() == (target if "journal" in labels[:step] else before)
        assert etc.problems() == baseline, f"after a kill at {labels[step - 1]}"
        assert etc.leftovers() == []
        db.apply(FORWARD, root=etc.root)
        assert etc.snapshot() == target, f"rerun after a kill at {labels[step - 1]}"


def test_random_kills_leave_complete_files_and_a_rerun_converges(etc: Etc) -> None:
    start = _start_state(etc)
    baseline = etc.problems()
    _, forward = _steps_of(etc, start, FORWARD)
    db.apply(FORWARD, root=etc.root)
    middle = {n: etc.read(n) for n in FILES}
    _, backward = _steps_of(etc, middle, BACKWARD)
    began = time.monotonic()
    db.apply(FORWARD, root=etc.root)  # a duration to draw kill delays from, nothing asserted
    span = (time.monotonic() - began) * 1.5
    rng = random.Random(7)
    for i in range(200):
        state, change, target = ((start, FORWARD, forward) if i % 2 == 0
                                 else (middle, BACKWARD, backward))
        etc.restore(state)
        _run_killed(etc, change, None, rng.uniform(0, span))
        _assert_window_only(etc, baseline)
        db.apply(change, root=etc.root)
        assert etc.snapshot() == target, f"iteration {i}"
        assert etc.problems() == baseline and etc.leftovers() == []


# ---------------------------------------------------------------- real accounts, other Python


def remove_real_seats() -> None:
    """This file's real accounts and groups only: prefix wodta *and* ids 55001..55050."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and REAL_BASE < entry.pw_uid <= REAL_BASE + 50:
            subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
    for group in grp.getgrall():
        if group.gr_name.startswith(PREFIX) and REAL_BASE < group.gr_gid <= REAL_BASE + 50:
            subprocess.run(["groupdel", group.gr_name], check=False, capture_output=True)


@pytest.fixture
def real_seats(tmp_path: Path):
    remove_real_seats()
    try:
        yield [seat(n, str(tmp_path), REAL_BASE) for n in range(1, 51)]
    finally:
        remove_real_seats()


def test_real_accounts_are_usable_by_login_tools_and_go_away(real_seats: list) -> None:
    out = db.create(real_seats, root="/etc")
    assert out["created"] == names(1, 50), out["errors"]

    line = subprocess.run(["getent", "passwd", "wodta7"], capture_output=True, text=True)
    ident = subprocess.run(["id", "wodta7"], capture_output=True, text=True)
    runuser = subprocess.run(["runuser", "-u", "wodta7", "--", "true"], capture_output=True)
    assert line.stdout.split(":")[:4] == ["wodta7", "x", "55007", "55007"]
    assert ident.stdout.split()[:2] == ["uid=55007(wodta7)", "gid=55007(wodta7)"]
    assert runuser.returncode == 0, runuser.stderr

    gone = db.delete(names(1, 50), root="/etc")
    assert gone["deleted"] == names(1, 50)
    assert subprocess.run(["getent", "passwd", "wodta7"]).returncode == 2
    with pytest.raises(KeyError):
        grp.getgrnam("wodta7")
