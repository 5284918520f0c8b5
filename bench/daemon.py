"""Benchmark: the GitOps daemon, from a merge to live hosts and at rest (prints figures).

Why: `wodsync daemon` promises a merge live within seconds and an idle daemon that costs
nothing while it keeps ten hosts converged. Both are measured on real components, as root on
Debian. (WoD has no equivalent to run beside it here: its `deliver` runs as a cron job on the
backend, which the README quotes from WoD's own documentation; nothing here times it.)

- Merge to live: a bare repository and a clone (the git CLI), `wodsync daemon --interval 3600`
  following it, the example catalog's workshops and one `local` host with a small pool (prefix
  `wodbd`, uids 44101..44600, homes in a temp dir). Each round commits a one-workshop change (a
  notebook edited), pushes it, sends GitHub's signed push webhook and times until
  `GET /api/v1/status` shows the host Ready with `lastAppliedRevision` equal to the commit.
- Idle daemon with N hosts (default 10): fake hosts in network namespaces (tests/netns.py: their
  own sshd, /etc and /home), a pool of 20 seats each, `--resync 60`. After the first convergence,
  the daemon's CPU time (utime + stime of the process, of its reaped children and of its live
  descendants, from /proc) over a window between two resyncs, as percent of one core; then how
  long one resync of every host takes: the scheduled one (from the reconciliation history: the
  first start to the last end) and one forced with `POST /api/v1/reconcile` (wall time until
  every host's history shows it).

Every account made is removed (also on failure); the fake hosts' accounts vanish with their
private /etc. Do not run it while pytest runs on the machine.

    .venv/bin/python bench/daemon.py [--rounds 5] [--hosts 10] [--window 30] [--no-fleet]
    .venv/bin/python bench/daemon.py --rounds 1 --local-seats 4 --hosts 1 --seats 4 \
        --window 1 --resync 5                                   # the smoke test's size
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gitorigin import GitError
from gitorigin import Origin as Repo
from netns import FakeHost, netns_available, start_host
from sshd import descendants, free_port, keygen

PROJECT = Path(__file__).resolve().parent.parent
PREFIX, UID_BASE, UID_LAST = "wodbd", 44100, 44600
NETNS_FIRST = 201  # fake hosts 10.231.201.0/24 and up, away from the tests' 1 and 2
API_TOKEN, WEBHOOK_SECRET = "api-" + os.urandom(8).hex(), "hook-" + os.urandom(8).hex()
WORKSHOP = "WKSHP-Python101"
NOTEBOOK = f"catalog/workshops/{WORKSHOP}/1-Python-Basics.ipynb"
LOCATION = "emea"
POLL = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The bench cannot go on; the message says what did not happen."""


# ---- accounts ---------------------------------------------------------------------------------

def cleanup_accounts() -> None:
    """Only ours: the prefix and the uid range, both."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX) and UID_BASE < entry.pw_uid <= UID_LAST:
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
    for group in grp.getgrall():
        if group.gr_name.startswith(PREFIX) and UID_BASE < group.gr_gid <= UID_LAST:
            subprocess.run(["groupdel", group.gr_name], capture_output=True, check=False)


# ---- the repository ---------------------------------------------------------------------------

def write_catalog(repo: Repo, hosts: dict[str, str], seats: int, home_root: str,
                  motd: str) -> None:
    """The example catalog's workshops, locations and variables; a pool of ours; a motd as the
    only system file (never this machine's sysctl or skel); `hosts`: name → host YAML."""
    shutil.copytree(PROJECT / "catalog/workshops", repo.work / "catalog/workshops")
    for name in ("locations.yaml", "variables.yaml", "replays.yaml"):
        shutil.copy2(PROJECT / "catalog" / name, repo.work / "catalog" / name)
    repo.write("catalog/students.yaml", f"pools:\n  bench:\n    prefix: {PREFIX}\n    first: 1\n"
               f"    last: {seats}\n    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n"
               f"    home_root: {home_root}\n")
    fit_workshops(repo, seats)
    repo.write("catalog/system.yaml", f"files:\n  - template: motd.j2\n    path: {motd}\n")
    repo.write("templates/motd.j2", "Welcome to {{ host.name }} ({{ BRANDING }})\n")
    for name, text in hosts.items():
        repo.write(f"hosts/{name}.yaml", text + f"location: {LOCATION}\npool: bench\n"
                   f"variables:\n  WODBEFQDN: {name}.bench.invalid\n"
                   f"  WODBEEXTFQDN: {name}.bench.invalid\n")


def fit_workshops(repo: Repo, seats: int) -> None:
    """The example workshops' seats (1..100) cut to a slice each of our small pool."""
    folders = sorted((repo.work / "catalog/workshops").glob("*/workshop.yaml"))
    size = seats // len(folders)
    if size < 1:
        raise BenchError(f"{seats} seats cannot give each of {len(folders)} workshops one")
    for index, path in enumerate(folders):
        first = 1 + index * size
        text = re.sub(r"(?m)^seats: .*$", f"seats: {{first: {first}, last: {first + size - 1}}}",
                      path.read_text())
        path.write_text(re.sub(r"(?m)^capacity: .*$", f"capacity: {size}", text))


def edit_workshop(repo: Repo, round_no: int) -> None:
    """One workshop's change, as an author merges one: a line added to a notebook cell."""
    path = repo.work / NOTEBOOK
    notebook = json.loads(path.read_text())
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "markdown")
    cell["source"] = [*cell["source"], f"\nRevised wording, round {round_no}.\n"]
    path.write_text(json.dumps(notebook, indent=1) + "\n")


