"""Root's file work below student homes, attacked the way a student would (agent/safefs.py).

A real account (wodtf1) owns a home in a temp folder and plants its links as itself (its own
processes); root-owned folders and files stand in for /etc/profile.d and other targets. After
every attack the targets are compared whole: type, owner, mode, inode, content digest, folder
listing and times are what they were, so nothing outside the home was created, changed or
chowned.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wodsync.agent import safefs
from wodsync.agent.safefs import InvalidPath, NotEmpty, UnsafePath

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real accounts, mounts)")

PREFIX, FIRST, LAST = "wodtf", 56001, 56010
STUDENT, ADMIN = 56001, 56002
NAMES = {STUDENT: "wodtf1", ADMIN: "wodtf2"}
SYSTEM_PYTHON = "/usr/bin/python3"


def _remove_accounts() -> None:
    """Only this file's accounts: the wodtf prefix and the 56001-56010 range together."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and FIRST <= entry.pw_uid <= LAST:
            subprocess.run(["pkill", "-KILL", "-U", str(entry.pw_uid)], check=False)
            subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
    for group in grp.getgrall():
        if group.gr_name.startswith(PREFIX) and FIRST <= group.gr_gid <= LAST:
            subprocess.run(["groupdel", group.gr_name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def accounts() -> Iterator[None]:
    _remove_accounts()
    try:
        for uid, name in NAMES.items():
            subprocess.run(["groupadd", "-g", str(uid), name], check=True)
            subprocess.run(["useradd", "-u", str(uid), "-g", str(uid), "-M", "-d",
                            "/nonexistent", "-s", "/usr/sbin/nologin", name], check=True)
        yield
    finally:
        _remove_accounts()


@dataclass
class Area:
    """A temp folder with a trusted home root, the student's home and root-owned targets."""

    root: Path
    homes: Path
    home: Path
    targets: Path
    fd: int

    def snapshot(self, times: bool = True) -> dict[str, tuple]:
        return snapshot(self.targets, times)


def snapshot(top: Path, times: bool = True) -> dict[str, tuple]:
    """Everything observable about a tree; `times` off for an attack that legitimately drops a
    hard link (the target's link count and ctime then change, nothing else may)."""
    seen = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        facts: tuple = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                        st.st_ino, st.st_mtime_ns)
        if times:
            facts += (st.st_ctime_ns, st.st_nlink)
        if path.is_symlink():
            facts += (path.readlink(),)
        elif path.is_dir():
            facts += (names(path),)
        elif path.is_file():
            facts += (hashlib.sha256(path.read_bytes()).hexdigest(),)
        seen[str(path.relative_to(top))] = facts
    return seen


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mounts_below(top: Path) -> list[str]:
    with Path("/proc/self/mountinfo").open(encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(f"{top}/")), key=len, reverse=True)


@pytest.fixture
def area(accounts: None) -> Iterator[Area]:
    root = Path(tempfile.mkdtemp(prefix="wodtf-", dir="/tmp"))
    root.chmod(0o755)  # the student must reach its home through it
    homes, targets = root / "homes", root / "targets"
    homes.mkdir(mode=0o755)
    make_targets(targets)
    safefs.ensure_home(str(homes), "wodtf1", STUDENT, STUDENT)
    fd = safefs.open_home(str(homes / "wodtf1"), STUDENT, STUDENT)
    try:
        yield Area(root, homes, homes / "wodtf1", targets, fd)
    finally:
        os.close(fd)
        subprocess.run(["pkill", "-KILL", "-U", str(STUDENT)], check=False)
        for point in _mounts_below(root):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(root)


def make_targets(targets: Path) -> None:
    """Stand-ins for /etc/profile.d, a root-only folder and root files."""
    (targets / "profile.d").mkdir(parents=True, mode=0o755)
    (targets / "profile.d" / "login.sh").write_text("echo root's login script\n")
    (targets / "rootdir").mkdir(mode=0o700)
    (targets / "rootdir" / "secret.txt").write_text("root only\n")
    (targets / "rootdir" / "secret.txt").chmod(0o600)
    (targets / "rootfile").write_text("root data\n")
    (targets / "rootfile").chmod(0o644)
    for path in (targets, targets / "profile.d"):
        path.chmod(0o755)


