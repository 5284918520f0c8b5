"""Benchmark: the host engine on 2000 seats over a loopback sshd, against Ansible (prints figures).

Runs as root on a Debian machine with openssh-server (./bootstrap test installs it). Uses a
throw-away pool (prefix `wodb`, uids 40001..42000, homes in a temp dir) and removes every account
it made. Figures: fresh converge, no-op plan and apply (with the number of SSH exec channels),
the daemon's no-op job (below), a one-file change; then the hub (JupyterHub managed by wodsync
on the same host, API called from the host side): converge with the hub, 2000 hub users from
scratch against one bulk `POST /hub/api/users` of the same names on an equally fresh hub, and
the no-ops with the hub included; then Ansible's `user` module over the same sshd (accounts and
their homes from /etc/skel, WoD's way: one module call per account) timed once at two sizes,
fitted as a fixed cost (start-up, connection) plus a cost per account, predicted for --seats
and set against wodsync's fresh converge of --seats (one run each side). Ansible (ansible-core)
is installed from PyPI into $WODSYNC_ANSIBLE_VENV (default /opt/wodsync-bench-ansible) when
missing; when that fails the Ansible side is skipped with the reason. `--no-ansible` and
`--no-hub` skip parts. The hub environment is created by wodsync under `--hub-prefix` when
missing (JupyterHub from PyPI).

The CLI's no-op plan and apply are timed in this process: the catalog's load, a connection, an
agent started, the observation and the plan (a `wodsync plan` also pays python's start and the
imports, outside the figure). The daemon's no-op job is what `wodsync daemon` does for a host at
each resync when nothing changed: the catalog already loaded (once per revision), the desired
state built, the host observed, the plan made, nothing to apply, the outcome recorded in its
store (SQLite here). It is the daemon's own `HostRunner`, timed `--jobs` times after one warm-up
job (which claims the host as its manager and starts the agent), two ways in the same run: each
job on a connection and an agent of its own (the daemon before it kept them) and on the host's
kept connection, whose persistent agent answers (the daemon now). The agent's own timers of one
more observation on the kept connection are printed beside it.

    .venv/bin/python bench/engine.py [--seats 2000] [--ansible-sizes 40,160] [--no-hub]
        [--jobs 10]
    .venv/bin/python bench/engine.py --seats 20 --repeat 1 --ansible-sizes 1,2   # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.catalog import validate
from wodsync.daemon.hosts import HostRunner, Transports
from wodsync.daemon.metrics import Metrics
from wodsync.engine import remote
from wodsync.engine.connections import Connections
from wodsync.engine.desired import DesiredHost, desired_state
from wodsync.engine.kinds import service
from wodsync.engine.manager import Applier
from wodsync.engine.reconcile import Target, observe, reconcile
from wodsync.engine.transport import Cancel, connect
from wodsync.secrets import Secrets
from wodsync.store import Result, Store, Trigger, open_store

from sshd import Sshd, free_port, start_sshd

PREFIX, UID_BASE = "wodb", 40000
EXEC_CALLS = 0


def _count_exec() -> None:
    """Count SSH exec channels opened by wodsync (the figure the target is about)."""
    original = paramiko.Channel.exec_command

    def counted(self: paramiko.Channel, command: str) -> None:
        global EXEC_CALLS
        EXEC_CALLS += 1
        original(self, command)

    paramiko.Channel.exec_command = counted  # type: ignore[method-assign]


def cleanup(prefix: str) -> None:
    """This bench's accounts only: `prefix` and a number, in its uid range (the other benches'
    `wodbs…` and `wodbd…` seats share the first letters and nearby uids)."""
    names = [p.pw_name for p in pwd.getpwall() if re.fullmatch(rf"{prefix}[0-9]+", p.pw_name)
             and UID_BASE < p.pw_uid <= UID_BASE + 10000]
    for name in names:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def catalog(root: Path, tmp: Path, port: int, host_pub: str, key: Path, seats: int) -> None:
    def w(rel: str, text: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    w("catalog/locations.yaml", "locations:\n  - name: bench\n")
    w("catalog/students.yaml", f"pools:\n  bench:\n    prefix: {PREFIX}\n    first: 1\n"
      f"    last: {seats}\n    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n"
      f"    home_root: {tmp}/homes\n")
    w("catalog/variables.yaml", "BRANDING: Bench\n")
    w("catalog/system.yaml",
      f"files:\n  - template: bench.conf.j2\n    path: {tmp}/etc/bench.conf\n")
    w("templates/bench.conf.j2", "# {{ BRANDING }}\nrevision = 1\n")
    w("hosts/bench.yaml", f"address: 127.0.0.1\nport: {port}\nidentity: {key}\n"
      f"host_key: {host_pub}\nlocation: bench\npool: bench\nstate_dir: {tmp}/state\n")


def run(root: Path, apply: bool) -> tuple[float, int, object]:
    global EXEC_CALLS
    EXEC_CALLS = 0
    start = time.perf_counter()
    cat, found = validate(root)
    assert not [d for d in found if d.is_error], found
    targets = [Target(n, lambda n=n: desired_state(cat, n, Secrets())) for n in sorted(cat.hosts)]
    result = reconcile(targets, apply=apply)[0]
    elapsed = time.perf_counter() - start
    if result.error:
        raise SystemExit(f"engine failed: {result.error}")
    return elapsed, EXEC_CALLS, result


def _jobs(root: Path, store: Store, transports: Transports | None, jobs: int,
          ) -> tuple[list[float], list[float]]:
    """Seconds of `jobs` no-op jobs of the daemon's runner, after one warm-up: wall time, and
    the durations the daemon records (its history: without the writes of the outcome)."""
    cat, found = validate(root)
    assert not [d for d in found if d.is_error], found
    runner = HostRunner(store, Metrics(), None, Applier.daemon(store.identity, store.backend),
                        transports)

    def build() -> DesiredHost:
        return desired_state(cat, "bench", Secrets())

    times = []
    for n in range(jobs + 1):
        start = time.perf_counter()
        outcome = runner.run("bench", build, "bench", Trigger.RESYNC, None, Cancel())
        elapsed = time.perf_counter() - start
        if outcome is None or outcome.result != Result.NOOP:
            raise SystemExit(f"the daemon's job was not a no-op: {outcome}")
        if n:
            times.append(elapsed)
    return times, [r.duration_s for r in store.status.reconciliations("bench", limit=jobs)]


def daemon_noop(root: Path, tmp: Path, jobs: int, label: str = "") -> None:
    """The daemon's no-op job, each on a connection of its own, then on the kept one; the
    agent's timers of one more observation on the kept connection."""
    connections = Connections()
    store = open_store(state_dir=tmp / ("store" + label.replace(" ", "-")))
    desired = _desired(root)
    try:
        own, own_recorded = _jobs(root, store, None, jobs)
        kept, kept_recorded = _jobs(root, store, connections.transport, jobs)
        with connections.transport("bench", desired.host) as transport:
            timers = observe(transport, desired).timings
    finally:
        connections.close()
        store.close()
        (tmp / "state/manager.json").unlink(missing_ok=True)  # later CLI applies are let in
    print(f"  daemon's no-op job{label}, median of {jobs} (min–max) wall with the store's writes"
          "; as its history records it (without them):")
    print(f"    a connection and agent of its own  {statistics.median(own):6.3f} s "
          f"({min(own):.3f}–{max(own):.3f}); recorded {statistics.median(own_recorded):.3f} s"
          " (the daemon before)")
    kept_s = statistics.median(kept)
    print(f"    kept connection, persistent agent  {kept_s:6.3f} s "
          f"({min(kept):.3f}–{max(kept):.3f}); recorded {statistics.median(kept_recorded):.3f} s"
          f" (the daemon now); target ≤ 0.15 s {'met' if kept_s <= 0.15 else 'MISSED'}")
    print("    the agent's own observe timers: " + ", ".join(
        f"{k} {v * 1000:.1f} ms" for k, v in timers.items()))


