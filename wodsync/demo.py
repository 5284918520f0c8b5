"""`wodsync demo`: a working WoD host on this machine, from the example catalog, in one command.

The demo is the ordinary pipeline pointed at a local host. It writes a demo repository (the
catalog and templates of the given root, plus a local host file and a pool sized for the demo
location) under the demo folder, converges it with the engine (accounts, system files, the hub
environment from PyPI, configurable-http-proxy from npm, the hub service, hub users and
groups), then creates a real session of the first workshop — the same CREATE the API and
`wodsync session create` run — for a demo participant. Everything it makes lives under the demo
folder, except the Linux accounts and system files the catalog declares. Rerunning it converges
again and finds the same live session: the same seat and password.
"""

from __future__ import annotations

import secrets as pysecrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from wodsync.catalog import validate
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import SecretRef
from wodsync.catalog.yamlfile import dump_yaml
from wodsync.diagnostics import Diagnostic, format_diagnostics, has_errors
from wodsync.engine import remote
from wodsync.engine.desired import desired_state
from wodsync.engine.planfile import Revision
from wodsync.engine.reconcile import HostResult, Target, reconcile
from wodsync.engine.transport import LocalTransport
from wodsync.secrets import Secrets
from wodsync.sessions.service import Deployment, Duplicate, SessionError, SessionService
from wodsync.store import Participant, Session, open_store

HOST = "demo"
TOKEN_SECRET = "DEMO_HUB_TOKEN"
CONTROLLER_STATE = "controller"
DEMO_EMAIL = "demo@wodsync.invalid"


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    root: Path
    folder: Path
    port: int = 8000
    location: str | None = None
    hub_prefix: Path | None = None
    pool_prefix: str | None = None
    uid_base: int | None = None


@dataclass(frozen=True)
class DemoResult:
    url: str
    username: str
    password: str
    workshop: str
    results: list[HostResult]
    state: Path
    root: Path
    session: str

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "username": self.username, "password": self.password,
                "state": str(self.state), "root": str(self.root), "session": self.session}


def _secret_names(catalog: Catalog) -> set[str]:
    """Every secret the catalog references: variables of all layers and hub tokens."""
    layers = [catalog.variables, *(ws.variables for ws in catalog.workshops.values()),
              *(h.variables for h in catalog.hosts.values())]
    names = {v.secret for layer in layers for v in layer.values() if isinstance(v, SecretRef)}
    return names | {h.hub.token.secret for h in catalog.hosts.values() if h.hub and h.hub.token}


def _secrets(folder: Path, catalog: Catalog) -> Path:
    """Random values for every secret the demo catalog references, kept between runs, each
    granted to what uses it: a workshop's own, a host's (its hub token, its variables, also for
    the workshops it runs) and the global variables' (everyone), in the scoped format."""
    path = folder / "secrets.yaml"
    kept = (YAML(typ="safe").load(path.read_text()) or {}) if path.exists() else {}
    kept = kept.get("secrets", kept) if isinstance(kept, dict) else {}  # older demos: NAME: value
    grants = {name: {"workshops": set(), "hosts": set()} for name in _secret_names(catalog)}

    def grant(layer: dict[str, Any], workshops: list[str], hosts: list[str]) -> None:
        for name in (v.secret for v in layer.values() if isinstance(v, SecretRef)):
            grants[name]["workshops"].update(workshops)
            grants[name]["hosts"].update(hosts)

    grant(catalog.variables, list(catalog.workshops), list(catalog.hosts))
    for key, ws in catalog.workshops.items():
        grant(ws.variables, [key], [])
    for name, host in catalog.hosts.items():
        grant(host.variables, [k for k, ws in catalog.workshops.items()
                               if host.location in (ws.location, *ws.alternate_locations)], [name])
        if host.hub and host.hub.token:
            grants[host.hub.token.secret]["hosts"].add(name)
    entries = {}
    for name, who in sorted(grants.items()):
        old = kept.get(name)
        value = old.get("value") if isinstance(old, dict) else old
        entries[name] = {"value": str(value or pysecrets.token_hex(24)),
                         **{k: sorted(v) for k, v in who.items() if v}}
    path.touch(mode=0o600)
    path.chmod(0o600)  # also a file an older demo or an editor left readable
    path.write_text(dump_yaml({"secrets": entries}, "# demo secrets written by `wodsync demo`"))
    return path