def as_student(*argv: str) -> subprocess.CompletedProcess[str]:
    """A command run with the student's uid and gid only (its links are its own doing)."""
    return subprocess.run(list(argv), user=STUDENT, group=STUDENT, extra_groups=[], cwd="/",
                          capture_output=True, text=True, check=True)


def student_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return as_student(SYSTEM_PYTHON, "-c", script, *args)


def assert_students(path: Path, mode: int, data: bytes | None = None) -> None:
    st = path.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (STUDENT, STUDENT, mode), path
    if data is None:
        assert stat.S_ISDIR(st.st_mode), path
    else:
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, path
        assert path.read_bytes() == data


NOTES, SCRIPT = b'{"cells": []}\n', b"echo workshop\n"
WORKSHOP = [("notes.ipynb", NOTES, 0o644), ("scripts/login.sh", SCRIPT, 0o755)]


def write_workshop(area: Area, keep: bool = False) -> safefs.TreeCounts:
    return safefs.write_tree(area.fd, "WKSHP-X", WORKSHOP, STUDENT, STUDENT, keep)


def assert_workshop(area: Area) -> None:
    folder = area.home / "WKSHP-X"
    assert_students(folder, 0o755)
    assert_students(folder / "scripts", 0o755)
    assert_students(folder / "notes.ipynb", 0o644, NOTES)
    assert_students(folder / "scripts" / "login.sh", 0o755, SCRIPT)


# -- write_tree under attack -------------------------------------------------------------------

def test_a_linked_workshop_folder_is_replaced_by_a_real_one_and_its_target_untouched(area):
    as_student("ln", "-s", str(area.targets / "rootdir"), str(area.home / "WKSHP-X"))
    before = area.snapshot()
    counts = write_workshop(area)
    assert area.snapshot() == before
    assert counts.replaced == 1 and counts.written == 2
    assert_workshop(area)


def test_a_linked_subfolder_never_puts_a_script_into_the_fake_profile_d(area):
    as_student("mkdir", str(area.home / "WKSHP-X"))
    as_student("ln", "-s", str(area.targets / "profile.d"), str(area.home / "WKSHP-X/scripts"))
    before = area.snapshot()
    write_workshop(area)
    assert area.snapshot() == before
    assert_workshop(area)


@pytest.mark.parametrize("keep", [False, True])
def test_a_linked_file_is_never_written_through(area, keep):
    as_student("mkdir", str(area.home / "WKSHP-X"))
    link = area.home / "WKSHP-X/notes.ipynb"
    as_student("ln", "-s", str(area.targets / "rootfile"), str(link))
    before = area.snapshot()
    counts = write_workshop(area, keep=keep)
    assert area.snapshot() == before
    if keep:
        assert counts.kept == 1 and link.readlink() == area.targets / "rootfile"
    else:
        assert counts.replaced == 1
        assert_workshop(area)


FIFO_READER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
print("ready", flush=True)
sys.stdin.read()
try:
    print(len(os.read(fd, 65536)))
except BlockingIOError:
    print(0)