HUB_TOKEN = os.urandom(16).hex()
PAGINATION = "application/jupyterhub-pagination+json"


def hub_catalog(root: Path, tmp: Path, prefix: str, ports: list[int]) -> None:
    """Give the bench host a managed hub (no pool group, no workshops: hub users only)."""
    (root / "templates/hub").mkdir(parents=True, exist_ok=True)
    for name in ("jupyterhub_config.py.j2", "lab-overrides.json.j2"):
        template = Path(__file__).resolve().parent.parent / "templates/hub" / name
        (root / "templates/hub" / name).write_text(template.read_text())
    proxy = shutil.which("configurable-http-proxy")
    host = root / "hosts/bench.yaml"
    host.write_text(host.read_text() + f"hub:\n  service: process\n  prefix: {prefix}\n"
                    f"  config_dir: {tmp}/hubconf\n"
                    f"  data_dir: {tmp}/hubdata\n  ip: 127.0.0.1\n  port: {ports[0]}\n"
                    f"  proxy_api_port: {ports[1]}\n  hub_port: {ports[2]}\n"
                    + (f"  proxy: {proxy}\n" if proxy else "")
                    + "  token: {secret: BENCH_HUB_TOKEN}\n")


def _desired(root: Path) -> DesiredHost:
    cat, found = validate(root)
    assert not [d for d in found if d.is_error], found
    return desired_state(cat, "bench", Secrets())


