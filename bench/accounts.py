"""Benchmark: 2000 seat accounts, wodsync.agent.accountsdb against shadow-utils (prints figures).

Why: account creation was most of a fresh converge because `newusers` loads the PAM stack per
account. Everything runs on copies of this machine's /etc, so no real account is touched:
accountsdb gets `root=<copy>`, and the shadow-utils tools run in a private mount namespace
(`unshare -m`) where a full copy of /etc is bind-mounted on /etc (their PAM stack, login.defs and
lock included).

Figures, each the median of --runs runs on a fresh copy: accountsdb create, no-op rerun, shared
group, lock, delete; homes as newusers makes them (mkdir, chown: one thread) and as the agent
does (mkdir, /etc/skel, chown, 0700: 4 threads); `newusers` for all seats, which writes the
accounts and their bare homes. Like is compared with like: `newusers` against accountsdb create
plus bare homes. `useradd` and `userdel` (one process per account) are timed once at two sizes
(--sample and twice that) and fitted as a fixed cost plus a cost per account, then predicted for
--seats.

    .venv/bin/python bench/accounts.py [--seats 2000] [--sample 100] [--runs 5]
    .venv/bin/python bench/accounts.py --seats 5 --sample 2 --runs 1   # the smoke test's size
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wodsync.agent import accountsdb as db

PREFIX, BASE, POOL_GID = "wodtb", 3200000, 3199999  # ids far from any real account
FILES = ("passwd", "shadow", "group", "gshadow")
HOME_WORKERS = 4  # as the agent makes homes
BARE, SKEL = "bare homes", "skel homes"


def seats(count: int, home_root: str) -> list[db.NewAccount]:
    return [{"name": f"{PREFIX}{n}", "uid": BASE + n, "gid": BASE + n,
             "home": f"{home_root}/{PREFIX}{n}", "shell": "/bin/bash", "gecos": "wodsync seat"}
            for n in range(1, count + 1)]


def copy_databases(dest: Path) -> str:
    dest.mkdir(parents=True)
    for name in FILES:
        if Path(f"/etc/{name}").exists():
            shutil.copy2(f"/etc/{name}", dest / name)
            st = Path(f"/etc/{name}").stat()
            os.chown(dest / name, st.st_uid, st.st_gid)
    return str(dest)


def timed(fn, *args) -> tuple[float, object]:
    began = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - began, result


def make_homes(accounts: list[db.NewAccount], with_skel: bool = True) -> None:
    """What the agent does for a fresh seat: the folder, /etc/skel's files, owner, mode 0700
    (without skel: what newusers does)."""
    skel = [(p.name, p.read_bytes()) for p in Path("/etc/skel").iterdir()
            if p.is_file() and with_skel]
    for a in accounts:
        home = Path(a["home"])
        home.mkdir(mode=0o700)
        for name, data in skel:
            (home / name).write_bytes(data)
            os.chown(home / name, a["uid"], a["gid"])
        os.chown(home, a["uid"], a["gid"])


def make_homes_threaded(accounts: list[db.NewAccount], with_skel: bool = True) -> None:
    with ThreadPoolExecutor(HOME_WORKERS) as pool:
        list(pool.map(make_homes, [accounts[i::HOME_WORKERS] for i in range(HOME_WORKERS)],
                      [with_skel] * HOME_WORKERS))


def bench_accountsdb(work: Path, count: int, runs: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {}
    accounts = seats(count, str(work / "homes"))
    names = [a["name"] for a in accounts]
    steps = [
        ("create", lambda r: db.create(accounts, root=r)),
        ("create again (no-op)", lambda r: db.create(accounts, root=r)),
        ("shared group of all seats", lambda r: db.set_members(f"{PREFIX}pool", POOL_GID,
                                                                names, root=r)),
        ("lock all passwords", lambda r: db.set_password_field(names, "!*", root=r)),
        ("delete", lambda r: db.delete(names, root=r)),
    ]
    for run in range(runs):
        root = copy_databases(work / f"db{run}")
        for label, fn in steps:
            seconds, out = timed(fn, root)
            assert not out["errors"], out["errors"][:3]
            figures.setdefault(label, []).append(seconds)
        for label, fn in ((BARE, make_homes), (SKEL, make_homes_threaded)):
            homes = work / "homes"
            homes.mkdir()
            seconds, _ = timed(fn, accounts, label == SKEL)
            figures.setdefault(label, []).append(seconds)
            shutil.rmtree(homes)
    return {label: statistics.median(values) for label, values in figures.items()}


def inside(args: dict) -> None:
    """In the private mount namespace: /etc is the copy; shadow-utils tools run for real.
    Prints a JSON object of seconds (and counts) for the part `args["part"]` names."""
    subprocess.run(["mount", "--bind", args["etc"], "/etc"], check=True)
    home_root = args["homes"]
    figures: dict[str, float] = {}
    if args["part"] == "newusers":
        accounts = seats(args["seats"], home_root)
        lines = "".join(f"{a['name']}::{a['uid']}:{a['gid']}:{a['gecos']}:{a['home']}:"
                        f"{a['shell']}\n" for a in accounts)
        # as the agent ran it: an empty password leaves the account locked (exit 1, a warning
        # each)
        figures["seconds"], _ = timed(lambda: subprocess.run(
            ["newusers"], input=lines.encode(), capture_output=True, check=False))
        figures["accounts"] = sum(1 for ln in Path("/etc/passwd").read_text().splitlines()
                                  if ln.startswith(PREFIX))
        figures["homes"] = sum(1 for _ in Path(home_root).iterdir())
    else:  # useradd then userdel, one process per account, at the size asked
        sample = seats(args["seats"] + args["size"], home_root)[args["seats"]:]
        began = time.perf_counter()
        for a in sample:
            subprocess.run(["useradd", "-M", "-U", "-u", str(a["uid"]), "-d", a["home"],
                            "-s", a["shell"], "-c", a["gecos"], a["name"]], check=True)
        figures["useradd"] = time.perf_counter() - began
        began = time.perf_counter()
        for a in sample:
            subprocess.run(["userdel", a["name"]], check=True)
        figures["userdel"] = time.perf_counter() - began
    print(json.dumps(figures))


def _copy_if_there(src: str, dst: str) -> None:
    """Copy a file of /etc unless it vanished since it was listed: account tools running beside
    the bench (the test suite's workers) make and remove their lock and temporary files."""
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(src, dst)


def in_namespace(work: Path, request: dict) -> dict[str, float]:
    """One part of the shadow-utils side on a fresh full copy of /etc and a fresh homes folder."""
    etc, homes = work / "etc-full", work / "nu-homes"
    shutil.rmtree(etc, ignore_errors=True)
    shutil.rmtree(homes, ignore_errors=True)
    shutil.copytree("/etc", etc, symlinks=True, copy_function=_copy_if_there,
                    ignore=shutil.ignore_patterns("*.lock", ".pwd.lock"))
    homes.mkdir()
    request = {**request, "etc": str(etc), "homes": str(homes)}
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                           __file__, "--inside", json.dumps(request)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"shadow-utils part failed: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout)


def fit(sizes: tuple[int, int], seconds: tuple[float, float], n: int) -> tuple[float, float,
                                                                                float]:
    """A fixed cost plus a cost per item through two measured sizes: (fixed, per item, the
    prediction for n)."""
    per_item = (seconds[1] - seconds[0]) / (sizes[1] - sizes[0])
    fixed = seconds[0] - per_item * sizes[0]
    return fixed, per_item, fixed + per_item * n


def bench_shadow_utils(work: Path, count: int, sample: int, runs: int) -> dict[str, float]:
    newusers = [in_namespace(work, {"part": "newusers", "seats": count}) for _ in range(runs)]
    figures = {"newusers": statistics.median(r["seconds"] for r in newusers),
               "newusers accounts made": newusers[0]["accounts"],
               "newusers homes made": newusers[0]["homes"]}
    sizes = (sample, 2 * sample)
    loops = [in_namespace(work, {"part": "loop", "seats": count, "size": size})
             for size in sizes]
    for tool in ("useradd", "userdel"):
        fixed, per_item, predicted = fit(sizes, (loops[0][tool], loops[1][tool]), count)
        figures.update({f"{tool} fixed": fixed, f"{tool} per account": per_item,
                        f"{tool} predicted": predicted,
                        f"{tool} measured": loops[1][tool]})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seats", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-shadow-utils", action="store_true")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(json.loads(args.inside))
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root (files owned by root:shadow, unshare, useradd)")
    with tempfile.TemporaryDirectory(prefix="wodsync-bench-accounts-") as tmp:
        work = Path(tmp)
        ours = bench_accountsdb(work, args.seats, args.runs)
        theirs = {} if args.no_shadow_utils else bench_shadow_utils(work, args.seats,
                                                                    args.sample, args.runs)
    report(args, ours, theirs)


