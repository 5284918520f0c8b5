"""The seat guard's round on the host (`guard_round`): one read of /proc for the pool's seats,
the catalog's rules applied to it, the host's own actions done, the rest reported.

Why one operation per round: a host with 2000 seats must be checked every minute without the
check costing a core, so the controller sends the rules once and the host answers with what it
found — one round trip, one pass over /proc, the seats' records read once.

What the round reads, per process of a pool uid: its command line, its CPU ticks and its start
time (`/proc/<pid>/stat`). A seat's CPU share needs the previous round's ticks: they are kept on
the host, in a root-only state file (`<state_dir>/guard/state.json`), with when each seat went
over a CPU rule (a rule counts minutes in a row) or went quiet (idle servers), and which findings
were already reported (a `report` rule records a process once, not every round).

What the host does itself: `kill` (by pid, only after checking that the pid still names the same
process — same uid, same start time — through a pidfd where the kernel has them, so a recycled
pid is never signalled) and `stop_server` (the hub is on this host). `purge` and `quarantine`
need the controller's store and are its job (`wodsync.guard`). A dry run (`dry_run`) does
nothing and reports everything.

Idle servers are stopped for the right reasons only: no activity seen by the hub for the idle
timeout, the seat's CPU low as long, and no kernel busy — asked of the server itself (its
`/api/kernels`, through the hub's proxy with the service token) only when the rest says idle,
so a kernel busy in a silent `time.sleep` keeps its server.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from wodsync.agent import hostlock, hubapi, records
from wodsync.agent.host import HostSide
from wodsync.agent.protocol import (
    GuardFinding,
    GuardIdle,
    GuardPool,
    GuardRoundAnswer,
    GuardRoundRequest,
    GuardRule,
    Hub,
)

STATE_DIR = "guard"
STATE_FILE = "state.json"
HZ = os.sysconf("SC_CLK_TCK")
KERNEL_RE = re.compile(r"ipykernel_launcher|-m ipykernel\b")
CMDLINE_CAP = 1000  # characters of a command line kept as evidence
HUB_TIMEOUT = 5.0
STOP_LOCK_WAIT = 1.0  # seconds a server stop waits for the host (an apply holds it meanwhile)


class Proc(NamedTuple):
    """One process of a seat, as the round read it."""

    pid: int
    uid: int
    user: str
    start: int        # clock ticks after boot (`starttime`): with the pid, the process's identity
    ticks: int        # user + system CPU ticks so far
    cmdline: str


class Sample(NamedTuple):
    """This round's reading, and the CPU each process used since the last one (None: unknown,
    the first round or a process the last round did not see start)."""

    procs: list[Proc]
    used: dict[int, int | None]     # pid → ticks since the last round
    uptime: float
    elapsed: float | None           # seconds since the last round


# ---- reading /proc ---------------------------------------------------------------------------

def _uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as f:
        return float(f.read().split()[0])


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, start ticks, CPU ticks) of a process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()  # after the command name, which may hold ") "
    return fields[0].decode(), int(fields[19]), int(fields[11]) + int(fields[12])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(CMDLINE_CAP * 4)
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").strip().decode(errors="replace")[:CMDLINE_CAP]


def scan(pool: GuardPool) -> list[Proc]:
    """Every live process whose uid is a seat of the pool (zombies run nothing: left out). The
    owner of `/proc/<pid>` is the process's uid: one stat per process, and only the pool's
    processes are read further."""
    low, high = pool["uid_base"] + pool["first"], pool["uid_base"] + pool["last"]
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            uid = entry.stat().st_uid
        except OSError:
            continue
        if not low <= uid <= high:
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        user = f"{pool['prefix']}{uid - pool['uid_base']}"
        found.append(Proc(pid, uid, user, stat[1], stat[2], _cmdline(pid)))
    return found


# ---- the state kept between rounds -----------------------------------------------------------

def _state_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_DIR, STATE_FILE)


def load_state(state_dir: str) -> dict[str, Any]:
    """The last round's state; empty when there is none or it cannot be read (a first round)."""
    try:
        with open(_state_path(state_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state_dir: str, state: dict[str, Any]) -> None:
    """Replace the state atomically, in a folder only root reads."""
    folder = os.path.join(state_dir, STATE_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".state-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, _state_path(state_dir))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sample(procs: list[Proc], state: dict[str, Any], uptime: float) -> Sample:
    """The CPU ticks each process used since the last round: from its last reading when the
    same process (pid and start) was seen, from its start when it started since."""
    before: dict[str, list[int]] = state.get("ticks") or {}
    last = state.get("uptime")
    if not isinstance(last, (int, float)) or last >= uptime:
        return Sample(procs, {p.pid: None for p in procs}, uptime, None)
    used: dict[int, int | None] = {}
    for p in procs:
        seen = before.get(str(p.pid))
        if seen and seen[0] == p.start:
            used[p.pid] = max(0, p.ticks - seen[1])
        elif p.start / HZ >= last:
            used[p.pid] = p.ticks
        else:
            used[p.pid] = None
    return Sample(procs, used, uptime, uptime - last)


def _percent(s: Sample, pids: list[int]) -> float | None:
    """CPU of these processes together since the last round, in percent of one core."""
    if s.elapsed is None or not s.elapsed:
        return None
    known = [t for t in (s.used[p] for p in pids) if t is not None]
    if not known:
        return None
    return round(sum(known) / HZ / s.elapsed * 100, 1)


# ---- killing by pid, safely ------------------------------------------------------------------

def kill(proc: Proc) -> str:
    """SIGKILL `proc` if its pid still names it: `killed`, or `gone` (it ended, or the pid is
    another process's now). A pidfd, opened before the check, pins the process checked: the
    signal cannot reach a process that took the pid after it."""
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
    try:
        stat = _stat(proc.pid)
        uid = os.stat(f"/proc/{proc.pid}").st_uid if stat else None
        if stat is None or stat[1] != proc.start or uid != proc.uid:
            return "gone"
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        return "killed"
    except (ProcessLookupError, FileNotFoundError):
        return "gone"
    finally:
        if pidfd is not None:
            os.close(pidfd)


# ---- the rules -------------------------------------------------------------------------------

class Round:
    """One round's findings, with the state the next round needs."""

    def __init__(self, req: GuardRoundRequest, s: Sample, seats: dict[str, records.Record],
                 state: dict[str, Any], rejected: dict[int, int] | None = None) -> None:
        self.req, self.s, self.seats = req, s, seats
        self.rejected = rejected or {}  # uid → packets its egress rules refused so far
        self.rejected_before: dict[str, int] = state.get("rejected") or {}
        self.seen_before = set(state.get("seen") or [])
        self.hot_before: dict[str, float] = state.get("hot") or {}
        self.quiet_before: dict[str, float] = state.get("quiet") or {}
        self.seen: set[str] = set()
        self.hot: dict[str, float] = {}
        self.quiet: dict[str, float] = {}
        self.findings: list[GuardFinding] = []
        self.targets: list[list[Proc]] = []   # the processes of each finding, by index
        self.errors: list[str] = []

    def add(self, key: str, rule: GuardRule, procs: list[Proc], cpu: float | None = None,
            over: float | None = None) -> None:
        """A finding of `rule` about `procs` (one seat's), once per `key` while it lasts."""
        self.seen.add(key)
        if key in self.seen_before and rule.get("action") != "kill":
            return
        first = procs[0]
        age = round(self.s.uptime - first.start / HZ, 1)
        finding: GuardFinding = {
            "rule": rule["name"], "type": rule["type"], "action": rule.get("action", "report"),
            "user": first.user, "uid": first.uid,
            "session": (self.seats.get(first.user) or {}).get("session", ""),
            "pid": first.pid, "cmdline": first.cmdline, "age": age, "done": ""}
        if cpu is not None:
            finding["cpu"] = cpu
        if over is not None:
            finding["over"] = over
        self.findings.append(finding)
        self.targets.append(procs)

    def banned(self, rule: GuardRule) -> None:
        patterns = [re.compile(p) for p in rule.get("patterns") or []]
        for p in self.s.procs:
            if any(rx.search(p.cmdline) for rx in patterns):
                self.add(f"{rule['name']}:{p.pid}:{p.start}", rule, [p])

    def free_seat(self, rule: GuardRule) -> None:
        for p in self.s.procs:
            if p.user not in self.seats:
                self.add(f"{rule['name']}:{p.pid}:{p.start}", rule, [p])

    def kernel_age(self, rule: GuardRule) -> None:
        limit = float(rule.get("hours", 4.0)) * 3600
        for p in self.s.procs:
            if KERNEL_RE.search(p.cmdline) and self.s.uptime - p.start / HZ > limit:
                self.add(f"{rule['name']}:{p.pid}:{p.start}", rule, [p])

    def cpu(self, rule: GuardRule) -> None:
        """A seat over `percent` since the round it first was, for `minutes`: the heaviest
        process is the evidence, every counted process that ran is the target."""
        allow = [re.compile(p) for p in rule.get("allow") or []]
        for uid, procs in _by_uid(self.s.procs).items():
            counted = [p for p in procs if not any(rx.search(p.cmdline) for rx in allow)]
            pct = _percent(self.s, [p.pid for p in counted]) if counted else None
            key = f"{rule['name']}:{uid}"
            if pct is None or pct < float(rule.get("percent", 98.0)):
                continue
            since = self.hot_before.get(key, self.s.uptime - (self.s.elapsed or 0))
            self.hot[key] = since
            over = self.s.uptime - since
            if over + 1e-6 < float(rule.get("minutes", 5.0)) * 60:
                continue
            running = sorted((p for p in counted if self.s.used.get(p.pid)),
                             key=lambda p: -(self.s.used.get(p.pid) or 0)) or counted
            self.add(f"{key}:{since}", rule, running, cpu=pct, over=round(over, 1))

    def egress(self, rule: GuardRule) -> None:
        """A seat whose refused packets grew since the last round tried to reach what its
        workshop's allow-list does not name. The count restarts at 0 when the seat's rules
        are set (a CREATE), so a smaller count is all new."""
        by_uid = _by_uid(self.s.procs)
        for uid, count in sorted(self.rejected.items()):
            before = self.rejected_before.get(str(uid), 0)
            grown = count - before if count >= before else count
            if grown <= 0:
                continue
            procs = by_uid.get(uid) or [Proc(0, uid, _user_of(uid), 0, 0, "")]
            self.add(f"{rule['name']}:{uid}:{count}", rule, procs)
            self.findings[-1]["rejected"] = grown
            if procs[0].pid == 0:  # nothing running to blame (or kill): the seat's count
                self.findings[-1]["age"] = 0.0
                self.targets[-1] = []

    def state(self) -> dict[str, Any]:
        return {"uptime": self.s.uptime,
                "ticks": {str(p.pid): [p.start, p.ticks] for p in self.s.procs},
                "hot": self.hot, "quiet": self.quiet, "seen": sorted(self.seen),
                "rejected": {str(uid): n for uid, n in self.rejected.items()}}


def _user_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _by_uid(procs: list[Proc]) -> dict[int, list[Proc]]:
    found: dict[int, list[Proc]] = {}
    for p in procs:
        found.setdefault(p.uid, []).append(p)
    return found


CHECKS = {"banned": Round.banned, "free_seat": Round.free_seat, "kernel_age": Round.kernel_age,
          "cpu": Round.cpu, "egress": Round.egress}


# ---- the host's own actions -------------------------------------------------------------------

def act(r: Round, hub: Hub | None) -> None:
    """`kill` and `stop_server`, done here; anything else is the controller's (or, in a dry
    run, nobody's)."""
    for n, finding in enumerate(r.findings):
        procs = r.targets[n]  # the processes of the finding (zip(strict=) is Python 3.10)
        action = finding["action"]
        if r.req.get("dry_run") or action == "report":
            finding["done"] = "reported"
        elif action == "kill":
            outcomes = {kill(p) for p in procs}
            finding["done"] = "killed" if "killed" in outcomes else "gone"
        elif action == "stop_server":
            _stop(finding, hub, r.req["state_dir"])


def _stop(finding: GuardFinding, hub: Hub | None, state_dir: str) -> None:
    """The seat's server stopped, under the seat's lock and only while the seat is still the
    session's the round judged (a seat that changed hands meanwhile is left alone); while an
    apply holds the host, not this round."""
    if not hub:
        finding["error"] = "no hub on this host: no server to stop"
        return
    user = finding["user"]
    try:
        with records.locked(state_dir, [user], timeout=STOP_LOCK_WAIT):
            if (records.read(state_dir, user) or {}).get("session", "") != finding["session"]:
                finding["done"] = "gone"
                return
            hubapi.request(hub["api"], hub["token"], "DELETE",
                           f"/users/{hubapi.quote(user)}/server", timeout=HUB_TIMEOUT)
        finding["done"] = "stopped"
    except hostlock.HostBusy as exc:
        finding["error"] = f"not stopped this round: {exc}"
    except hubapi.HubApiError as exc:
        if exc.status in (400, 404):  # not running (any more)
            finding["done"] = "gone"
        else:
            finding["error"] = str(exc)
    except OSError as exc:
        finding["error"] = f"the hub did not answer: {exc}"


# ---- idle servers ----------------------------------------------------------------------------

def _when(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _active_servers(hub: Hub, pool: GuardPool) -> Iterator[tuple[str, dict[str, Any], float]]:
    """(user, server, last activity) of every ready default server of the pool's seats."""
    page = hubapi.request(hub["api"], hub["token"], "GET", "/users?state=active&limit=10000",
                          accept=hubapi.PAGINATION, timeout=HUB_TIMEOUT)
    items = page.get("items", []) if isinstance(page, dict) else page
    prefix = pool["prefix"]
    for user in items:
        name = user.get("name", "")
        server = (user.get("servers") or {}).get("")
        if not name.startswith(prefix) or not server or not server.get("ready"):
            continue
        last = _when(server.get("last_activity")) or _when(user.get("last_activity"))
        if last is not None:
            yield name, server, last


def _kernels_quiet(hub: Hub, idle: GuardIdle, server: dict[str, Any]) -> bool:
    """No kernel busy nor active within the timeout, asked of the server itself."""
    url = idle["proxy"].rstrip("/") + server.get("url", "/") + "api/kernels"
    kernels = hubapi.request(url, hub["token"], "GET", "", timeout=HUB_TIMEOUT)
    now = time.time()
    for k in kernels or []:
        if k.get("execution_state") == "busy":
            return False
        seen = _when(k.get("last_activity"))
        if seen is not None and now - seen < idle["timeout"]:
            return False
    return True


def idle_servers(r: Round, hub: Hub, idle: GuardIdle, pool: GuardPool) -> None:
    """A server idle for the timeout — by the hub, by CPU and by its kernels — is stopped.
    A hot seat's (its record's state `hot`) is idle by design: it waits, started ahead of its
    event, for the participant a CREATE gives it to, who would otherwise wait for a spawn."""
    by_uid = _by_uid(r.s.procs)
    for uid_key, since in r.quiet_before.items():
        r.quiet.setdefault(uid_key, since)
    for uid, procs in by_uid.items():
        pct = _percent(r.s, [p.pid for p in procs])
        if pct is None or pct > idle["cpu_percent"]:
            r.quiet[str(uid)] = r.s.uptime
    now = time.time()
    for name, server, last in _active_servers(hub, pool):
        tail = name[len(pool["prefix"]):]
        if not tail.isdigit() or (r.seats.get(name) or {}).get("state") == "hot":
            continue
        uid = pool["uid_base"] + int(tail)
        quiet = r.s.uptime - r.quiet.setdefault(str(uid), r.s.uptime)
        if now - last < idle["timeout"] or quiet < idle["timeout"]:
            continue
        try:
            if not _kernels_quiet(hub, idle, server):
                r.quiet[str(uid)] = r.s.uptime
                continue
        except (hubapi.HubApiError, OSError, ValueError) as exc:
            r.errors.append(f"kernels of {name}: {exc}")
            continue
        finding: GuardFinding = {
            "rule": "idle", "type": "idle", "action": "stop_server", "user": name, "uid": uid,
            "session": (r.seats.get(name) or {}).get("session", ""), "pid": 0, "cmdline": "",
            "age": round(now - last, 1), "done": "",
            "cpu": _percent(r.s, [p.pid for p in by_uid.get(uid, [])]) or 0.0}
        if r.req.get("dry_run"):
            finding["done"] = "reported"
        else:
            _stop(finding, hub, r.req["state_dir"])
        r.findings.append(finding)
        r.quiet.pop(str(uid), None)


# ---- the operation ---------------------------------------------------------------------------

def _refused(rules: list[GuardRule], errors: list[str]) -> dict[int, int]:
    """uid → packets the host's egress rules refused (the egress kind's counters), read only
    when an `egress` rule asks; none where no seat is fenced. A failed read is an error of the
    round, not of the whole answer."""
    if not any(rule.get("type") == "egress" for rule in rules):
        return {}
    from wodsync.agent.kinds import egress

    try:
        return egress.rejections()
    except (OSError, ValueError, RuntimeError) as exc:
        errors.append(f"egress counters: {exc}")
        return {}


def guard_round(payload: GuardRoundRequest, host: HostSide) -> GuardRoundAnswer:
    """Operation `guard_round`: read, judge, act, remember; one answer with every finding."""
    started = time.monotonic()
    state_dir = payload["state_dir"]
    state = load_state(state_dir)
    # /proc before the records: a seat's record is written before its session starts anything,
    # so a process the scan saw is judged against a record at least as new as the process.
    s = sample(scan(payload["pool"]), state, _uptime())
    rules = payload.get("rules") or []
    problems: list[str] = []
    r = Round(payload, s, records.read_all(state_dir), state, _refused(rules, problems))
    r.errors += problems
    for rule in rules:
        check = CHECKS.get(rule.get("type", ""))
        if check is not None:
            check(r, rule)
    act(r, payload.get("hub"))
    hub, idle = payload.get("hub"), payload.get("idle")
    if hub and idle and idle.get("timeout"):
        try:
            idle_servers(r, hub, idle, payload["pool"])
        except (hubapi.HubApiError, OSError, ValueError) as exc:
            r.errors.append(f"idle servers: the hub: {exc}")
    save_state(state_dir, r.state())
    return {"findings": r.findings, "processes": len(s.procs),
            "seats_busy": len({p.uid for p in s.procs}),
            "seconds": round(time.monotonic() - started, 4), "errors": r.errors}


OPERATIONS = {"guard_round": guard_round}