# ---- the daemon -------------------------------------------------------------------------------

class Daemon:
    """`wodsync daemon` in a subprocess, its API on a free loopback port, its log in a file."""

    def __init__(self, repo: Repo, state: Path, *args: str) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        self.cmd = [str(Path(sys.executable).parent / "wodsync"), "daemon", "--repo",
                    str(repo.origin), "--state", str(state), "--listen",
                    self.base.removeprefix("http://"), *args]
        self.log = state.parent / f"{state.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, WODSYNC_WEBHOOK_SECRET=WEBHOOK_SECRET)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> dict[str, Any]:
        try:
            done = requests.get(f"{self.base}/api/v1/status", params={"limit": 1000}, timeout=10,
                                headers={"Authorization": f"Bearer {API_TOKEN}"})
        except requests.ConnectionError:
            return {"hosts": [], "reconciliations": []}
        return done.json() if done.ok else {"hosts": [], "reconciliations": []}

    def hook(self, sha: str) -> None:
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        done = requests.post(f"{self.base}/hooks/git", data=body, timeout=10, headers={
            "X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}",
            "Content-Type": "application/json"})
        if done.status_code != 202:
            raise BenchError(f"the webhook got {done.status_code}: {done.text}")

    def reconcile(self) -> None:
        done = requests.post(f"{self.base}/api/v1/reconcile", timeout=10,
                             headers={"Authorization": f"Bearer {API_TOKEN}"})
        if done.status_code != 202:
            raise BenchError(f"POST /api/v1/reconcile got {done.status_code}: {done.text}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def until(check: Callable[[], bool], what: str, daemon: Daemon, timeout: float) -> float:
    """Seconds until `check` holds; a BenchError naming `what` (with the log's tail) if never."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if check():
            return time.perf_counter() - began
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise BenchError(f"the daemon exited ({daemon.proc.returncode}) while waiting for "
                             f"{what}:\n{daemon.tail()}")
        time.sleep(POLL)
    raise BenchError(f"{what}: not within {timeout:.0f} s; the daemon's log ends with:\n"
                     f"{daemon.tail()}")


def live(status: dict[str, Any], names: list[str], sha: str) -> bool:
    """Every host of `names` Ready with `sha` applied."""
    hosts = {h["host"]: h for h in status["hosts"]}
    return all(hosts.get(n, {}).get("condition") == "Ready"
               and hosts[n].get("lastAppliedRevision") == sha for n in names)


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rounds_since(status: dict[str, Any], since: float) -> dict[str, dict[str, Any]]:
    """host → its earliest reconciliation started at or after `since` (epoch seconds)."""
    found: dict[str, dict[str, Any]] = {}
    for rec in reversed(status["reconciliations"]):  # oldest first
        if when(rec["startedAt"]) >= since:
            found.setdefault(rec["host"], rec)
    return found


def span(recs: list[dict[str, Any]]) -> float:
    """From the first start to the last end of a round's reconciliations."""
    starts = [when(r["startedAt"]) for r in recs]
    ends = [when(r["startedAt"]) + r["durationSeconds"] for r in recs]
    return max(ends) - min(starts)


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


# ---- merge to live ----------------------------------------------------------------------------

def merge_to_live(tmp: Path, rounds: int, seats: int) -> None:
    homes = tmp / "homes"
    homes.mkdir()
    repo = Repo(tmp / "merge")
    write_catalog(repo, {"local": f"address: localhost\ntransport: local\n"
                                  f"state_dir: {tmp}/hoststate\n"},
                  seats, str(homes), f"{tmp}/motd")
    first = repo.commit("the example catalog on a local host", push=False)
    repo.push()
    daemon = Daemon(repo, tmp / "merge-state", "--interval", "3600", "--resync", "3600").start()
    try:
        converge = until(lambda: live(daemon.status(), ["local"], first), "the first converge",
                         daemon, 300)
        workshops = len(list((PROJECT / "catalog/workshops").glob("*/workshop.yaml")))
        print(f"merge to live: the example catalog ({workshops} workshops), one local host "
              f"with {seats} seats, daemon --interval 3600")
        print(f"  daemon start to first convergence  {converge:6.2f} s")
        figures = [merge_round(repo, daemon, n) for n in range(1, rounds + 1)]
    finally:
        daemon.stop()
    report_merge(figures)


def merge_round(repo: Repo, daemon: Daemon, round_no: int) -> dict[str, float]:
    """Push, webhook, live: the seconds of each part of one merged change."""
    edit_workshop(repo, round_no)
    sha = repo.commit(f"{WORKSHOP}: revised wording ({round_no})", push=False)
    began = time.perf_counter()
    repo.push()
    pushed = time.perf_counter()
    hooked_at = time.time()
    daemon.hook(sha)
    until(lambda: live(daemon.status(), ["local"], sha), f"revision {sha[:12]} live", daemon, 120)
    total = time.perf_counter() - began
    rec = next(r for r in daemon.status()["reconciliations"]
               if r["host"] == "local" and r["revision"] == sha)
    source = when(rec["startedAt"]) - hooked_at
    return {"total": total, "push": pushed - began, "source": source,
            "host": rec["durationSeconds"],
            "status": total - (pushed - began) - source - rec["durationSeconds"]}


def report_merge(figures: list[dict[str, float]]) -> None:
    totals = [f["total"] for f in figures]
    runs = ", ".join(f"{t:.2f}" for t in totals)
    print(f"  push + signed webhook → Ready with the commit applied: median "
          f"{statistics.median(totals):.2f} s, max {max(totals):.2f} s (runs: {runs})")

    def part(key: str) -> str:
        return f"{statistics.median(f[key] for f in figures):.2f} s"

    print(f"    medians: git push {part('push')}; webhook → host reconcile starts (fetch, "
          f"export, validate) {part('source')}; host reconcile {part('host')}; "
          f"→ seen in status {part('status')}")
    print(f"  target ≤ 5 s: {verdict(max(totals), 5.0)} (max)")


# ---- the idle fleet ---------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time of `pid`, its reaped children and its live descendants, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    for child in descendants(pid):
        try:
            sub = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile: its time is in its parent's cutime once reaped
        ticks += int(sub[11]) + int(sub[12])
    return ticks / TICKS


def fleet_catalog(repo: Repo, hosts: list[FakeHost], seats: int) -> None:
    write_catalog(repo, {h.name: f"address: {h.address}\nuser: root\n"
                                 f"identity: {h.sshd.client_key}\nhost_key: {h.sshd.host_pub}\n"
                                 "state_dir: /etc/wodsync-state\n" for h in hosts},
                  seats, "/home", "/etc/motd")


def fleet(tmp: Path, count: int, seats: int, window: float, resync: float,
          parallel: int) -> None:
    if not netns_available():
        print("idle daemon: skipped (no network namespaces here)")
        return
    key = tmp / "fleet_key"
    keygen(key)
    hosts: list[FakeHost] = []
    daemon: Daemon | None = None
    try:
        for index in range(NETNS_FIRST, NETNS_FIRST + count):
            hosts.append(start_host(index, tmp / "hosts", key))
        repo = Repo(tmp / "fleet")
        fleet_catalog(repo, hosts, seats)
        first = repo.commit("a fleet", push=False)
        repo.push()
        daemon = Daemon(repo, tmp / "fleet-state", "--resync", f"{resync:g}", "--parallel",
                        str(parallel)).start()
        measure_fleet(daemon, [h.name for h in hosts], first, seats, window, resync, parallel)
    finally:
        if daemon:
            daemon.stop()
        for host in hosts:
            host.stop()


def measure_fleet(daemon: Daemon, names: list[str], sha: str, seats: int, window: float,
                  resync: float, parallel: int) -> None:
    converge = until(lambda: live(daemon.status(), names, sha), "the fleet's first convergence",
                     daemon, 900)
    first = list(rounds_since(daemon.status(), 0).values())
    print(f"idle daemon: {len(names)} hosts in network namespaces (own sshd, /etc, /home), "
          f"{seats} seats each, --resync {resync:g} --parallel {parallel}")
    print(f"  daemon start to all hosts Ready  {converge:6.2f} s (the first round: "
          f"{span(first):.2f} s from the history)")
    due = min(when(r["startedAt"]) for r in first) + resync
    percent, quiet = idle_window(daemon, window, due, resync)
    print(f"  CPU over {window:g} s between resyncs: {percent:.2f} % of one core "
          f"({'no reconciliation' if quiet else 'a reconciliation fell'} in the window); "
          f"target ≤ 1 %: {verdict(percent, 1.0)}")
    scheduled(daemon, names, resync)
    forced(daemon, names)


def idle_window(daemon: Daemon, window: float, due: float, resync: float,
                ) -> tuple[float, bool]:
    """Percent of one core over `window` seconds with no resync inside: when the window would
    not fit before the resync due at `due` (epoch seconds), after that resync."""
    if time.time() + 2 + window + 2 > due:
        wait_round(daemon, due - 2, resync + 300)
    time.sleep(2)
    cpu0, t0, w0 = cpu_seconds(daemon.pid), time.perf_counter(), time.time()
    time.sleep(window)
    cpu1, t1, w1 = cpu_seconds(daemon.pid), time.perf_counter(), time.time()
    inside = [r for r in daemon.status()["reconciliations"] if w0 <= when(r["startedAt"]) <= w1]
    return (cpu1 - cpu0) / (t1 - t0) * 100, not inside


def wait_round(daemon: Daemon, since: float, timeout: float) -> list[dict[str, Any]]:
    """Every host's reconciliation of the first round started after `since`, once all ended."""
    names = [h["host"] for h in daemon.status()["hosts"]]
    until(lambda: set(rounds_since(daemon.status(), since)) >= set(names),
          "a round over every host", daemon, timeout)
    return list(rounds_since(daemon.status(), since).values())


def scheduled(daemon: Daemon, names: list[str], resync: float) -> None:
    recs = wait_round(daemon, time.time(), resync + 300)
    triggers = sorted({r["trigger"] for r in recs})
    per_host = statistics.median(r["durationSeconds"] for r in recs)
    results = sorted({r["result"] for r in recs})
    print(f"  one scheduled resync of {len(names)} hosts: {span(recs):.2f} s from the history "
          f"(trigger {', '.join(triggers)}; {', '.join(results)}; median per host "
          f"{per_host:.2f} s); target ≤ 3 s: {verdict(span(recs), 3.0)}")


def forced(daemon: Daemon, names: list[str]) -> None:
    since = time.time()
    began = time.perf_counter()
    daemon.reconcile()
    until(lambda: set(rounds_since(daemon.status(), since)) >= set(names),
          "the forced round over every host", daemon, 300)
    wall = time.perf_counter() - began
    recs = list(rounds_since(daemon.status(), since).values())
    print(f"  one forced round (POST /api/v1/reconcile → every host in the history): "
          f"{wall:.2f} s wall, {span(recs):.2f} s from the history (trigger "
          f"{', '.join(sorted({r['trigger'] for r in recs}))}); target ≤ 3 s: "
          f"{verdict(wall, 3.0)}")


# ---- main -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="Merged changes timed.")
    parser.add_argument("--local-seats", type=int, default=12)
    parser.add_argument("--hosts", type=int, default=10, help="Fake hosts of the idle daemon.")
    parser.add_argument("--seats", type=int, default=20, help="Seats of each fake host.")
    parser.add_argument("--window", type=float, default=30.0, help="CPU window, seconds.")
    parser.add_argument("--resync", type=float, default=60.0)
    parser.add_argument("--parallel", type=int, default=4, help="The daemon's --parallel.")
    parser.add_argument("--no-merge", action="store_true")
    parser.add_argument("--no-fleet", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/daemon.py runs as root (accounts, network namespaces)")
    if args.local_seats + UID_BASE > UID_LAST or args.seats + UID_BASE > UID_LAST:
        raise SystemExit(f"seats beyond uid {UID_LAST}: the bench's range ends there")
    with tempfile.TemporaryDirectory(prefix="wodbd-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # seats reach their homes below it
        cleanup_accounts()
        try:
            if not args.no_merge:
                merge_to_live(tmp, args.rounds, args.local_seats)
                cleanup_accounts()
            if not args.no_fleet:
                fleet(tmp, args.hosts, args.seats, args.window, args.resync, args.parallel)
        except (BenchError, GitError) as exc:
            raise SystemExit(f"bench/daemon.py: {exc}") from None
        finally:
            cleanup_accounts()


if __name__ == "__main__":
    main()
