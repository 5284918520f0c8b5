"""Benchmark: session CREATE and CLEANUP latency on a 2000-seat host with a managed hub (prints
figures).

Why: a wodsync CREATE is one round trip on an open SSH connection; what a participant waits for
is a working lab. This measures it on real components: a loopback sshd in front of this machine,
a pool of --seats seats (prefix `wodbs`, uids from 42001, homes under
/home/wodsync-bench-sessions), a JupyterHub
managed by wodsync (service: process, the hub environment at `--hub-prefix`, created by
wodsync when missing, configurable-http-proxy from PATH, free high ports, its token from
`$HUB_BENCH_TOKEN`, made up when unset), converged with `wodsync apply`.

Figures:
- N sequential CREATEs (`--creates`, default 20) through `SessionService` in this process (one
  open SSH connection per host, `Connections`) for (a) the example catalog's largest workshop
  (most rendered bytes) and (b) the largest workshop of WoD's public corpus
  (`--corpus`, default ../shared/corpus; its wod-notebooks through `wodsync import`) that
  validates and renders — skipped with a note when the corpus is absent. "Seat usable" is wall
  time, from the CREATE's request to the lab working for the participant: the hub's login form
  with the seat's credentials (PAM), the seat's server ready, its JupyterLab page through the
  hub's OAuth and the contents API listing the home. The CREATE's answer is reported apart.
- CLEANUP latency (each of those sessions, one after the other).
- 100 concurrent CREATEs (`--concurrent`) through the HTTP API (`wodsync serve` in a process of
  its own, one thread per request): wall time, failures, and the store checked for a seat given
  twice; how many server starts the hub deferred (its spawn_limit) and how long until every
  seat's server was asked for (the service's loop asks again for the deferred ones).
- 100 concurrent CLEANUPs of those sessions through the API (every seat's server asked for
  before), the ends of one host bursting (`seat_end` calls shared); beside it, in the same run,
  another 100 CREATEs whose CLEANUPs each go in a call of their own (`wodsync serve` with
  `WODSYNC_BENCH_SINGLE_ENDS` set: the code before the ends burst).
- Where the time of a CREATE (and a CLEANUP) goes on the host: the median of each step as the
  agent's own timers report it (a breakdown, not a figure of the whole); and what a round trip
  costs before the agent does anything (exec channel, python3, the agent answering `version`).

Every account it made is removed at the end, also on failure, and so is what the example
Git101 workshop's `create` hook makes outside the home (/srv/git/<seat>.git). It refuses to
run while a pytest run is on the machine (the hub environment, ports and CPU are shared);
`--force` overrides.

    .venv/bin/python bench/sessions.py [--seats 2000] [--creates 20] [--concurrent 100]
    .venv/bin/python bench/sessions.py --seats 20 --creates 1 --concurrent 2 --probes 1 \
        --no-corpus --force                                     # the smoke test's size
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wodsync.agent import PROTOCOL, accountsdb
from wodsync.catalog import validate
from wodsync.controller import working_tree_deployment
from wodsync.engine import connections as connections_module
from wodsync.engine import remote
from wodsync.engine.connections import Connections
from wodsync.render.content import new_password, seat_content
from wodsync.secrets import Secrets
from wodsync.sessions.service import DEFERRED_EVERY, SINGLE_ENDS, Created, SessionService
from wodsync.store import Participant, SessionState, open_store

from hubs import hub_ports, login, read_contents, stop_hub
from sshd import Sshd, free_port, start_sshd

PREFIX, UID_BASE, MAX_SEATS = "wodbs", 42000, 2000
UIDS = range(UID_BASE + 1, UID_BASE + MAX_SEATS + 1)
SEATS = MAX_SEATS      # the pool's size, --seats
HOMES = Path("/home/wodsync-bench-sessions")
PROJECT = Path(__file__).resolve().parent.parent
CORPUS = PROJECT.parent / "shared" / "corpus"
WODSYNC = str(Path(sys.executable).parent / "wodsync")
RANGE = 200            # seats (and capacity) of each bench workshop (at most --seats / 2)
START = "start server"
API_TOKEN = "wodbs-api-" + os.urandom(12).hex()
GIT_REMOTES = Path("/srv/git")  # the example Git101 `create` hook makes <seat>.git there


def pytest_running() -> list[str]:
    """Command lines of running pytest processes (this bench must not share the machine)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if int(cmdline.parent.name) != os.getpid() and any(b"pytest" in a for a in argv):
                found.append(b" ".join(argv).decode(errors="replace")[:120])
    return found


# ---- accounts ----------------------------------------------------------------------------------

