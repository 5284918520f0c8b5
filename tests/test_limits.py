"""Per-workshop limits enforced by the kernel, for real: cgroup v1 on this machine (its memory,
cpu, cpuacct and pids hierarchies are writable), real accounts, real processes.

A seat is set up by the agent's own `seat_create` (no hub: the seat's process is started here
the way the hub's spawner starts a server — as root it joins the `cgroup.procs` files of the
agent's record, then becomes the student; the last test runs the hub's real spawner).
Accounts `wodtl1..4` (uids 60401-60404); every cgroup made under `wodsync/WKSHP-Wodtl*` is
removed afterwards, its processes killed, even when a test fails.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wodsync.agent import limits, seats
from wodsync.agent.host import HostSide
from wodsync.agent.limits import backends
from wodsync.catalog import validate
from wodsync.catalog.models import Hub
from wodsync.engine import render_system
from wodsync.engine.desired import DesiredContext
from wodsync.secrets import Placeholders

from helpers import remove_test_accounts, remove_test_cgroups, until
from hubs import HUB_PREFIX, hub_prefix_lock

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or backends.detect(limits.CGROUP_ROOT) != "v1",
    reason="needs root and writable cgroup v1 hierarchies (memory, cpu, cpuacct, pids)")

PREFIX, UID_BASE = "wodtl", 60400
HOMES = Path("/home/wodsync-test-limits")
ROOT = limits.CGROUP_ROOT
MiB = 1 << 20


def _taken() -> list[str]:
    return [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall()
            if UID_BASE < e.pw_uid <= UID_BASE + 50 and not e.pw_name.startswith(PREFIX)]


def _remove_test_cgroups() -> None:
    """Every cgroup of the test seats, in every hierarchy: processes killed, removed."""
    remove_test_cgroups(PREFIX)


@pytest.fixture(scope="module")
def accounts() -> Iterator[list[pwd.struct_passwd]]:
    remove_test_accounts(PREFIX, UID_BASE)
    _remove_test_cgroups()
    if _taken():
        pytest.skip(f"uids {UID_BASE + 1}-{UID_BASE + 50} are taken: {', '.join(_taken())}")
    HOMES.mkdir(mode=0o755, exist_ok=True)
    try:
        for n in range(1, 5):
            # The group's gid named too: above GID_MAX useradd -U would take the next free gid
            # below it — another lab's range (the systemd hub lab's, 54000-54060).
            subprocess.run(["groupadd", "-g", str(UID_BASE + n), f"{PREFIX}{n}"],
                           check=True, capture_output=True)
            subprocess.run(["useradd", "-m", "-d", f"{HOMES}/{PREFIX}{n}", "-s", "/bin/bash",
                            "-u", str(UID_BASE + n), "-g", f"{PREFIX}{n}", f"{PREFIX}{n}"],
                           check=True, capture_output=True)
        yield [pwd.getpwnam(f"{PREFIX}{n}") for n in range(1, 5)]
    finally:
        _remove_test_cgroups()
        remove_test_accounts(PREFIX, UID_BASE)
        shutil.rmtree(HOMES, ignore_errors=True)


class Lab:
    """Seats of the test accounts given to sessions by the agent's seat operations, and the
    processes started in them; whatever a test leaves is released at its end."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = str(state_dir)
        self.used: dict[str, dict[str, Any]] = {}
        self.procs: list[subprocess.Popen[str]] = []

    def payload(self, n: int, workshop: str, seat_limits: limits.SeatLimits | None,
                ) -> dict[str, Any]:
        user = f"{PREFIX}{n}"
        return {"state_dir": self.state_dir, "owner": "host test", "user": user,
                "uid": UID_BASE + n, "session": f"s-{user}", "workshop": workshop,
                "hub": None, "hooks": {}, "env": {}, "password": "wodtl-" + os.urandom(6).hex(),
                "files": [], "limits": seat_limits}

    def create(self, n: int, workshop: str,
               seat_limits: limits.SeatLimits | None) -> dict[str, Any]:
        payload = self.payload(n, workshop, seat_limits)
        answer = seats.create({"state_dir": self.state_dir, "owner": "host test",
                               "seats": [payload]}, HostSide(self.state_dir))["seats"][0]
        assert answer["ok"], answer
        self.used[payload["user"]] = payload
        return answer

    def purge(self, n: int) -> dict[str, Any]:
        payload = self.used.pop(f"{PREFIX}{n}")
        return dict(seats.purge(payload, HostSide(self.state_dir)))

    def start(self, n: int, code: str) -> subprocess.Popen[str]:
        """`python3 -c code` as seat n's student, in the seat's cgroup — joined as the hub's
        spawner does, from the agent's record, before dropping to the user."""
        user = pwd.getpwnam(f"{PREFIX}{n}")
        record = Path(self.state_dir, "limits", f"{user.pw_name}.json")
        procs = json.loads(record.read_text())["procs"]

        def preexec() -> None:
            for path in procs:
                Path(path).write_text(str(os.getpid()))
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        proc = subprocess.Popen(["/usr/bin/python3", "-c", code], preexec_fn=preexec,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd="/")
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for user in list(self.used):
            self.purge(int(user[len(PREFIX):]))