def _stop_hub(desired: DesiredHost) -> None:
    transport = connect("bench", desired.host)
    try:
        remote.call(transport, "stop_hub", service.stop_hub_request(desired))
    finally:
        transport.close()


def fresh_hub(root: Path, tmp: Path) -> None:
    """Stop the hub, drop its database, start it again with no users (engine calls only)."""
    desired = _desired(root)
    _stop_hub(desired)
    (tmp / "hubdata/jupyterhub.sqlite").unlink(missing_ok=True)
    transport = connect("bench", desired.host)
    try:  # a batch of one kind: start the service, nothing else
        remote.call(transport, "apply", {
            **desired.payload(), "expect": {}, "probes": {},
            "batch": {"service": service.batch(desired.want["service"], [])}})
    finally:
        transport.close()


def bulk_post(api: str, names: list[str]) -> float:
    start = time.perf_counter()
    done = requests.post(f"{api}/users", json={"usernames": names}, timeout=600,
                         headers={"Authorization": f"token {HUB_TOKEN}"})
    elapsed = time.perf_counter() - start
    done.raise_for_status()
    return elapsed


def hub_phase(root: Path, tmp: Path, seats: int, prefix: str, repeat: int,
              jobs: int) -> None:
    ports = [free_port() for _ in range(3)]
    hub_catalog(root, tmp, prefix, ports)
    os.environ["BENCH_HUB_TOKEN"] = HUB_TOKEN
    api = f"http://127.0.0.1:{ports[2]}/hub/api"
    names = [f"{PREFIX}{n}" for n in range(1, seats + 1)]
    try:
        converge, calls, result = run(root, apply=True)
        print(f"hub: JupyterHub managed by wodsync on the same host ({prefix})")
        print(f"  converge with hub   {converge:7.2f} s  ({calls} SSH exec channels; "
              f"{'; '.join(result.applied)})")
        # Alternated and repeated: the hub's own time per user drifts between runs; each side
        # is the best of `repeat`.
        bulks, ours = [], []
        for _ in range(repeat):
            fresh_hub(root, tmp)
            bulks.append(bulk_post(api, names))
            fresh_hub(root, tmp)
            elapsed, calls_users, result = run(root, apply=True)
            ours.append(elapsed)
        bulk, users = min(bulks), min(ours)
        print(f"  one bulk POST of {seats} names        {bulk:7.2f} s  (baseline; runs: "
              f"{', '.join(f'{b:.2f}' for b in bulks)})")
        print(f"  wodsync {seats} hub users from scratch {users:7.2f} s  (runs: "
              f"{', '.join(f'{u:.2f}' for u in ours)}; {calls_users} SSH exec channels, observe "
              f"+ apply + observe) = {users / bulk:.2f}× the bulk POST (target ≤ 1.2×)")
        noop_plan, calls_plan, _ = run(root, apply=False)
        noop_apply, calls_apply, _ = run(root, apply=True)
        print(f"  no-op plan with hub {noop_plan:7.2f} s  ({calls_plan} SSH exec channels)")
        print(f"  no-op apply with hub{noop_apply:7.2f} s  ({calls_apply} SSH exec channels); "
              f"target ≤ 1.5 s {'met' if noop_apply <= 1.5 else 'MISSED'}")
        daemon_noop(root, tmp, jobs, " with hub")
    finally:
        _stop_hub(_desired(root))


