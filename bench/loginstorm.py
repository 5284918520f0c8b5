"""Benchmark: the login storm of an event (issue 22) — with hot seats, and without, in one run.

Why: at a conference every participant registers and logs in within seconds of the
presenter's "go". With hot seats (`wodsync.sessions.hotseats`) their JupyterLab servers were
started before the event; without, each server starts when its CREATE asks for it (past the
hub's `spawn_limit` the hub defers it: it starts at the login or the next deferred round).

Real components: this machine as a local host with a JupyterHub managed by wodsync
(`tests/stormlab.py`: pool `wodqf`, seats 101-400, uids 43101-43400, homes under
/home/wodsync-test-storm), the session service in this process with its expiry loop running
(deferred servers asked again every 5 s, as `wodsync serve` does), real HTTP logins to the
hub (the login form and its `_xsrf`, the POST, the redirect followed as a browser does, then
the lab and its contents API until they answer).

For each side: N concurrent CREATEs (one thread each; wall time), then the N participants
log in, spread evenly over --spread seconds (default 10); each one's figure is the time from
its login POST to the first 200 of its lab's contents API. Printed: p50, p95 and max of both
storms, the wall time of both CREATE bursts, N, this machine's memory and cores, the hub's
spawn_limit, and the memory one JupyterLab server takes here (and so what N would fit).
Everything made is removed at the end, also on failure. Needs root; run it under the tests'
lock (the uids are the tests'):

    flock /tmp/wodsync-tests.lock .venv/bin/python bench/loginstorm.py [--participants 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.controller import Controller, open_controller
from wodsync.secrets import Secrets
from wodsync.sessions.service import ExpiryLoop
from wodsync.store import Participant, Session, SessionState

from helpers import wodsync
from hubs import HubApi, hub_ports, hub_prefix_lock, stop_hub
from stormlab import (
    TOKEN_ENV,
    UID_BASE,
    WORKSHOP,
    event_yaml,
    participant,
    ready_servers,
    remove_accounts,
    taken_by_others,
    write_catalog,
)

FIRST, LAST = 101, 400  # the bench's seats of the pool (the test has 1-10)
WAIT_S = 900.0  # an upper bound for servers and labs to answer, not a figure


class Lab:
    """The hub host: its catalogs (with and without the event), store, hub API."""

    def __init__(self, tmp: Path, n: int, spawn_limit: int) -> None:
        self.tmp, self.n, self.spawn_limit = tmp, n, spawn_limit
        self.seats = range(FIRST, FIRST + 2 * n)  # room for seats still being released
        self.ports = hub_ports()
        self.base = f"http://127.0.0.1:{self.ports['port']}"
        self.token = os.environ[TOKEN_ENV]
        self.api = HubApi(self.ports["hub_port"], self.token)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
        self.hot_root, self.cold_root = tmp / "hot", tmp / "cold"
        for root, events in ((self.hot_root, event_yaml(start, n)), (self.cold_root, "")):
            write_catalog(root, tmp, self.ports, self.seats, events, spawn_limit)
            capacity = root / f"catalog/workshops/{WORKSHOP}/workshop.yaml"
            capacity.write_text(capacity.read_text().replace(
                f"capacity: {len(self.seats)}", f"capacity: {n}"))

    def users(self) -> list[str]:
        return [f"wodqf{n}" for n in self.seats]

    def controller(self, root: Path) -> Controller:
        return open_controller(root, self.tmp / "ctl", None, Secrets())


def figures(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered):6.2f} s   p95 {p95:6.2f} s   "
            f"max {ordered[-1]:6.2f} s   (n={len(ordered)})")


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting: {what}")
        time.sleep(0.5)


def prepare_hot(lab: Lab, ctl: Controller) -> float:
    """The event's N hot seats prepared (the expiry loop's rounds, every 5 s) and their
    servers ready at the hub: seconds from the first round."""
    began = time.monotonic()

    def done() -> bool:
        hot = [s.username for s in ctl.store.hot.waiting("storm")
               if s.state is SessionState.HOT]
        return len(hot) == lab.n and ready_servers(lab.api, hot) == set(hot)

    until(done, f"{lab.n} hot seats with their servers ready")
    return time.monotonic() - began


def create_burst(ctl: Controller, n: int, tag: str) -> tuple[float, list[Session]]:
    """N concurrent CREATEs of the workshop, one thread each: wall time, the sessions."""
    gate = threading.Barrier(n)

    def one(i: int) -> Session:
        gate.wait()
        created = ctl.sessions.create(WORKSHOP, Participant(f"P {i}", f"{tag}{i}@example.org"))
        return created.session

    with ThreadPoolExecutor(n) as pool:
        began = time.monotonic()
        sessions = list(pool.map(one, range(n)))
        return time.monotonic() - began, sessions


def login_storm(lab: Lab, sessions: list[Session], spread: float
                ) -> list[tuple[float, float]]:
    """Every participant logs in, the logins spread evenly over `spread` seconds: each one's
    seconds from its login POST to its lab's first 200, and the POST's own answer."""
    began = time.monotonic()
    deadline = began + WAIT_S
    step = spread / max(1, len(sessions) - 1) if len(sessions) > 1 else 0.0

    def one(i: int) -> tuple[float, float]:
        time.sleep(max(0.0, began + i * step - time.monotonic()))
        s = sessions[i]
        return participant(lab.base, s.username, s.password, deadline)

    with ThreadPoolExecutor(len(sessions)) as pool:
        return list(pool.map(one, range(len(sessions))))


def purge_all(ctl: Controller) -> None:
    live = ctl.store.sessions.find(live=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: ctl.sessions.purge(s.id, "bench"), live))


def server_memory_mb(users: list[str]) -> tuple[float, int]:
    """Mean resident memory (MB) of a running lab server's processes, and how many servers:
    every process of a seat's uid counted for its seat."""
    import pwd

    uids = {pwd.getpwnam(u).pw_uid for u in users}
    per_uid: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        fields = {ln.split(":", 1)[0]: ln.split(":", 1)[1].split() for ln in lines if ":" in ln}
        uid = int(fields["Uid"][0])
        if uid in uids and "VmRSS" in fields:
            per_uid[uid] = per_uid.get(uid, 0) + int(fields["VmRSS"][0])
    if not per_uid:
        return 0.0, 0
    return statistics.mean(per_uid.values()) / 1024, len(per_uid)