@pytest.fixture
def lab(accounts, tmp_path) -> Iterator[Lab]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    lab = Lab(state)
    try:
        yield lab
    finally:
        lab.close()
        _remove_test_cgroups()


def cgroup(controller: str, workshop: str, n: int) -> Path:
    return Path(ROOT, controller, backends.TOP, workshop, f"{PREFIX}{n}")


def oom_kills(folder: Path) -> int:
    fields = dict(line.split() for line in (folder / "memory.oom_control").read_text()
                  .splitlines())
    return int(fields.get("oom_kill", 0))


HOG = ("import time\nchunks = []\nfor i in range(256):\n"
       "    chunks.append(b'x' * (1 << 20))\n    time.sleep(0.002)\nprint('survived', flush=True)")
SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(120)"


def test_a_seat_allocating_twice_its_memory_max_is_killed_inside_its_cgroup(lab):
    seat_limits: limits.SeatLimits = {"memory_high": 96 * MiB, "memory_max": 128 * MiB}
    lab.create(1, "WKSHP-WodtlMem", seat_limits)
    lab.create(2, "WKSHP-WodtlMem", seat_limits)
    mine, neighbour = (cgroup("memory", "WKSHP-WodtlMem", n) for n in (1, 2))
    assert (mine / "memory.limit_in_bytes").read_text().strip() == str(128 * MiB)
    assert (mine / "memory.soft_limit_in_bytes").read_text().strip() == str(96 * MiB)
    quiet = lab.start(2, SLEEPER)
    assert quiet.stdout is not None and quiet.stdout.readline().strip() == "up"
    hog = lab.start(1, HOG.replace("256", str(2 * 128)))  # 2 × memory_max
    out, _ = hog.communicate(timeout=60)
    assert hog.returncode == -signal.SIGKILL and "survived" not in out
    assert oom_kills(mine) >= 1  # the kernel's OOM killer ran in the seat's cgroup
    assert quiet.poll() is None, "the neighbour seat's process was killed"
    assert oom_kills(neighbour) == 0
    assert oom_kills(mine.parent) == 0  # the workshop's folder itself never ran out


def test_a_fork_bomb_stops_at_tasks_and_the_next_create_completes(lab):
    lab.create(1, "WKSHP-WodtlBomb", {"tasks": 24})
    bomb = lab.start(1, (
        "import os, time\nborn = refused = 0\n"
        "for i in range(200):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        refused += 1\n"
        "        continue\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    born += 1\n"
        "print(born, refused, flush=True)\ntime.sleep(60)"))
    assert bomb.stdout is not None
    born, refused = map(int, bomb.stdout.readline().split())
    pids = cgroup("pids", "WKSHP-WodtlBomb", 1)
    assert born <= 23 and refused >= 200 - 23, (born, refused)
    assert int((pids / "pids.current").read_text()) <= 24
    assert int((pids / "pids.events").read_text().split()[1]) > 0  # the "max" events
    started = time.monotonic()
    answer = lab.create(2, "WKSHP-WodtlBomb", {"tasks": 24})
    print(f"seat_create beside the stopped fork bomb: {time.monotonic() - started:.2f} s "
          f"(limits step {answer['timings']['limits']:.3f} s)")
    released = lab.purge(1)
    assert released["ok"], released
    assert not pids.exists()
    until(lambda: bomb.poll() is not None, "the bomb outlived its seat's release", 10)