def kill_seat_processes() -> None:
    """Students' servers outlive the hub (cleanup_servers = False): end them by uid."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, StopIteration, ValueError):
            uid = int(next(ln for ln in status.read_text().splitlines()
                           if ln.startswith("Uid:")).split()[1])
            if uid in UIDS:
                os.kill(int(status.parent.name), signal.SIGKILL)


def remove_accounts() -> None:
    """Every `wodbs` account and group in our uid range (one accountsdb batch: 2000 `userdel`
    calls would take minutes), and the homes."""
    kill_seat_processes()
    dbs = accountsdb.read_databases()
    users = [u["name"] for u in dbs["users"].values()
             if u["name"].startswith(PREFIX) and u["uid"] in UIDS]
    if users:
        accountsdb.delete(users)
    for group in accountsdb.read_databases()["groups"].values():
        if group["name"].startswith(PREFIX) and group["gid"] in UIDS:
            subprocess.run(["groupdel", group["name"]], capture_output=True, check=False)
    shutil.rmtree(HOMES, ignore_errors=True)


def stop_bench_hub(data: Path) -> None:
    """The hub, its proxy and the students' servers; waits for the hub to exit (its folder is
    removed next)."""
    pids = []
    for name, read in (("wodsync-hub.json", lambda t: json.loads(t)["pid"]),
                       ("jupyterhub-proxy.pid", lambda t: int(t.strip()))):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(int(read((data / name).read_text())))
    stop_hub(data, UIDS)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def remove_hook_leftovers(had_remotes: bool) -> None:
    """What a `create` hook made outside the home for seats never RESET (a failed run)."""
    for repo in GIT_REMOTES.glob(f"{PREFIX}*.git"):
        shutil.rmtree(repo, ignore_errors=True)
    if not had_remotes:
        with contextlib.suppress(OSError):
            GIT_REMOTES.rmdir()


# ---- the catalog -------------------------------------------------------------------------------

@dataclass
class Lab:
    """Where the bench host lives: temp folder, its sshd and the hub's ports."""

    tmp: Path
    sshd: Sshd
    ports: dict[str, int]
    hub_prefix: str

    @property
    def hub_data(self) -> Path:
        return self.tmp / "hubdata"


def _yaml(typ: str = "rt") -> YAML:
    yaml = YAML(typ=typ)
    yaml.default_flow_style = False
    return yaml


def _load(path: Path) -> Any:
    return _yaml("safe").load(path.read_text(encoding="utf-8")) or {}


def _variables(imported: Path | None) -> dict[str, Any]:
    """The example catalog's global variables, and the corpus's where the example has none."""
    merged = dict(_load(PROJECT / "catalog/variables.yaml"))
    if imported is not None:
        for key, value in _load(imported / "catalog/variables.yaml").items():
            merged.setdefault(key, value)
    return merged


def _host_variables() -> dict[str, Any]:
    """An example host's own variables (WODBEFQDN, …): workshops render with them."""
    for path in sorted((PROJECT / "hosts").glob("*.yaml")):
        found = _load(path).get("variables")
        if found:
            return dict(found)
    return {}


def _host_file(lab: Lab) -> str:
    proxy = shutil.which("configurable-http-proxy")
    lines = [f"address: 127.0.0.1\nport: {lab.sshd.port}\nidentity: {lab.sshd.client_key}\n"
             f"host_key: {lab.sshd.host_pub}\nlocation: bench\npool: bench\n"
             f"state_dir: {lab.tmp}/host-state\nhub:\n  service: process\n"
             f"  prefix: {lab.hub_prefix}\n  config_dir: {lab.tmp}/hubconf\n"
             f"  data_dir: {lab.hub_data}\n  ip: 127.0.0.1\n"]
    lines += [f"  {name}: {port}\n" for name, port in lab.ports.items()]
    lines += [f"  proxy: {proxy}\n"] if proxy else []
    lines += ["  token: {secret: HUB_BENCH_TOKEN}\nvariables:\n"]
    lines += [f"  {k}: {json.dumps(v)}\n" for k, v in _host_variables().items()]
    return "".join(lines)


def write_base(root: Path, lab: Lab, imported: Path | None) -> None:
    """Everything but the workshops: one location, the 2000-seat pool, the hub host."""
    root.mkdir(parents=True)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: bench\n",
        "catalog/students.yaml": f"pools:\n  bench:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n"
                                 "    shell: /bin/bash\n",
        "hosts/bench.yaml": _host_file(lab),
    }
    for template in (PROJECT / "templates/hub").glob("*.j2"):
        files[f"templates/hub/{template.name}"] = template.read_text()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with (root / "catalog/variables.yaml").open("w") as f:
        _yaml("safe").dump(_variables(imported), f)