def _location(opts: DemoOptions, catalog: Catalog) -> str:
    if opts.location:
        if opts.location not in catalog.locations:
            raise DemoError(f"unknown location '{opts.location}'")
        return opts.location
    counts = {loc: sum(ws.location == loc for ws in catalog.workshops.values())
              for loc in catalog.locations}
    return max(sorted(counts), key=lambda loc: counts[loc])


def _write_repo(opts: DemoOptions, catalog: Catalog, location: str) -> Path:
    """The demo repository: the root's catalog and templates, a demo pool, one local host."""
    repo = opts.folder / "repo"
    for part in ("catalog", "templates"):
        shutil.rmtree(repo / part, ignore_errors=True)
        shutil.copytree(opts.root / part, repo / part, symlinks=True)
    shutil.rmtree(repo / "hosts", ignore_errors=True)
    (repo / "hosts").mkdir(parents=True)
    pool_name = next(iter(sorted(catalog.pools)))
    pool = catalog.pools[pool_name].model_dump(exclude_none=True)
    here = [ws for ws in catalog.workshops.values()
            if location in (ws.location, *ws.alternate_locations)]
    pool["last"] = max([ws.seats.last for ws in here] or [pool["first"]])
    pool["home_root"] = str(opts.folder / "home")
    if opts.pool_prefix:
        pool["prefix"] = opts.pool_prefix
    if opts.uid_base is not None:
        pool["uid_base"] = pool["gid_base"] = opts.uid_base
    (repo / "catalog/students.yaml").write_text(dump_yaml({"pools": {pool_name: pool}}))
    # The demo's machine may have no systemd (a container): wodsync runs the hub itself.
    hub = {"service": "process", "prefix": str(opts.hub_prefix or opts.folder / "hub"),
           "config_dir": str(opts.folder / "etc"), "data_dir": str(opts.folder / "data"),
           "port": opts.port, "proxy_api_port": opts.port + 1, "hub_port": opts.port + 2,
           "token": {"secret": TOKEN_SECRET}}
    host: dict[str, Any] = {"address": "localhost", "transport": "local",
                            "location": location, "pool": pool_name,
                            "state_dir": str(opts.folder / "state"), "hub": hub}
    siblings = sorted(catalog.hosts_in(location).items())
    if siblings:  # workshops of the location may need its hosts' variables
        host["variables"] = siblings[0][1].model_dump(mode="json")["variables"]
    (repo / "hosts" / f"{HOST}.yaml").write_text(dump_yaml(host, "# written by `wodsync demo`"))
    return repo


def _ensure_npm(say: Callable[[str], None]) -> None:
    """configurable-http-proxy comes from npm; Debian's nodejs and npm when npm is missing."""
    if shutil.which("npm"):
        return
    say("installing nodejs and npm (apt)")
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"],
                          capture_output=True, text=True, env={"DEBIAN_FRONTEND":
                                                                "noninteractive",
                                                                "PATH": "/usr/sbin:/usr/bin:"
                                                                        "/sbin:/bin"})
    if done.returncode != 0:
        raise DemoError(f"could not install nodejs and npm: {done.stderr.strip()[-500:]}")


def _validated(root: Path) -> tuple[Catalog, list[Diagnostic]]:
    catalog, found = validate(root)
    if has_errors(found):
        raise DemoError("the catalog has errors:\n" + format_diagnostics(
            [d for d in found if d.is_error], "text"))
    return catalog, found


