"""Benchmark: an agent round trip, one-shot (a python3 per call) against the persistent agent,
on this machine and over a loopback sshd (prints figures).

Why: a seat operation's own work on the host is tens of milliseconds; a one-shot call adds an
exec channel, a python3 start and the agent's import to every operation. The persistent agent
(`agent/server.py`, `engine/persistent.py`) pays them once per host. Both are measured here in
the same run, on the same transports: the bare round trip (`version`), one call at a time and
8 callers at once (a CREATE burst's shape).

    .venv/bin/python bench/agent.py [--calls 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.agent.run import BASE_PATH
from wodsync.catalog.models import Host
from wodsync.engine import remote
from wodsync.engine.transport import LocalTransport, SSHTransport, Transport

from sshd import start_sshd


def timed(call: Callable[[], object], n: int, parallel: int = 1) -> list[float]:
    def one(_: int) -> float:
        began = time.perf_counter()
        call()
        return time.perf_counter() - began
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(n)))


def row(label: str, oneshot: list[float], kept: list[float]) -> str:
    a, b = statistics.median(oneshot) * 1000, statistics.median(kept) * 1000
    q = lambda v: sorted(v)[int(len(v) * 0.95) - 1] * 1000  # noqa: E731
    return (f"  {label:<34} one-shot p50 {a:7.1f} ms p95 {q(oneshot):7.1f} ms   persistent "
            f"p50 {b:6.1f} ms p95 {q(kept):6.1f} ms   ×{a / b:5.1f}")


def measure(name: str, make: Callable[[], Transport], calls: int) -> None:
    payload = {"state_dir": tempfile.mkdtemp(prefix="wodsync-bench-agent-"), "owner": "host b"}
    results = {}
    for mode in ("oneshot", "persistent"):
        if mode == "oneshot":
            os.environ[remote.AGENT_MODE] = "oneshot"
        else:
            os.environ.pop(remote.AGENT_MODE, None)
        transport = make()
        try:
            remote.call(transport, "version", payload)  # connection, compiled cache, agent
            call = lambda t=transport: remote.call(t, "version", payload)  # noqa: E731
            results[mode] = (timed(call, calls), timed(call, calls, parallel=8))
        finally:
            transport.close()
    print(row(f"{name}, one at a time", results["oneshot"][0], results["persistent"][0]))
    print(row(f"{name}, 8 callers at once", results["oneshot"][1], results["persistent"][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    os.environ["PATH"] = BASE_PATH  # the host's python3, as sshd's default PATH gives it
    print(f"agent round trip (`version`), {args.calls} calls per figure, {os.cpu_count()} cores")
    measure("local", LocalTransport, args.calls)
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-sshd-") as tmp:
        server = start_sshd(Path(tmp))
        try:
            host = Host(address="127.0.0.1", port=server.port, user="root",
                        identity=str(server.client_key), host_key=server.host_pub,
                        location="bench", pool="bench")
            measure("loopback sshd", lambda: SSHTransport("bench", host), args.calls)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