def add_workshop(root: Path, source: Path, key: str, first: int, last: int) -> None:
    """A copy of a workshop, moved to the bench location and seats `first`..`last` (capacity
    to match). Its packages are dropped (installing them is an apply's job, not a CREATE's, and
    would change this machine's hub environment) and so is its replay (no replays here)."""
    dest = root / "catalog/workshops" / key
    shutil.copytree(source, dest)
    yaml = _yaml()
    doc = yaml.load((dest / "workshop.yaml").read_text(encoding="utf-8"))
    for dropped in ("alternate_locations", "packages", "replay"):
        doc.pop(dropped, None)
    doc.update({"active": True, "location": "bench", "capacity": last - first + 1,
                "seats": {"first": first, "last": last}})
    with (dest / "workshop.yaml").open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def _secret_refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        if set(value) == {"secret"}:
            return {str(value["secret"])}
        return set().union(*(_secret_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_secret_refs(v) for v in value))
    return set()


def write_secrets(root: Path, path: Path) -> Secrets:
    """Made-up values for every catalog secret, granted to every workshop of the bench."""
    keys = sorted(p.name for p in (root / "catalog/workshops").iterdir())
    names = _secret_refs(_load(root / "catalog/variables.yaml"))
    for key in keys:
        names |= _secret_refs(_load(root / f"catalog/workshops/{key}/workshop.yaml"))
    doc = {"secrets": {n: {"value": f"bench-{n.lower()}", "workshops": list(keys)}
                       for n in sorted(names)}}
    path.touch(mode=0o600)
    with path.open("w") as f:
        _yaml("safe").dump(doc, f)
    return Secrets.load(path)


# ---- choosing the workshops --------------------------------------------------------------------

def rendered_sizes(root: Path, secrets: Secrets) -> dict[str, int | str]:
    """Bytes one seat's rendered files weigh, per workshop; why not, for one that does not
    validate or render."""
    catalog, found = validate(root)
    errors = [d for d in found if d.is_error]
    outside = [d for d in errors if not d.path.startswith("catalog/workshops/")]
    if outside:
        raise SystemExit("the bench catalog has errors:\n" + "\n".join(d.text() for d in outside))
    sizes: dict[str, int | str] = {}
    for key in sorted(catalog.workshops):
        mine = [d for d in errors if d.path.startswith(f"catalog/workshops/{key}/")]
        if mine:
            sizes[key] = f"{len(mine)} validation errors, first: {mine[0].code}"
            continue
        try:
            files = seat_content(catalog, key, catalog.workshops[key].seats.first,
                                 new_password(), "bench", secrets)
        except Exception as exc:  # a corpus workshop that does not render is skipped
            sizes[key] = f"does not render: {exc}"
            continue
        sizes[key] = sum(len(f.data) for f in files)
    return sizes


def largest(folders: list[Path], lab: Lab, imported: Path | None, scratch: Path,
            only: str | None = None) -> tuple[Path, int, dict[str, int | str]]:
    """The workshop of `folders` with the most rendered bytes among those that validate and
    render, tried in a scratch catalog (each in a range of its own: no overlap errors)."""
    width = SEATS // max(len(folders), 1)
    write_base(scratch, lab, imported)
    for n, folder in enumerate(folders):
        add_workshop(scratch, folder, folder.name, n * width + 1, (n + 1) * width)
    sizes = rendered_sizes(scratch, write_secrets(scratch, scratch.parent / "scratch.yaml"))
    usable = {k: v for k, v in sizes.items() if isinstance(v, int) and (only in (None, k))}
    if not usable:
        raise SystemExit(f"no workshop usable among {sorted(sizes)}: {sizes}")
    key = max(usable, key=lambda k: usable[k])
    return next(f for f in folders if f.name == key), usable[key], sizes