def row(label: str, seconds: float, tail: str = "") -> None:
    print(f"  {label:<54} {seconds * 1000:9.1f} ms{tail}")


def report(args: argparse.Namespace, ours: dict[str, float], theirs: dict[str, float]) -> None:
    n = args.seats
    print(f"{n} seat accounts on copies of this machine's /etc "
          f"(median of {args.runs} runs, each on a fresh copy)")
    for label, seconds in ours.items():
        if label not in (BARE, SKEL):
            row(f"accountsdb {label}", seconds)
    row("homes: mkdir + chown, one thread (as newusers)", ours[BARE])
    row(f"homes: mkdir + skel + chown, {HOME_WORKERS} threads (as the agent)", ours[SKEL])
    fresh = ours["create"] + ours["shared group of all seats"] + ours[SKEL]
    row("fresh pool: create + shared group + skel homes", fresh)
    if not theirs:
        return
    print("shadow-utils on a full copy of /etc bind-mounted in a private mount namespace")
    row(f"newusers, median of {args.runs} (accounts + bare homes)", theirs["newusers"],
        f" ({int(theirs['newusers accounts made'])} accounts, "
        f"{int(theirs['newusers homes made'])} homes)")
    for tool in ("useradd", "userdel"):
        row(f"{tool} x{n}, fitted from x{args.sample} and x{2 * args.sample}",
            theirs[f"{tool} predicted"], f" (fixed {theirs[f'{tool} fixed'] * 1000:.1f} ms + "
            f"{theirs[f'{tool} per account'] * 1000:.2f} ms an account; "
            f"x{2 * args.sample} took {theirs[f'{tool} measured']:.2f} s)")
    print("ratios (like with like)")
    bare = ours["create"] + ours[BARE]
    for label, ratio in (("accounts + bare homes: newusers / (accountsdb + homes)",
                          theirs["newusers"] / bare),
                         ("accounts only: useradd (fitted) / accountsdb",
                          theirs["useradd predicted"] / ours["create"]),
                         ("delete: userdel (fitted) / accountsdb",
                          theirs["userdel predicted"] / ours["delete"])):
        print(f"  {label:<54} {ratio:9.1f} x")


if __name__ == "__main__":
    main()