def test_two_seats_spinning_with_half_a_core_each_get_about_half_a_core(lab):
    for n in (1, 2):
        lab.create(n, "WKSHP-WodtlCpu", {"cpu": 0.5})
    assert (cgroup("cpu", "WKSHP-WodtlCpu", 1) / "cpu.cfs_quota_us").read_text().strip() \
        == "50000"
    spinners = [lab.start(n, "print('up', flush=True)\nwhile True:\n    pass") for n in (1, 2)]
    for proc in spinners:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    # A third seat spinning under a cap it cannot reach (2 cores), on the same footing as the
    # two (a cgroup of its own beside theirs), says what one seat can get on this machine now:
    # CI runs other tests beside this one.
    lab.create(3, "WKSHP-WodtlFree", {"cpu": 2.0})
    free_seat = lab.start(3, "print('up', flush=True)\nwhile True:\n    pass")
    assert free_seat.stdout is not None and free_seat.stdout.readline().strip() == "up"
    usage = [cgroup("cpuacct", "WKSHP-WodtlCpu", n) / "cpuacct.usage" for n in (1, 2)]
    usage.append(cgroup("cpuacct", "WKSHP-WodtlFree", 3) / "cpuacct.usage")
    before, start = [int(u.read_text()) for u in usage], time.monotonic()
    time.sleep(3)
    after, seconds = [int(u.read_text()) for u in usage], time.monotonic() - start
    free_seat.kill()
    free_seat.wait()
    assert lab.purge(3)["ok"]
    *cores, free = [(b - a) / 1e9 / seconds for a, b in zip(before, after, strict=True)]
    print(f"cores used by each seat with cpu: 0.5: {cores[0]:.2f}, {cores[1]:.2f}; "
          f"by a seat capped at 2 cores beside them: {free:.2f}")
    assert all(c <= 0.6 for c in cores), f"the cap holds whatever the load: {cores}"
    if free >= 0.8:  # the machine had room: each capped seat got about its half
        assert all(c >= 0.35 for c in cores), (cores, free)
    else:  # a busy machine: each capped seat got no more than a free process did, nor its cap
        assert all(c <= free + 0.1 for c in cores), (cores, free)


def test_a_seat_given_to_another_workshop_moves_and_its_release_removes_everything(lab):
    lab.create(3, "WKSHP-WodtlOne", {"memory_max": 256 * MiB, "tasks": 100})
    lab.used.pop(f"{PREFIX}3")
    lab.create(3, "WKSHP-WodtlTwo", {"memory_max": 64 * MiB, "cpu": 1.5})
    assert not cgroup("memory", "WKSHP-WodtlOne", 3).exists()
    assert (cgroup("memory", "WKSHP-WodtlTwo", 3) / "memory.limit_in_bytes").read_text() \
        .strip() == str(64 * MiB)
    assert (cgroup("pids", "WKSHP-WodtlTwo", 3) / "pids.max").read_text().strip() == "max"
    assert (cgroup("cpu", "WKSHP-WodtlTwo", 3) / "cpu.cfs_quota_us").read_text().strip() \
        == "150000"
    record = json.loads(Path(lab.state_dir, "limits", f"{PREFIX}3.json").read_text())
    assert record["procs"] == [str(cgroup(c, "WKSHP-WodtlTwo", 3) / "cgroup.procs")
                               for c in backends.V1_CONTROLLERS]
    assert Path(lab.state_dir, "limits").stat().st_mode & 0o777 == 0o700
    sleeper = lab.start(3, SLEEPER)
    assert lab.purge(3)["ok"]
    until(lambda: sleeper.poll() is not None, "the seat's process outlived its release", 10)
    for controller in backends.V1_CONTROLLERS:
        assert not cgroup(controller, "WKSHP-WodtlTwo", 3).parent.exists()
    assert not Path(lab.state_dir, "limits", f"{PREFIX}3.json").exists()