def _workshop(catalog: Catalog, location: str) -> str:
    """The demo's workshop: the first (by priority) active one of the location."""
    return min((k for k, ws in catalog.workshops.items() if ws.location == location and ws.active),
               key=lambda k: (catalog.workshops[k].priority, k))


def _service(opts: DemoOptions, catalog: Catalog, secrets: Secrets, repo: Path,
             ) -> SessionService:
    deployment = Deployment(catalog, str(Revision.of(repo)), secrets)
    store = open_store(state_dir=opts.folder / CONTROLLER_STATE)
    return SessionService(store, lambda: deployment)


def _demo_session(service: SessionService, key: str) -> Session:
    """A real CREATE for the demo participant; a rerun finds the same live session."""
    try:
        return service.create(key, Participant("Demo participant", DEMO_EMAIL,
                                               "wodsync demo")).session
    except Duplicate as exc:
        assert exc.session is not None
        return exc.session
    except SessionError as exc:
        raise DemoError(f"the demo session could not be created: {exc}") from None


def run_demo(opts: DemoOptions, say: Callable[[str], None]) -> DemoResult:
    opts.folder.mkdir(parents=True, exist_ok=True)
    opts.folder.chmod(0o755)  # students' homes live below it
    catalog, _ = _validated(opts.root)
    location = _location(opts, catalog)
    repo = _write_repo(opts, catalog, location)
    demo_catalog, _ = _validated(repo)
    secrets_file = _secrets(opts.folder, demo_catalog)
    _ensure_npm(say)
    secrets = Secrets.load(secrets_file)
    service = _service(opts, demo_catalog, secrets, repo)
    try:
        desired = desired_state(demo_catalog, HOST, secrets, service.live_seats(HOST))
        say(f"converging the local host ({desired.pool.last - desired.pool.first + 1} seats, "
            f"location {location}); the first run installs JupyterHub and the proxy")
        results = reconcile([Target(HOST, lambda: desired)], apply=True)
        if not results[0].ok:
            raise DemoError(f"converging failed: {_why(results[0])}")
        session = _demo_session(service, _workshop(demo_catalog, location))
    finally:
        service.connections.close()
        service.store.close()
    return DemoResult(f"http://127.0.0.1:{opts.port}/", session.username, session.password,
                      session.workshop, results, opts.folder / CONTROLLER_STATE, repo,
                      session.id)


def stop_demo(opts: DemoOptions) -> dict[str, Any]:
    """Stop the demo's students' servers, hub and proxy (accounts and files stay)."""
    repo = opts.folder / "repo"
    if not (repo / "hosts" / f"{HOST}.yaml").exists():
        raise DemoError(f"no demo in {opts.folder}")
    catalog, _ = _validated(repo)
    desired = desired_state(catalog, HOST, Secrets.load(opts.folder / "secrets.yaml"))
    service, users = desired.want.get("service"), desired.want.get("hub_user")
    if service is None:
        raise DemoError("the demo host has no managed hub")
    return remote.call(LocalTransport(), "stop_hub", {
        "state_dir": desired.state_dir, "supervisor": service.supervisor,
        "data_dir": service.data_dir, "api": service.api,
        "token": users.token if users else None})


def _why(result: HostResult) -> str:
    """A failed host in words: its error, plan errors, refusal and failed phases."""
    reasons = [result.error] if result.error else []
    if result.plan:
        reasons += result.plan.errors + ([result.plan.refused] if result.plan.refused else [])
    reasons += [f"{f['phase']}: {f['error']}" for f in result.failures]
    reasons += [f"stopped before {', '.join(result.skipped)}"] if result.skipped else []
    return "; ".join(reasons) or "unknown failure"


def lines(result: DemoResult) -> Iterator[str]:
    yield f"JupyterHub: {result.url}  (from elsewhere: http://{socket.gethostname()}:" \
          f"{result.url.rsplit(':', 1)[1]})"
    yield f"username:   {result.username}"
    yield f"password:   {result.password}"
    yield f"workshop:   {result.workshop} (in the seat's home)"