def import_corpus(tmp: Path, corpus: Path | None) -> Path | None:
    """WoD's public workshops as a wodsync catalog (`wodsync import`); None when absent."""
    wod = corpus / "wod-notebooks" if corpus else None
    if wod is None or corpus is None or not wod.is_dir():
        return None
    out = tmp / "imported"
    argv = [WODSYNC, "import", str(wod), "--out", str(out), "--location", "bench"]
    for name in ("wod-install-group_vars-all.yml", "wod-backend-group_vars-all.yml"):
        if (corpus / name).exists():
            argv += ["--vars", str(corpus / name)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"wodsync import failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return out


@dataclass
class Bench:
    """The workshops measured: key → (source folder, rendered bytes), in order."""

    workshops: dict[str, tuple[Path, int]] = field(default_factory=dict)


def choose(lab: Lab, imported: Path | None, corpus_key: str | None) -> Bench:
    bench = Bench()
    examples = sorted(p for p in (PROJECT / "catalog/workshops").iterdir() if p.is_dir())
    folder, size, sizes = largest(examples, lab, imported, lab.tmp / "scratch-a")
    print(f"(a) example catalog, rendered bytes per seat: {_sizes(sizes)}")
    bench.workshops[folder.name] = (folder, size)
    if imported is None:
        print("(b) skipped: WoD's corpus is absent (--corpus, or --no-corpus given)")
        return bench
    corpus = sorted(p for p in (imported / "catalog/workshops").iterdir() if p.is_dir())
    folder, size, sizes = largest(corpus, lab, imported, lab.tmp / "scratch-b", corpus_key)
    usable = sum(isinstance(v, int) for v in sizes.values())
    print(f"(b) WoD corpus via wodsync import: {usable} of {len(sizes)} workshops validate "
          f"and render here; the largest is used")
    for key, why in sizes.items():
        if not isinstance(why, int):
            print(f"      {key}: {why[:110]}")
    key = folder.name if folder.name not in bench.workshops else folder.name + "-WoD"
    bench.workshops[key] = (folder, size)
    return bench


def _sizes(sizes: dict[str, int | str]) -> str:
    return ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} ({v})"
                     for k, v in sizes.items())


# ---- statistics --------------------------------------------------------------------------------

def p50(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def p99(values: list[float]) -> float:
    """Nearest rank: with 50 values, the slowest."""
    ranked = sorted(values)
    return ranked[max(math.ceil(0.99 * len(ranked)) - 1, 0)] if ranked else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f} ms"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


# ---- in-process CREATE and CLEANUP -------------------------------------------------------------

class Recording(Connections):
    """Connections that keep each seat operation's host timings (the service returns a
    CREATE's, not a CLEANUP's)."""

    def __init__(self) -> None:
        super().__init__()
        self.timings: dict[str, list[dict[str, float]]] = {}
        self.walls: dict[str, list[float]] = {}   # the whole round trip, seen from here

    def call(self, name: str, host: Any, op: str, payload: dict[str, Any]) -> Any:
        began = time.perf_counter()
        answer = super().call(name, host, op, payload)
        self.walls.setdefault(op, []).append(time.perf_counter() - began)
        for one in answer.get("seats", [answer]) if isinstance(answer, dict) else []:
            if "timings" in one:
                self.timings.setdefault(op, []).append(dict(one["timings"]))
        return answer


OPENED = [0]


def count_connections() -> None:
    original = connections_module.connect

    def counted(name: str, host: Any) -> Any:
        OPENED[0] += 1
        return original(name, host)

    connections_module.connect = counted


@dataclass
class Sequential:
    key: str
    created: list[Created]
    cleanups: list[float]
    resets: list[float]
    failures: list[str]
    create_steps: list[dict[str, float]]
    cleanup_steps: list[dict[str, float]]
    create_walls: list[float]
    usable: list[float]      # the request to a working lab, wall time, one per CREATE


def participant(n: int, tag: str) -> Participant:
    return Participant(f"Bench {n}", f"bench{n}-{tag.lower()}@example.org", "Bench")


def sequential(service: SessionService, conns: Recording, key: str, count: int) -> Sequential:
    """`count` CREATEs one after the other, then a CLEANUP of each (a held seat is RESET
    afterwards, timed apart, so the seat is free again)."""
    conns.timings.clear()
    conns.walls.clear()
    created, failures, usable = [], [], []
    for n in range(count):
        began = time.perf_counter()
        try:
            one = service.create(key, participant(n, key))
            lab_works(one)
        except Exception as exc:  # counted and shown: a failed CREATE is a finding
            failures.append(f"CREATE {n}: {type(exc).__name__}: {exc}")
            continue
        usable.append(time.perf_counter() - began)
        created.append(one)
    cleanups, resets = [], []
    for c in created:
        began = time.perf_counter()
        ended = service.cleanup(c.session.id)
        cleanups.append(time.perf_counter() - began)
        if ended.state == SessionState.HELD:
            began = time.perf_counter()
            ended = service.reset(ended.id)
            resets.append(time.perf_counter() - began)
        if ended.state != SessionState.ENDED:
            failures.append(f"CLEANUP of {c.session.username}: {ended.state} {ended.error}")
    return Sequential(key, created, cleanups, resets, failures,
                      conns.timings.get("seat_create", []), conns.timings.get("seat_end", []),
                      conns.walls.get("seat_create", []), usable)