def memory() -> tuple[float, float]:
    """This machine's total and available memory (GB)."""
    info = {ln.split(":")[0]: int(ln.split()[1]) for ln in
            Path("/proc/meminfo").read_text().splitlines()}
    return info["MemTotal"] / 2**20, info["MemAvailable"] / 2**20


def side(lab: Lab, root: Path, hot: bool, spread: float) -> dict[str, Any]:
    """One storm: the CREATE burst then the logins, on a controller with its expiry loop."""
    ctl = lab.controller(root)
    loop = ExpiryLoop(ctl.sessions, interval=3600)
    loop.start()
    out: dict[str, Any] = {}
    try:
        if hot:
            out["prepared"] = prepare_hot(lab, ctl)
            out["rss_mb"], out["servers"] = server_memory_mb(
                [s.username for s in ctl.store.hot.waiting("storm")])
            hot_ids = {s.id for s in ctl.store.hot.waiting("storm")}
        out["creates"], sessions = create_burst(ctl, lab.n, "hot" if hot else "cold")
        if hot:
            out["took_hot"] = sum(s.id in hot_ids for s in sessions)
        timed = login_storm(lab, sessions, spread)
        out["logins"], out["posts"] = [t for t, _ in timed], [p for _, p in timed]
        return out
    finally:
        loop.stop()
        began = time.monotonic()
        purge_all(ctl)
        print(f"{'with' if hot else 'without'} hot seats: the sessions purged in "
              f"{time.monotonic() - began:.1f} s", flush=True)
        ctl.close()


def report(lab: Lab, hot: dict[str, Any], cold: dict[str, Any], spread: float) -> None:
    total, available = memory()
    rss = hot["rss_mb"]
    fits = int((available * 1024 * 0.8) / rss) if rss else 0
    print(f"login storm: {lab.n} participants, logins spread over {spread:.0f} s; local host, "
          f"JupyterHub spawn_limit {lab.spawn_limit}; {os.cpu_count()} cores, "
          f"{total:.1f} GB memory ({available:.1f} GB available after the run)")
    print(f"one JupyterLab server here: {rss:.0f} MB resident (mean of {hot['servers']}); "
          f"80 % of the available memory holds about {fits} of them")
    print(f"hot seats prepared (N servers ready) {hot['prepared']:.1f} s before the storm; "
          f"{hot['took_hot']} of {lab.n} CREATEs took a hot seat")
    print(f"login -> lab answers, with hot seats     {figures(hot['logins'])}   target p95 <= 3 s")
    print(f"  of which the login POST answered       {figures(hot['posts'])}")
    print(f"login -> lab answers, without (base)     {figures(cold['logins'])}")
    print(f"  of which the login POST answered       {figures(cold['posts'])}")
    print(f"{lab.n} concurrent CREATEs taking hot seats  {hot['creates']:6.2f} s wall")
    print(f"{lab.n} concurrent CREATEs without hot seats {cold['creates']:6.2f} s wall   "
          "target (100 CREATEs) <= 5 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=40,
                        help=f"N, at most {(LAST - FIRST + 1) // 2} (the bench's uids)")
    parser.add_argument("--spread", type=float, default=10.0,
                        help="seconds over which the N logins are spread")
    parser.add_argument("--spawn-limit", type=int, default=8,
                        help="the hub's spawn_limit (the catalog's default: 8)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    n = args.participants
    if not 1 <= n <= (LAST - FIRST + 1) // 2:
        sys.exit(f"--participants must be 1..{(LAST - FIRST + 1) // 2}")
    seats = range(FIRST, FIRST + 2 * n)
    if taken_by_others(seats):
        sys.exit(f"uids of the bench's seats are used by others: {taken_by_others(seats)[:3]}")
    os.environ[TOKEN_ENV] = "wodsync-loginstorm-" + os.urandom(8).hex()
    remove_accounts(seats)
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-storm-") as folder:
        lab = Lab(Path(folder), n, args.spawn_limit)
        try:
            began = time.monotonic()
            with hub_prefix_lock():
                applied = wodsync("apply", "--yes", "--root", lab.hot_root)
            print(f"the host converged by `wodsync apply` (hub, {2 * n} seats): "
                  f"{time.monotonic() - began:.1f} s", flush=True)
            if applied.returncode != 0:
                sys.exit(applied.stdout[-3000:] + applied.stderr[-3000:])
            hot = side(lab, lab.hot_root, True, args.spread)
            cold = side(lab, lab.cold_root, False, args.spread)
            report(lab, hot, cold, args.spread)
        finally:
            stop_hub(lab.tmp / "hubdata", range(UID_BASE + FIRST, UID_BASE + LAST + 1))
            remove_accounts(seats)


if __name__ == "__main__":
    main()