def test_a_seat_without_limits_has_no_cgroup_and_its_disk_limit_is_a_note_here(lab):
    lab.create(4, "WKSHP-WodtlNone", None)
    assert not cgroup("memory", "WKSHP-WodtlNone", 4).exists()
    assert not Path(lab.state_dir, "limits", f"{PREFIX}4.json").exists()
    lab.used.pop(f"{PREFIX}4")
    answer = lab.create(4, "WKSHP-WodtlDisk", {"disk": 2 << 30, "tasks": 50})
    mount, fstype, options = limits.quota.filesystem(str(HOMES))
    if options & set(limits.quota.QUOTA_OPTIONS):
        pytest.skip(f"{HOMES} is on a filesystem with quotas ({mount}): the note is not due")
    assert f"disk: 2G for WKSHP-WodtlDisk: the filesystem of " \
           f"{HOMES}/{PREFIX}4 ({fstype} at {mount}) has no quotas" in answer["notes"]



# ---- the hub's spawner -----------------------------------------------------------------------

SPAWN = """\
import subprocess, sys
from traitlets.config import Config
config, user = sys.argv[1], sys.argv[2]
space = {"get_config": Config, "__file__": config}
exec(compile(open(config).read(), config, "exec"), space)
spawner = space["c"].JupyterHub.spawner_class
preexec = spawner.__new__(spawner).make_preexec_fn(user)
server = subprocess.Popen(["/bin/sleep", "60"], preexec_fn=preexec)
print(server.pid, flush=True)
server.wait()
"""


def _hub_python() -> str:
    """The hub environment's python (as the hub tests' apply makes it: JupyterHub installed
    at hubs.HUB_PREFIX), made here when this module runs first."""
    python = f"{HUB_PREFIX}/bin/python"
    with hub_prefix_lock():
        found = subprocess.run([python, "-c", "import jupyterhub"], capture_output=True,
                               check=False) if Path(python).exists() else None
        if found is None or found.returncode != 0:
            subprocess.run(["/usr/bin/python3", "-m", "venv", HUB_PREFIX], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q",
                            f"jupyterhub=={Hub().version}"], check=True)
    return python


def test_the_hub_s_spawner_starts_the_server_inside_the_seat_s_cgroup(lab, repo, tmp_path):
    """The real spawner class of the rendered hub configuration (JupyterHub's own
    LocalProcessSpawner beneath it), its preexec function starting a process as the hub
    starts a server: it joins the seat's cgroups from the agent's record, then becomes the
    student. (A whole hub is not started: the test seats' uids are outside the range a
    catalog pool may have.)"""
    repo.replace("hosts/hub-emea.yaml", "pool: student\n",
                 f"pool: student\nstate_dir: {lab.state_dir}\n")
    repo.replace("hosts/hub-emea.yaml", "  token: {secret: HUB_EMEA_TOKEN}\n",
                 f"  token: {{secret: HUB_EMEA_TOKEN}}\n  data_dir: {tmp_path}/hubdata\n")
    catalog, found = validate(repo.root)
    assert not [d for d in found if d.is_error]
    rendered = render_system.system_files(DesiredContext(catalog, "hub-emea", Placeholders()))
    config = tmp_path / "jupyterhub_config.py"
    config.write_bytes(rendered["/etc/jupyterhub/jupyterhub_config.py"].data)
    lab.create(1, "WKSHP-WodtlHub", {"memory_max": 768 * MiB, "tasks": 64})
    hub = subprocess.Popen([_hub_python(), "-c", SPAWN, str(config), f"{PREFIX}1"],
                           stdout=subprocess.PIPE, text=True)
    lab.procs.append(hub)
    assert hub.stdout is not None
    server = int(hub.stdout.readline())
    assert Path(f"/proc/{server}/status").read_text().count(f"\t{UID_BASE + 1}\t") >= 1
    where = f"/{backends.TOP}/WKSHP-WodtlHub/{PREFIX}1"
    joined = dict(line.split(":", 2)[1:] for line in
                  Path(f"/proc/{server}/cgroup").read_text().splitlines())
    assert {c: joined[c] for c in backends.V1_CONTROLLERS} == \
        dict.fromkeys(backends.V1_CONTROLLERS, where)
    assert os.getpriority(os.PRIO_PROCESS, server) == 10  # hub.server_nice still applies
    assert lab.purge(1)["ok"]
    until(lambda: hub.poll() is not None, "the server outlived its seat's release", 10)
    assert not cgroup("memory", "WKSHP-WodtlHub", 1).exists()