def lab_works(created: Created) -> None:
    """Returns once the participant can work: logged in at the hub with the CREATE's
    credentials, the seat's server ready, JupyterLab answering and listing the home."""
    assert created.url is not None, "the bench host has a hub"
    base, user = created.url.rstrip("/"), created.session.username
    s, xsrf = login(base, user, created.session.password)
    api = f"{base}/hub/api/users/{user}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the CREATE asked for the server: wait until ready
        model = s.get(api, headers={"X-XSRFToken": xsrf}, timeout=30).json()
        if ((model.get("servers") or {}).get("") or {}).get("ready"):
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"the server of {user} was not ready within 180 s")
    read_contents(s, base, user, "")


def report_sequential(run: Sequential, size: int, label: str) -> dict[str, float]:
    usable = run.usable
    whole = [c.seconds for c in run.created]
    print(f"{label} {run.key}: {len(run.created)} sequential CREATEs, {size} rendered bytes "
          f"per seat, {len(run.failures)} failures")
    for failure in run.failures[:5]:
        print(f"      {failure[:200]}")
    print(f"  seat usable (wall: request → logged in, server ready, JupyterLab lists the home) "
          f"p50 {ms(p50(usable))}  p99 {ms(p99(usable))}")
    print(f"  CREATE answered (wall, from here)  p50 {ms(p50(whole))}  p99 {ms(p99(whole))}")
    if len(run.create_walls) == len(whole):
        hosts = [sum(c.timings.values()) for c in run.created]
        trip = [w - h for w, h in zip(run.create_walls, hosts, strict=True)]
        local = [w - c for w, c in zip(whole, run.create_walls, strict=True)]
        print(f"    of which here: render + store p50 {ms(p50(local))}; SSH + agent start "
              f"(round trip minus host steps) p50 {ms(p50(trip))}")
    print(f"  CLEANUP                p50 {ms(p50(run.cleanups))}  p99 {ms(p99(run.cleanups))}"
          f"   target p50 ≤ 500 ms {verdict(p50(run.cleanups), 0.5)}"
          + (" (a reset workshop: the seat is held, not emptied)" if run.resets else ""))
    rest = [sum(t.values()) - t.get("stop server", 0.0) for t in run.cleanup_steps]
    print(f"    CLEANUP on the host without its stop server step: p50 {ms(p50(rest))}")
    if run.resets:
        print(f"  RESET (held seat freed) p50 {ms(p50(run.resets))}  p99 {ms(p99(run.resets))}")
    return {"usable": p50(usable)}


def report_steps(title: str, runs: list[tuple[str, list[dict[str, float]]]]) -> None:
    """Median per step, in the order the host runs them, one column per workshop."""
    order: list[str] = []
    for _, timings in runs:
        for t in timings:
            order += [s for s in t if s not in order]
    print(f"{title} (median per step on the host, ms):")
    print("  " + " " * 18 + "".join(f"{key[:22]:>24}" for key, _ in runs))
    for step in order:
        cells = [p50([t[step] for t in timings if step in t]) * 1000 for _, timings in runs]
        print(f"  {step:<18}" + "".join(f"{c:24.1f}" if c == c else f"{'-':>24}"
                                        for c in cells))


# ---- the HTTP API ------------------------------------------------------------------------------