"""


def test_a_fifo_where_a_file_goes_is_replaced_without_being_opened(area):
    """The student holds the fifo's read end (so a write-through would not block, but be
    read); root replaces the fifo and the student reads nothing."""
    as_student("mkdir", str(area.home / "WKSHP-X"))
    fifo = area.home / "WKSHP-X/notes.ipynb"
    as_student("mkfifo", str(fifo))
    reader = subprocess.Popen([SYSTEM_PYTHON, "-c", FIFO_READER, str(fifo)], user=STUDENT,
                              group=STUDENT, extra_groups=[], cwd="/", text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert reader.stdout.readline() == "ready\n"
    write_workshop(area)
    out, _ = reader.communicate("")
    assert out == "0\n"
    assert_workshop(area)


def test_a_file_that_gains_a_second_link_while_written_is_not_given_away(area, monkeypatch):
    """The student links root's new file while root writes it (possible with
    fs.protected_hardlinks off); simulated by linking it at that moment."""
    real_write = safefs._write_all

    def write_and_get_linked(fd, data):
        real_write(fd, data)
        # linkat(AT_SYMLINK_FOLLOW) on the fd's /proc link (dst_dir_fd makes it linkat)
        os.link(f"/proc/self/fd/{fd}", "grabbed", dst_dir_fd=area.fd, follow_symlinks=True)

    monkeypatch.setattr(safefs, "_write_all", write_and_get_linked)
    with pytest.raises(UnsafePath, match="second link") as refused:
        write_workshop(area)
    assert refused.value.path == f"{area.home}/WKSHP-X/notes.ipynb"
    st = (area.home / "grabbed").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)


@pytest.mark.parametrize("keep", [False, True])
def test_a_hard_link_to_a_root_file_keeps_the_root_file_as_it_was(area, keep):
    """Made by root in the home: what a student can do when fs.protected_hardlinks is off
    (not switched off here: the machine is shared with other tests)."""
    as_student("mkdir", str(area.home / "WKSHP-X"))
    os.link(area.targets / "rootfile", area.home / "WKSHP-X/notes.ipynb")
    before = area.snapshot(times=keep)
    counts = write_workshop(area, keep=keep)
    assert area.snapshot(times=keep) == before
    assert (area.targets / "rootfile").read_text() == "root data\n"
    if keep:
        assert counts.kept == 1
    else:
        assert_workshop(area)
        assert (area.targets / "rootfile").stat().st_nlink == 1


def test_a_folder_where_a_file_goes_is_emptied_without_following_its_links(area):
    folder = area.home / "WKSHP-X/notes.ipynb"
    as_student("mkdir", "-p", str(folder / "inner"))
    as_student("ln", "-s", str(area.targets / "rootdir"), str(folder / "inner/escape"))
    before = area.snapshot()
    write_workshop(area)
    assert area.snapshot() == before
    assert_workshop(area)


def test_a_folder_removed_while_root_writes_in_it_is_walked_to_again(area, monkeypatch):
    """The student empties and removes the folder root holds open between two files."""
    real_write = safefs._write_all
    folder = area.home / "WKSHP-X/x"

    def write_then_lose_folder(fd, data):
        real_write(fd, data)
        if (folder / "a").exists():
            (folder / "a").rename(area.home / "moved")
            folder.rmdir()

    monkeypatch.setattr(safefs, "_write_all", write_then_lose_folder)
    files = [("x/a", b"a", 0o644), ("x/b", b"b", 0o644)]
    counts = safefs.write_tree(area.fd, "WKSHP-X", files, STUDENT, STUDENT, False)
    assert (counts.written, counts.folders) == (2, 3)
    assert_students(folder / "b", 0o644, b"b")


def test_a_root_owned_folder_in_the_home_is_refused_with_its_path(area):
    (area.home / "WKSHP-X").mkdir()
    with pytest.raises(UnsafePath) as refused:
        write_workshop(area)
    assert refused.value.path == f"{area.home}/WKSHP-X" and "uid 0" in refused.value.reason
    assert names(area.home / "WKSHP-X") == []


def test_a_folder_on_another_mount_is_refused(area):
    folder = area.home / "WKSHP-X"
    as_student("mkdir", str(folder))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"uid={STUDENT},size=1m", "wodtf", str(folder)],
                   check=True)
    with pytest.raises(UnsafePath, match="another filesystem or mount"):
        write_workshop(area)
    assert names(folder) == []


def test_keep_existing_keeps_the_students_edit_and_a_redeploy_replaces_it(area):
    write_workshop(area)
    notes = area.home / "WKSHP-X/notes.ipynb"
    student_python("import sys; open(sys.argv[1], 'w').write('mine')", str(notes))
    assert write_workshop(area, keep=True) == safefs.TreeCounts(written=0, kept=2)
    assert notes.read_text() == "mine"
    as_student("ln", str(notes), str(area.home / "WKSHP-X/mine.ipynb"))
    assert write_workshop(area, keep=False).written == 2
    assert_workshop(area)  # notes.ipynb created anew: the old file was never written through
    assert (area.home / "WKSHP-X/mine.ipynb").read_text() == "mine"


@pytest.mark.parametrize("rel", ["../escape", "/etc/profile.d/x.sh", "a//b", "a/./b", "a/",
                                 "", "a/../../b", "nul\0byte"])
def test_paths_that_could_leave_the_folder_are_refused_before_anything_is_written(area, rel):
    with pytest.raises(InvalidPath):
        safefs.write_tree(area.fd, "WKSHP-X", [("ok.txt", b"", 0o644), (rel, b"x", 0o644)],
                          STUDENT, STUDENT, False)
    assert names(area.home) == []


def test_setuid_bits_are_never_handed_out(area):
    safefs.write_tree(area.fd, "WKSHP-X", [("tool", b"#!/bin/sh\n", 0o6755)], STUDENT,
                      STUDENT, False)
    assert_students(area.home / "WKSHP-X/tool", 0o755, b"#!/bin/sh\n")


def test_deep_paths_beyond_the_fds_held_are_written(area):
    deep = "/".join(f"d{i}" for i in range(safefs.MAX_OPEN_DIRS + 40))
    files = [(f"{deep}/leaf.txt", b"deep", 0o644), ("top.txt", b"top", 0o644),
             (f"{deep}/leaf2.txt", b"deep2", 0o644)]
    counts = safefs.write_tree(area.fd, "WKSHP-X", files, STUDENT, STUDENT, False)
    assert counts.written == 3 and counts.folders == safefs.MAX_OPEN_DIRS + 41
    assert (area.home / "WKSHP-X" / deep / "leaf2.txt").read_bytes() == b"deep2"


RACER = r"""
import os, sys
sub, target, stop, count = sys.argv[1:5]
swaps = n = 0
with open(count, "w") as f:
    f.write("0")
