"""A hub host and two appliance hosts on this machine, for appliance workshops and per-seat
values (tests/test_appliance.py, tests/test_seat_values.py).

- `hub1`: `transport: local`, no hub, pool `wodtq` (uids 56201-56220);
- `app1`, `app2`: `role: appliance`, reached over SSH through one loopback sshd that also
  reads each account's own `~/.ssh/authorized_keys` (as any sshd does), pools `wodtu` (uids
  56401-56420) and `wodtuv` (56431-56450).

/etc/passwd is machine-wide: a seat's account on the hub host and its account on the appliance
cannot both be `wodtq1` here, so the appliances have pools of their own (on real machines the
names are the same). Homes live under /home/wodsync-test-appliance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync
from sshd import Sshd, start_sshd

HUB_POOL = ("wodtq", 56200)
APP_POOLS = (("wodtu", 56400), ("wodtuv", 56430))
HOMES = Path("/home/wodsync-test-appliance")
SEATS_LAST = 20


def cleanup_accounts() -> None:
    remove_test_accounts(*HUB_POOL)
    remove_test_accounts("wodtu", 56400)  # wodtu and wodtuv
    shutil.rmtree(HOMES, ignore_errors=True)


def notebook(*lines: str) -> str:
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {},
                                  "source": list(lines)}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _pools() -> str:
    out = "pools:\n"
    for prefix, base in (HUB_POOL, *APP_POOLS):
        out += (f"  {prefix}:\n    prefix: {prefix}\n    first: 1\n    last: {SEATS_LAST}\n"
                f"    uid_base: {base}\n    gid_base: {base}\n    home_root: {HOMES / prefix}\n")
    return out


def write_catalog(root: Path, tmp: Path, sshd: Sshd, workshops: dict[str, str]) -> None:
    """The lab's hosts and pools, and `workshops` (path under catalog/workshops → text)."""
    for prefix, _ in (HUB_POOL, *APP_POOLS):
        (HOMES / prefix).mkdir(mode=0o755, parents=True, exist_ok=True)
    HOMES.chmod(0o755)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": _pools(),
        "catalog/variables.yaml": "BRANDING: Lab\n",
        "hosts/hub1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: wodtq\nstate_dir: {tmp}/state-hub1\n",
    }
    for name, pool in (("app1", "wodtu"), ("app2", "wodtuv")):
        files[f"hosts/{name}.yaml"] = (
            f"address: 127.0.0.1\nport: {sshd.port}\nidentity: {sshd.client_key}\n"
            f"host_key: {sshd.host_pub}\nrole: appliance\nlocation: lab\npool: {pool}\n"
            f"state_dir: {tmp}/state-{name}\n")
    files.update({f"catalog/workshops/{rel}": text for rel, text in workshops.items()})
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in workshops:
        if rel.endswith(".sh"):
            (root / "catalog/workshops" / rel).chmod(0o755)


@dataclass
class Lab:
    root: Path
    tmp: Path
    sshd: Sshd


def lab(tmp: Path, workshops: dict[str, str]) -> Iterator[Lab]:
    """The lab converged (`wodsync apply --yes`: the hub host locally, the appliances over
    SSH); everything it made removed after."""
    cleanup_accounts()
    sshd = start_sshd(tmp / "sshd", user_keys=True)
    try:
        root = tmp / "repo"
        write_catalog(root, tmp, sshd, workshops)
        applied = run_wodsync("apply", "--yes", "--root", root)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield Lab(root, tmp, sshd)
    finally:
        sshd.stop()
        cleanup_accounts()


def ssh_as_seat(user: str, lab: Lab, account: str) -> subprocess.CompletedProcess[str]:
    """`ssh account@appliance id -un` run as the seat's own user on the hub host, with its own
    `~/.ssh` (key and known_hosts) and nothing else, as its ssh kernel would."""
    return subprocess.run(
        ["runuser", "-u", user, "--", "ssh", "-p", str(lab.sshd.port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
         f"{account}@127.0.0.1", "id", "-un"],
        capture_output=True, text=True, timeout=30)