def ansible_venv() -> Path | str:
    """The venv holding ansible-playbook, made when missing; why not, as text, on failure."""
    venv = Path(os.environ.get("WODSYNC_ANSIBLE_VENV", "/opt/wodsync-bench-ansible"))
    if (venv / "bin/ansible-playbook").exists():
        return venv
    for argv in ([sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin/pip"), "install", "-q", "ansible-core>=2.15"]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-300:]}"
    return venv


def ansible(venv: Path, tmp: Path, port: int, key: Path, size: int) -> float:
    """Seconds of one ansible-playbook run creating `size` accounts with their homes; the
    accounts are removed afterwards (not timed)."""
    inventory = tmp / "inventory.ini"
    inventory.write_text(f"bench ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
                         f"ansible_ssh_private_key_file={key} "
                         "ansible_python_interpreter=/usr/bin/python3 "
                         "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                         "-o UserKnownHostsFile=/dev/null'\n")
    playbook = tmp / f"users-{size}.yml"
    playbook.write_text(json.dumps([{
        "hosts": "bench", "gather_facts": False, "tasks": [{
            "name": "student accounts (WoD's approach: one module call each)",
            "ansible.builtin.user": {"name": "wodbx{{ item }}",
                                     "uid": f"{{{{ {UID_BASE + 5000} + item }}}}",
                                     "home": f"{tmp}/ahomes-{size}/wodbx{{{{ item }}}}",
                                     "shell": "/bin/bash", "password": "!"},
            "loop": f"{{{{ range(1, {size + 1}) | list }}}}"}]}]))
    start = time.perf_counter()
    done = subprocess.run([str(venv / "bin/ansible-playbook"), "-i", str(inventory),
                           str(playbook)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    cleanup(f"{PREFIX}x")
    if done.returncode != 0:
        raise SystemExit(f"ansible-playbook failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def ansible_phase(tmp: Path, server: Sshd, sizes: tuple[int, int], seats: int,
                  fresh: float) -> None:
    """Ansible at two sizes, fitted (fixed + per account), predicted for `seats`."""
    venv = ansible_venv()
    if isinstance(venv, str):
        print(f"ansible: skipped, ansible-core could not be installed ({venv})")
        return
    measured = [ansible(venv, tmp, server.port, server.client_key, size) for size in sizes]
    per_account = (measured[1] - measured[0]) / (sizes[1] - sizes[0])
    fixed = measured[0] - per_account * sizes[0]
    predicted = fixed + per_account * seats
    print("ansible user module (accounts + homes from /etc/skel), one run at each size: "
          + ", ".join(f"{n} accounts {t:.1f} s" for n, t in zip(sizes, measured, strict=True)))
    if per_account <= 0:  # the larger size was not slower: noise, at sizes this small
        print(f"  fitted: no positive cost per account between {sizes[0]} and {sizes[1]} "
              "accounts (the runs' noise is larger than the difference): no prediction; "
              "measure at larger sizes")
        return
    print(f"  fitted: {fixed:.1f} s fixed + {per_account * 1000:.0f} ms an account → {seats} "
          f"accounts predicted {predicted:.0f} s ({predicted / 60:.1f} min)")
    print(f"  wodsync's fresh converge of {seats} seats ({fresh:.2f} s, one run) is "
          f"{predicted / fresh:.0f}× faster (target ≥ 500× at 2000 seats)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seats", type=int, default=2000)
    parser.add_argument("--ansible-sizes", default="40,160",
                        help="Two numbers of accounts Ansible creates, one run each.")
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--no-hub", action="store_true")
    parser.add_argument("--repeat", type=int, default=2,
                        help="Hub users from scratch and the bulk POST: best of this many each.")
    parser.add_argument("--jobs", type=int, default=10,
                        help="The daemon's no-op job: median of this many, each way.")
    parser.add_argument("--hub-prefix", default="/opt/wodsync-test/hub",
                        help="Hub environment (created by wodsync when missing).")
    args = parser.parse_args()
    _count_exec()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        server = start_sshd(tmp / "sshd")
        root = tmp / "repo"
        catalog(root, tmp, server.port, server.host_pub, server.client_key, args.seats)
        cleanup(PREFIX)
        try:
            fresh, calls, result = run(root, apply=True)
            print(f"engine: {args.seats} seats over loopback sshd")
            print(f"  fresh converge      {fresh:7.2f} s  ({calls} SSH exec channels; "
                  f"{'; '.join(result.applied)})")
            print(f"    on the host: {result.timings}")
            noop_plan, calls_plan, _ = run(root, apply=False)
            print(f"  no-op plan          {noop_plan:7.2f} s  ({calls_plan} SSH exec channels)")
            noop_apply, calls_apply, _ = run(root, apply=True)
            print(f"  no-op apply         {noop_apply:7.2f} s  ({calls_apply} SSH exec channels)")
            daemon_noop(root, tmp, args.jobs)
            (root / "templates/bench.conf.j2").write_text("# {{ BRANDING }}\nrevision = 2\n")
            change, calls_change, _ = run(root, apply=True)
            print(f"  one-file change     {change:7.2f} s  ({calls_change} SSH exec channels)")
            print(f"  targets: fresh ≤ 3 s {'met' if fresh <= 3 else 'MISSED'}; no-op plan "
                  f"≤ 0.5 s {'met' if noop_plan <= 0.5 else 'MISSED'}")
            if not args.no_hub:
                hub_phase(root, tmp, args.seats, args.hub_prefix, args.repeat, args.jobs)
            if not args.no_ansible:
                small, large = (int(n) for n in args.ansible_sizes.split(","))
                ansible_phase(tmp, server, (small, large), args.seats, fresh)
        finally:
            cleanup(PREFIX)
            server.stop()


if __name__ == "__main__":
    main()