class Serve:
    """`wodsync serve` in a process of its own, ready when /healthz answers."""

    def __init__(self, root: Path, state: Path, secrets: Path,
                 env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.state = state
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [WODSYNC, "serve", "--root", str(root), "--state", str(state),
                     "--secrets", str(secrets), "--listen", f"127.0.0.1:{self.port}",
                     "--expiry-interval", "3600"]
        self.log_path = state.parent / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        env = dict(os.environ, WODSYNC_API_TOKEN=API_TOKEN, **self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return self
            time.sleep(0.1)
        raise SystemExit("wodsync serve did not start:\n" + self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.base + path, timeout=900,
                                headers={"Authorization": f"Bearer {API_TOKEN}"}, **kw)


def at_once(requests_: list[tuple[str, str, dict[str, Any] | None]],
            server: Serve) -> tuple[float, list[Any]]:
    """One thread per (method, path, JSON body), all sent at the same instant; the wall time
    until the last answer, and the answers (or the exception a request raised)."""
    answers: list[Any] = [None] * len(requests_)
    gate = threading.Barrier(len(requests_) + 1)

    def one(n: int) -> None:
        method, path, body = requests_[n]
        gate.wait()
        try:
            answers[n] = server.call(method, path, json=body)
        except requests.RequestException as exc:
            answers[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(requests_))]
    for t in threads:
        t.start()
    gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began, answers


def concurrent(server: Serve, key: str, count: int, tag: str = "") -> tuple[float, list[Any]]:
    """`count` threads POST a CREATE at the same instant; the wall time until the last answer."""
    return at_once([("POST", "/api/v1/sessions", {
        "workshop": key, "participant": {"name": f"Http {n}", "company": "Bench",
                                         "email": f"http{n}{tag}@example.org"}})
        for n in range(count)], server)


def check_store(state: Path, ok: list[dict[str, Any]]) -> list[str]:
    """What the store says after the burst: every session answered is live and active, and no
    seat is held by two live sessions."""
    store = open_store(None, state_dir=state)
    try:
        live = store.sessions.find(live=True)
    finally:
        store.close()
    problems = []
    seats = [(s.host, s.seat) for s in live]
    if len(set(seats)) != len(seats):
        problems.append(f"a seat given twice: {len(seats) - len(set(seats))} duplicates")
    missing = {a["id"] for a in ok} - {s.id for s in live}
    if missing:
        problems.append(f"{len(missing)} sessions answered 201 are not live in the store")
    answered = {a["id"] for a in ok}  # a held seat of an earlier burst is live, not active
    inactive = [s for s in live if s.id in answered and s.state != SessionState.ACTIVE]
    if inactive:
        problems.append(f"{len(inactive)} live sessions not active ({inactive[0].state})")
    return problems


def servers_asked(hub_port: int, users: list[str], began: float,
                  limit: float = 180.0, ready: bool = False) -> tuple[int, float | None]:
    """How many of the burst's seats have a server (starting or running; with `ready`: ready)
    on the hub, polled until all do (the ones a busy hub deferred are asked for again by the
    service's loop); and when that was, counted from `began`."""
    api = f"http://127.0.0.1:{hub_port}/hub/api/users"
    headers = {"Authorization": f"token {os.environ['HUB_BENCH_TOKEN']}"}
    wanted, have = set(users), 0

    def counts(user: dict[str, Any]) -> bool:
        server = (user.get("servers") or {}).get("")
        return bool(server and (server.get("ready") or not ready))

    while time.perf_counter() - began < limit:
        listing = requests.get(api, headers=headers, timeout=60,
                               params={"limit": SEATS}).json()
        have = sum(1 for u in listing if u["name"] in wanted and counts(u))
        if have == len(wanted):
            return have, time.perf_counter() - began
        time.sleep(0.5)
    return have, None


def http_phase(root: Path, tmp: Path, secrets: Path, key: str, count: int,
               hub_port: int) -> None:
    """The CREATE burst and its figures; then the CLEANUP burst of its sessions; then, for
    the comparison in the same run, another CREATE burst whose sessions end each in a call
    of its own (a `wodsync serve` with `SINGLE_ENDS` set, on the same store)."""
    state = tmp / "serve-state"
    state.mkdir()
    server = Serve(root, state, secrets).start()
    try:
        ok = create_burst(server, key, count, hub_port, "")
        burst = cleanup_burst(server, ok)
        again = create_burst(server, key, count, hub_port, "-again")
    finally:
        server.stop()
    single = Serve(root, state, secrets, env={SINGLE_ENDS: "1"}).start()
    try:
        alone = cleanup_burst(single, again)
    finally:
        single.stop()
    print(f"{count} concurrent CLEANUPs through the API (one thread each, every seat's "
          "server asked for before):")
    print(f"  ends bursting (seat_end calls shared)   {burst:7.2f} s  target ≤ 5 s "
          f"{verdict(burst, 5.0)}")
    print(f"  each end in a call of its own (before)  {alone:7.2f} s  "
          f"({alone / burst:.1f}× the burst's time)")
    reset_held(root, state, secrets)


def create_burst(server: Serve, key: str, count: int, hub_port: int,
                 tag: str) -> list[dict[str, Any]]:
    """`count` CREATEs at once, their figures printed; returns the sessions created, once
    every one's server was asked for (the state a CLEANUP burst then meets)."""
    began = time.perf_counter()
    wall, answers = concurrent(server, key, count, tag)
    ok = [a.json() for a in answers
          if isinstance(a, requests.Response) and a.status_code == 201]
    failed = [a for a in answers if not (isinstance(a, requests.Response)
                                         and a.status_code == 201)]
    problems = check_store(server.state, ok)
    starts, deferred = start_requests(server, ok)
    print(f"HTTP API: {count} concurrent CREATEs of {key} (wodsync serve, one thread each)"
          + (f" [{tag.strip('-')}]" if tag else ""))
    print(f"  wall time {wall:7.2f} s  target ≤ 5 s {verdict(wall, 5.0)}; "
          f"{len(ok)} created, {len(failed)} failed; "
          f"seats distinct: {len({(a['host'], a['seat']) for a in ok}) == len(ok)}")
    for a in failed[:3]:
        print(f"      {_failure(a)}")
    if starts:
        print(f"  their server start requests (host step, where among the 3 slowest): p50 "
              f"{ms(p50(starts))}, max {ms(max(starts))}")
    print(f"  server starts deferred by the hub's spawn_limit: {deferred} of {len(ok)}")
    have, when = servers_asked(hub_port, [a["credentials"]["username"] for a in ok], began)
    print(f"  every seat's server asked for (the deferred ones again by the service's loop, "
          f"every {DEFERRED_EVERY:g} s): " + (f"{when:.1f} s after the burst began"
                                             if when is not None else
                                             f"only {have} of {len(ok)} within 180 s"))
    print("  store check: " + ("; ".join(problems) if problems else
                               "no seat twice, every session answered is active"))
    waited = time.perf_counter()
    users = [a["credentials"]["username"] for a in ok]
    have, when = servers_asked(hub_port, users, waited, 120.0, ready=True)
    print(f"  servers ready before their CLEANUPs: {have} of {len(ok)}"
          + (f" ({when:.1f} s more)" if when is not None else " (waited 120 s)"))
    return ok


def reset_held(root: Path, state: Path, secrets_path: Path) -> None:
    """Seats a `reset: true` workshop holds after CLEANUP get their RESET (and its hook, which
    may undo what the `create` hook made outside the home), in this process."""
    secrets = Secrets.load(secrets_path)
    deployment = working_tree_deployment(root, secrets)
    store = open_store(None, state_dir=state)
    service = SessionService(store, lambda: deployment)
    try:
        for held in store.sessions.find(state=SessionState.HELD):
            service.reset(held.id)
    finally:
        service.connections.close()
        store.close()


def start_requests(server: Serve, ok: list[dict[str, Any]]) -> tuple[list[float], int]:
    """Each CREATE's `start server` step when it was among the three slowest host steps the
    service writes into the `active` event's message; and how many starts the hub deferred
    (the message's note)."""
    found, deferred = [], 0
    for answer in ok:
        shown = server.call("GET", f"/api/v1/sessions/{answer['id']}").json()
        for event in shown.get("history", []):
            match = re.search(rf"{START} ([0-9.]+)", event.get("message", ""))
            if match:
                found.append(float(match.group(1)))
            deferred += "server start deferred" in event.get("message", "")
    return found, deferred


def _failure(answer: Any) -> str:
    if isinstance(answer, requests.Response):
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    return f"{type(answer).__name__}: {answer}"


def cleanup_burst(server: Serve, ok: list[dict[str, Any]]) -> float:
    """A CLEANUP of every session in `ok` through the API, all at the same instant; the wall
    time until the last answer. Each must be ended (200), none pending on its host."""
    wall, done = at_once([("DELETE", f"/api/v1/sessions/{a['id']}", None) for a in ok], server)
    bad = [d for d in done if not (isinstance(d, requests.Response) and d.status_code == 200)]
    print(f"  {len(ok)} CLEANUPs at once ({'each alone' if server.env else 'bursting'}): "
          f"{wall:.2f} s, {len(bad)} not ended" + (f" ({_failure(bad[0])})" if bad else ""))
    return wall


# ---- the run -----------------------------------------------------------------------------------

def apply(root: Path, state: Path, secrets: Path) -> float:
    argv = [WODSYNC, "apply", "--yes", "--root", str(root), "--state", str(state),
            "--secrets", str(secrets)]
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"wodsync apply failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return elapsed


def build(lab: Lab, bench: Bench, imported: Path | None) -> tuple[Path, Path]:
    """The catalog converged and measured: each chosen workshop with 200 seats of its own."""
    root = lab.tmp / "repo"
    write_base(root, lab, imported)
    for n, (key, (folder, _)) in enumerate(bench.workshops.items()):
        add_workshop(root, folder, key, n * RANGE + 1, (n + 1) * RANGE)
    secrets = lab.tmp / "secrets.yaml"
    write_secrets(root, secrets)
    return root, secrets


def in_process(root: Path, state: Path, secrets_path: Path, bench: Bench,
               count: int, probes: int) -> list[Sequential]:
    secrets = Secrets.load(secrets_path)
    deployment = working_tree_deployment(root, secrets)
    store = open_store(None, state_dir=state)
    conns = Recording()
    service = SessionService(store, lambda: deployment, conns)
    runs = []
    try:
        for label, (key, (_, size)) in zip("ab", bench.workshops.items(), strict=False):
            run = sequential(service, conns, key, count)
            report_sequential(run, size, f"({label})")
            runs.append(run)
        print(f"  SSH connections opened by the service for all of it: {OPENED[0]}")
        probe_round_trips(conns, deployment, probes)
    finally:
        conns.close()
        store.close()
    return runs


def probe_round_trips(conns: Connections, deployment: Any, repeat: int) -> None:
    """What one round trip costs before the agent does anything: an exec channel on the open
    connection (`true`), a bare `python3`, and the agent answering `version` (its bundle
    decompressed and the agent imported, as for every operation)."""
    name = next(iter(deployment.catalog.hosts))
    host = deployment.catalog.hosts[name]
    request = json.dumps({"bundle": remote.bundle(), "request": {
        "protocol": PROTOCOL, "op": "version", "payload": {}}}).encode() + b"\n"
    probes = {"exec channel (true)": (["true"], b""),
              "python3 -c pass": (["python3", "-c", "pass"], b""),
              "agent `version`": (["python3", "-c", remote.LOADER], request)}
    found = {}
    with conns.transport(name, host) as transport:
        for label, (argv, stdin) in probes.items():
            walls = []
            for _ in range(repeat):
                began = time.perf_counter()
                transport.run(argv, stdin)
                walls.append(time.perf_counter() - began)
            found[label] = p50(walls)
    print("  one round trip on the open connection, p50: " + "; ".join(
        f"{label} {seconds * 1000:.0f} ms" for label, seconds in found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seats", type=int, default=MAX_SEATS, help="The pool's seats.")
    parser.add_argument("--creates", type=int, default=20, help="Sequential CREATEs per "
                        "workshop.")
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="WoD's corpus (wod-notebooks/ and group_vars).")
    parser.add_argument("--no-corpus", action="store_true", help="Skip workshop (b).")
    parser.add_argument("--probes", type=int, default=20,
                        help="Round trips timed per probe (exec channel, python3, agent).")
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--corpus-workshop", help="Corpus workshop to use (default: the "
                        "largest that validates and renders).")
    parser.add_argument("--hub-prefix", default="/opt/wodsync-test/hub",
                        help="Hub environment (created by wodsync when missing).")
    parser.add_argument("--force", action="store_true", help="Run even beside pytest.")
    parser.add_argument("--api-only", action="store_true", help="Only the HTTP API's bursts "
                        "(no sequential CREATEs, no breakdowns).")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes accounts and runs a hub")
    if pytest_running() and not args.force:
        raise SystemExit("a pytest run is in progress; wait for it:\n  "
                         + "\n  ".join(pytest_running()))
    global SEATS, RANGE
    if not 2 <= args.seats <= MAX_SEATS:
        raise SystemExit(f"--seats between 2 and {MAX_SEATS}: the bench's uid range")
    SEATS, RANGE = args.seats, min(RANGE, args.seats // 2)
    if min(args.creates, RANGE) != args.creates or args.concurrent > RANGE:
        raise SystemExit(f"at most {RANGE} sessions per workshop")
    os.environ.setdefault("HUB_BENCH_TOKEN", "wodbs-hub-" + os.urandom(12).hex())
    count_connections()
    with tempfile.TemporaryDirectory(prefix="wodbs-") as tmpdir:
        tmp = Path(tmpdir)
        remove_accounts()
        HOMES.mkdir(mode=0o755)
        had_remotes = GIT_REMOTES.exists()
        server = None
        try:
            server = start_sshd(tmp / "sshd")
            run(Lab(tmp, server, hub_ports(), args.hub_prefix), args)
        finally:
            stop_bench_hub(tmp / "hubdata")
            remove_accounts()
            remove_hook_leftovers(had_remotes)
            if server is not None:
                server.stop()


def run(lab: Lab, args: argparse.Namespace) -> None:
    imported = import_corpus(lab.tmp, None if args.no_corpus else args.corpus)
    bench = choose(lab, imported, args.corpus_workshop)
    root, secrets = build(lab, bench, imported)
    state = lab.tmp / "state"
    converge = apply(root, state, secrets)
    print(f"host: {SEATS} seats over loopback sshd, JupyterHub managed by wodsync "
          f"({lab.hub_prefix}); wodsync apply converged it in {converge:.1f} s")
    key = next(iter(bench.workshops))
    if args.api_only:
        http_phase(root, lab.tmp, secrets, key, args.concurrent, lab.ports["port"])
        return
    runs = in_process(root, state, secrets, bench, args.creates, args.probes)
    http_phase(root, lab.tmp, secrets, key, args.concurrent, lab.ports["port"])
    report_steps("where a CREATE's time goes", [(r.key, r.create_steps) for r in runs])
    report_steps("where a CLEANUP's time goes", [(r.key, r.cleanup_steps) for r in runs])


if __name__ == "__main__":
    main()