while not os.path.exists(stop):
    n += 1
    try:
        if os.path.isdir(sub) and not os.path.islink(sub):
            os.rename(sub, f"{sub}.{n}")
    except OSError:
        pass
    try:
        os.symlink(target, f"{sub}.link")
        os.replace(f"{sub}.link", sub)
        swaps += 1
    except OSError:
        try:
            os.unlink(f"{sub}.link")
        except OSError:
            pass
    if n % 3 == 0:
        try:
            os.unlink(sub)
        except OSError:
            pass
    if n % 5 == 0:
        try:
            os.rmdir(sub)  # root's fresh, still empty folder vanishes under it
        except OSError:
            pass
    if n % 100 == 0:
        with open(count, "w") as f:
            f.write(str(swaps))
with open(count, "w") as f:
    f.write(str(swaps))
"""


def test_a_link_swapped_in_during_deployments_never_reaches_the_target(area):
    """The student's process keeps replacing ~/WKSHP-X/sub by a link to the fake profile.d
    (and back) while root writes a tree of a few hundred files again and again; the files
    alternate between folders so that root enters `sub` anew for every other file."""
    files = []
    for i in range(150):
        files += [(f"sub/f{i}.sh", b"x" * i, 0o644), (f"other/f{i}.txt", b"y", 0o644)]
    safefs.write_tree(area.fd, "WKSHP-X", files, STUDENT, STUDENT, False)
    stop, count = area.home / "stop", area.home / "count"
    racer = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", RACER, str(area.home / "WKSHP-X/sub"),
         str(area.targets / "profile.d"), str(stop), str(count)],
        user=STUDENT, group=STUDENT, extra_groups=[], cwd="/")
    while racer.poll() is None and not count.exists():
        os.sched_yield()  # the racer is running once it wrote its count
    before = area.snapshot()
    interfered = runs = 0
    try:
        while runs < 5 or (not interfered and runs < 40):
            runs += 1
            try:
                # a folder made means root found `sub` gone or a link, and made a real one
                interfered += safefs.write_tree(area.fd, "WKSHP-X", files, STUDENT, STUDENT,
                                                False).folders
            except UnsafePath:
                interfered += 1
    finally:
        stop.touch()
        racer.wait(timeout=60)
    assert area.snapshot() == before
    assert int(count.read_text()) > 0 and interfered, (runs, count.read_text())
    safefs.write_tree(area.fd, "WKSHP-X", files, STUDENT, STUDENT, False)
    assert_students(area.home / "WKSHP-X/sub/f149.sh", 0o644, b"x" * 149)


# -- homes and ACLs ---------------------------------------------------------------------------

def test_a_new_home_is_created_for_its_seat_and_a_second_call_changes_nothing(area):
    assert safefs.ensure_home(str(area.homes), "wodtf2", ADMIN, ADMIN) == ["created"]
    st = (area.homes / "wodtf2").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ADMIN, ADMIN, 0o700)
    assert safefs.ensure_home(str(area.homes), "wodtf2", ADMIN, ADMIN) == []
    assert (area.homes / "wodtf2").stat().st_ctime_ns == st.st_ctime_ns


def test_an_existing_home_gets_owner_and_mode_fixed(area):
    os.chown(area.home, 0, 0)
    area.home.chmod(0o755)
    assert safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT) == ["owner", "mode"]
    assert_students(area.home, 0o700)


def test_a_symlink_in_place_of_a_home_is_refused_by_name(area):
    (area.homes / "wodtf2").symlink_to(area.targets / "rootdir")
    before = area.snapshot()
    for call in (lambda: safefs.open_home(str(area.homes / "wodtf2"), ADMIN),
                 lambda: safefs.ensure_home(str(area.homes), "wodtf2", ADMIN, ADMIN)):
        with pytest.raises(UnsafePath, match="symbolic link") as refused:
            call()
        assert refused.value.path == str(area.homes / "wodtf2")
    assert area.snapshot() == before


def test_a_home_path_with_dot_dot_is_refused(area):
    with pytest.raises(InvalidPath, match=r"'\.' or '\.\.'"):
        safefs.open_home(f"{area.homes}/../targets/rootdir", 0)


def test_a_home_owned_by_someone_else_is_not_opened(area):
    with pytest.raises(UnsafePath, match="not by the seat"):
        safefs.open_home(str(area.home), ADMIN)


def test_a_home_root_others_can_write_is_not_trusted(area):
    area.homes.chmod(0o1777)
    with pytest.raises(UnsafePath, match="writable by root only"):
        safefs.open_home(str(area.home), STUDENT)


def getfacl(path: Path) -> list[str]:
    done = subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True,
                          check=True)
    return [line for line in done.stdout.splitlines() if line]


def test_the_acl_gives_the_admin_rwx_and_the_home_still_reads_0700(area):
    changes = safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT, acl_user_uid=ADMIN)
    assert changes == ["acl"]
    assert getfacl(area.home) == ["user::rwx", "user:wodtf2:rwx", "group::---", "mask::rwx",
                                  "other::---"]
    assert stat.S_IMODE(area.home.stat().st_mode) == 0o770  # the mask, in stat's group bits
    assert safefs.home_mode(area.fd) == (0o700, {ADMIN: 7})
    ctime = area.home.stat().st_ctime_ns
    again = safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT, acl_user_uid=ADMIN)
    assert again == [] and area.home.stat().st_ctime_ns == ctime


def test_an_acl_setfacl_made_is_recognised_as_already_right(area):
    subprocess.run(["setfacl", "-m", "u:wodtf2:rwx", str(area.home)], check=True)
    assert safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT,
                              acl_user_uid=ADMIN) == []


def test_a_chmod_that_masked_the_acl_is_repaired_and_a_dropped_acl_removed(area):
    safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT, acl_user_uid=ADMIN)
    area.home.chmod(0o700)  # the mask becomes ---: the admin's entry no longer counts
    assert safefs.home_mode(area.fd) == (0o700, {ADMIN: 0})
    assert safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT,
                              acl_user_uid=ADMIN) == ["acl"]
    assert safefs.home_mode(area.fd) == (0o700, {ADMIN: 7})
    assert safefs.ensure_home(str(area.homes), "wodtf1", STUDENT, STUDENT) == ["acl", "mode"]
    assert getfacl(area.home) == ["user::rwx", "group::---", "other::---"]
    assert safefs.home_mode(area.fd) == (0o700, {})


def test_acl_encoding_round_trips_and_rejects_garbage():
    entries = [(safefs.ACL_USER_OBJ, 7, safefs.ACL_UNDEFINED_ID), (safefs.ACL_USER, 5, 1000)]
    assert safefs.decode_acl(safefs.encode_acl(entries)) == entries
    for bad in (b"", b"\x02\x00\x00\x00\x01", b"\x03\x00\x00\x00"):
        with pytest.raises(ValueError):
            safefs.decode_acl(bad)


# -- /etc/skel --------------------------------------------------------------------------------

@pytest.fixture
def skel(area: Area) -> list[safefs.SkelEntry]:
    """A stand-in /etc/skel with a nested folder, a link and a fifo (both skipped)."""
    top = area.root / "skel"
    (top / ".config/app").mkdir(parents=True)
    (top / ".config").chmod(0o700)
    (top / ".bashrc").write_text("# bashrc\n")
    (top / ".config/app/conf").write_text("x=1\n")
    (top / ".config/app/conf").chmod(0o600)
    (top / "link").symlink_to(area.targets / "rootfile")
    os.mkfifo(top / "fifo")
    return safefs.read_skel(str(top))


def test_read_skel_lists_folders_before_their_files_and_skips_links(skel):
    assert skel == [(".bashrc", 0o644, b"# bashrc\n"), (".config", 0o700, None),
                    (".config/app", 0o755, None), (".config/app/conf", 0o600, b"x=1\n")]


def test_fill_from_skel_gives_the_student_every_entry_and_counts_none_as_theirs(area, skel):
    counts = safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    assert (counts.written, counts.folders) == (2, 2)
    assert_students(area.home / ".bashrc", 0o644, b"# bashrc\n")
    assert_students(area.home / ".config", 0o700)
    assert_students(area.home / ".config/app/conf", 0o600, b"x=1\n")
    assert safefs.count_own_entries(area.fd, skel) == 0


def test_fill_from_skel_replaces_a_planted_folder_link_and_keeps_a_file_link(area, skel):
    as_student("ln", "-s", str(area.targets / "profile.d"), str(area.home / ".config"))
    as_student("ln", "-s", str(area.targets / "rootfile"), str(area.home / ".bashrc"))
    before = area.snapshot()
    counts = safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    assert area.snapshot() == before
    assert (counts.kept, counts.replaced) == (1, 1)
    assert_students(area.home / ".config/app/conf", 0o600, b"x=1\n")


def test_own_entries_are_what_the_student_made_or_changed(area, skel):
    safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    student_python("import sys; open(sys.argv[1], 'a').write('alias x=y')",
                   str(area.home / ".bashrc"))
    as_student("touch", str(area.home / ".config/app/extra"))
    as_student("mkfifo", str(area.home / "pipe"))
    as_student("ln", "-s", str(area.targets / "rootfile"), str(area.home / "link"))
    assert safefs.own_entries(area.fd, skel) == [".bashrc", ".config", "link", "pipe"]


def test_remove_home_removes_a_skel_only_home(area, skel):
    safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    assert safefs.remove_home(str(area.homes), "wodtf1", skel) is True
    assert not area.home.exists()
    assert safefs.remove_home(str(area.homes), "wodtf1", skel) is False


def test_remove_home_keeps_a_home_with_the_students_work_untouched(area, skel):
    safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    as_student("touch", str(area.home / "work.ipynb"))
    with pytest.raises(NotEmpty, match=r"holds 1 entries the student made \(work.ipynb\)"):
        safefs.remove_home(str(area.homes), "wodtf1", skel)
    assert names(area.home) == [".bashrc", ".config", "work.ipynb"]


def test_remove_home_refuses_a_link_in_place_of_the_home(area, skel):
    (area.homes / "wodtf2").symlink_to(area.targets / "profile.d")
    before = area.snapshot()
    with pytest.raises(UnsafePath, match="symbolic link"):
        safefs.remove_home(str(area.homes), "wodtf2", skel)
    assert area.snapshot() == before


def test_reset_home_empties_and_refills_from_skel(area, skel):
    safefs.fill_from_skel(area.fd, skel, STUDENT, STUDENT)
    as_student("mkdir", "-p", str(area.home / "WKSHP-X/sub"))
    as_student("ln", "-s", str(area.targets / "rootfile"), str(area.home / ".bashrc.new"))
    emptied, filled = safefs.reset_home(area.fd, skel, STUDENT, STUDENT)
    assert emptied.left == [] and filled.written == 2
    assert names(area.home) == [".bashrc", ".config"]


# -- empty_dir --------------------------------------------------------------------------------

def test_empty_dir_removes_links_without_touching_their_targets(area):
    home = str(area.home)
    as_student("mkdir", "-p", f"{home}/a/b/c", f"{home}/WKSHP-X")
    as_student("ln", "-s", str(area.targets / "profile.d"), f"{home}/profile")
    as_student("ln", "-s", str(area.targets / "rootfile"), f"{home}/a/b/file")
    as_student("ln", "-s", str(area.targets / "rootdir"), f"{home}/a/b/c/dir")
    as_student("mkfifo", f"{home}/WKSHP-X/pipe")
    as_student("touch", f"{home}/a/plain", f"{home}/.hidden")
    os.link(area.targets / "rootfile", area.home / "hardlink")  # see the hard link test
    before = area.snapshot(times=False)
    result = safefs.empty_dir(area.fd)
    assert result == safefs.EmptyResult(removed=11, left=[])
    assert names(area.home) == []
    assert area.snapshot(times=False) == before


def test_empty_dir_handles_a_tree_deeper_than_recursion_and_fd_limits(area):
    depth = 1500
    student_python("import os, sys\nos.chdir(sys.argv[1])\nfor _ in range(int(sys.argv[2])):\n"
                   "    os.mkdir('d'); os.chdir('d'); open('f', 'w').close()\n",
                   str(area.home), str(depth))
    result = safefs.empty_dir(area.fd)
    assert result == safefs.EmptyResult(removed=2 * depth, left=[])
    assert names(area.home) == []


def test_empty_dir_leaves_mount_points_alone_and_reports_them(area):
    home = area.home
    as_student("mkdir", "-p", str(home / "tmpfs"), str(home / "a/bound"), str(home / "gone"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "wodtf", str(home / "tmpfs")],
                   check=True)
    (home / "tmpfs/kept").write_text("on the tmpfs\n")
    # a bind mount of the same filesystem: same st_dev, only the mount id tells it apart
    subprocess.run(["mount", "--bind", str(area.targets / "rootdir"), str(home / "a/bound")],
                   check=True)
    before = area.snapshot()
    result = safefs.empty_dir(area.fd)
    assert sorted(result.left) == [
        ("a", "not emptied: it holds what was left alone or kept gaining entries"),
        ("a/bound", "a mount point: left alone"), ("tmpfs", "a mount point: left alone")]
    assert result.removed == 1
    assert area.snapshot() == before
    assert (home / "tmpfs/kept").read_text() == "on the tmpfs\n"


def test_empty_dir_on_a_vanished_entry_goes_on(area, monkeypatch):
    """An entry listed but gone before its turn (the student deleted it meanwhile)."""
    as_student("touch", str(area.home / "one"), str(area.home / "two"))
    as_student("mkdir", str(area.home / "dir"))
    real_scan = safefs._scan

    def scan_then_vanish(fd, skip=()):
        found = real_scan(fd, skip)
        for name in ("two", "dir"):
            target = area.home / name
            if target.is_dir():
                target.rmdir()
            elif target.exists():
                target.unlink()
        return found

    monkeypatch.setattr(safefs, "_scan", scan_then_vanish)
    assert safefs.empty_dir(area.fd) == safefs.EmptyResult(removed=1, left=[])


def test_nothing_outside_the_standard_library_is_imported():
    """The module is shipped to hosts: importing it loads only the standard library."""
    script = ("import sys; sys.path.insert(0, '.'); before = set(sys.modules); "
              "import wodsync.agent.safefs; "
              "print(sorted(m.split('.')[0] for m in set(sys.modules) - before))")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, check=True)
    loaded = set(eval(done.stdout))  # a printed list of module names
    assert loaded - sys.stdlib_module_names == {"wodsync"}
