"""Benchmark: the seat guard's round on a 2000-seat host with 200 seats running a kernel
(prints figures).

Why: the guard runs on every host every `guard.interval` seconds for as long as the host lives;
the issue's budget is ≤ 150 ms a round and ≤ 1 % of one core at a 30 s interval. Each of the 200
busy seats runs what a seat in use runs — a server (here `sleep` under the name
`jupyterhub-singleuser`) and a kernel (a real small python process whose command line is a
kernel's, `-m ipykernel_launcher -f …`) — under its own uid (3300001…, far from any account: a
process needs no account to have a uid, and nothing else on the machine runs as these), and
has a seat record; the other 1800 seats are free. Every rule is on (miners, CPU, kernel age,
free seats), in a dry run so nothing is killed.

Figures, medians of --rounds rounds through the agent's real round trip on a local transport
(the host's persistent agent, as the daemon uses it): the baseline, a bare agent round trip
(`version`); the guard round; the round's own time on the host; the CPU the call costs (the
agent process's user + system time, from its /proc stat, in clock ticks), and that CPU as a
share of one core at a 30 s interval.

    .venv/bin/python bench/guard.py [--seats 2000] [--busy 200] [--rounds 15]
    .venv/bin/python bench/guard.py --seats 20 --busy 3 --rounds 2   # the smoke test's size
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wodsync.agent import records
from wodsync.agent.protocol import GuardRoundRequest
from wodsync.agent.run import BASE_PATH
from wodsync.catalog.guard import GuardFile
from wodsync.engine import remote
from wodsync.engine.transport import LocalTransport

PREFIX, BASE = "wodbg", 3300000
INTERVAL = 30.0


def start_seats(busy: int, seats: int) -> list[subprocess.Popen[bytes]]:
    """A server and a kernel for each of `busy` seats spread over the pool."""
    step = max(1, seats // busy)
    procs = []
    for n in range(1, seats + 1, step)[:busy]:
        uid = str(BASE + n)
        as_seat = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        procs.append(subprocess.Popen([*as_seat, "bash", "-c",
                                       "exec -a jupyterhub-singleuser sleep 3600"]))
        procs.append(subprocess.Popen([*as_seat, "/usr/bin/python3", "-c",
                                       "import time; time.sleep(3600)", "-m",
                                       "ipykernel_launcher", "-f", f"kernel-{n}.json"]))
    return procs


def write_records(state_dir: str, busy: int, seats: int) -> None:
    step = max(1, seats // busy)
    for n in range(1, seats + 1, step)[:busy]:
        records.write(state_dir, f"{PREFIX}{n}", {"session": f"s{n:011d}", "workshop": "W",
                                                   "state": "active", "since": time.time()})


def agent_cpu(transport: LocalTransport) -> float:
    """User + system seconds the host's persistent agent has used so far (its /proc stat)."""
    agent = remote.persistent_agent(transport)
    assert agent is not None and agent.pid is not None
    fields = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[], Any], cpu: Callable[[], float],
            rounds: int) -> tuple[list[float], list[float], list[Any]]:
    """Wall seconds, agent CPU seconds and answers of `rounds` calls (the CPU is counted in
    clock ticks of 10 ms: the mean of all the rounds, not each round's own)."""
    walls, answers = [], []
    before = cpu()
    for _ in range(rounds):
        began = time.perf_counter()
        answers.append(call())
        walls.append(time.perf_counter() - began)
    return walls, [(cpu() - before) / rounds] * rounds, answers


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seats", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        sys.exit("bench/guard.py needs root and setpriv (processes under the seats' uids)")
    # The host's python3, as root's PATH on a host gives it (sshd's default): a PATH starting
    # with a pyenv shim (as root's here) costs a bash and pyenv ≈ 100 ms before every call.
    os.environ["PATH"] = BASE_PATH
    state_dir = tempfile.mkdtemp(prefix="wodsync-bench-guard-")
    procs = start_seats(args.busy, args.seats)
    try:
        write_records(state_dir, args.busy, args.seats)
        time.sleep(1.0)  # every process exec'd into its command line
        run(args, state_dir)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        shutil.rmtree(state_dir, ignore_errors=True)


def run(args: argparse.Namespace, state_dir: str) -> None:
    transport = LocalTransport()
    host = {"state_dir": state_dir, "owner": "host bench"}
    payload: GuardRoundRequest = {
        **host,  # type: ignore[typeddict-item]
        "pool": {"prefix": PREFIX, "uid_base": BASE, "first": 1, "last": args.seats},
        "rules": [r.model_dump() for r in rules()], "dry_run": True, "hub": None, "idle": None}
    remote.call(transport, "version", host)  # the agent's compiled cache, once
    remote.call(transport, "guard_round", payload)  # the first sample of the CPU ticks
    used = lambda: agent_cpu(transport)  # noqa: E731
    base_wall, base_cpu, _ = measure(lambda: remote.call(transport, "version", host), used,
                                     args.rounds)
    wall, cpu, answers = measure(lambda: remote.call(transport, "guard_round", payload), used,
                                 args.rounds)
    on_host = [a["seconds"] for a in answers]
    seen = answers[-1]
    share = statistics.median(cpu) / INTERVAL * 100
    print(f"guard round: {args.seats} seats, {args.busy} running a kernel "
          f"({seen['processes']} processes in {seen['seats_busy']} seats), 4 rules, "
          f"{args.rounds} rounds, {len(seen['findings'])} findings")
    print(f"  baseline: bare agent round trip (version)   {ms(base_wall)}  "
          f"cpu {ms(base_cpu)}")
    print(f"  guard round (agent round trip)              {ms(wall)}  cpu {ms(cpu)}"
          "   (target ≤ 150 ms)")
    print(f"  the round itself on the host                {ms(on_host)}")
    print(f"  CPU at a {INTERVAL:.0f} s interval: {share:.2f} % of one core (target ≤ 1 %); "
          f"beyond the bare round trip: "
          f"{(statistics.median(cpu) - statistics.median(base_cpu)) / INTERVAL * 100:.2f} %")


def rules() -> list[Any]:
    """The four rules with their defaults (WoD's), as `catalog/guard.yaml` would give them."""
    return list(GuardFile.model_validate({"rules": [
        {"name": "miners", "type": "banned"}, {"name": "hog", "type": "cpu"},
        {"name": "old-kernels", "type": "kernel_age"},
        {"name": "nobody-home", "type": "free_seat"}]}).rules)


if __name__ == "__main__":
    main()
