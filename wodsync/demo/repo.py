"""The demo's repository: the example catalog and templates, a pool sized for the demo location
and one local host, committed to a git repository the demo's daemon follows; and the demo's
secrets file (every secret the catalog names, granted to what uses it, plus the controller's own
tokens), kept between runs.
"""

from __future__ import annotations

import secrets as pysecrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from wodsync.catalog import validate
from wodsync.catalog.loader import Catalog
from wodsync.catalog.models import SecretRef
from wodsync.catalog.yamlfile import dump_yaml
from wodsync.diagnostics import Diagnostic, format_diagnostics, has_errors

HOST = "demo"
TOKEN_SECRET = "DEMO_HUB_TOKEN"
CONTROLLER_STATE = "controller"
DEMO_EMAIL = "demo@wodsync.invalid"
CONTROLLER_SECRETS = ("WODSYNC_API_TOKEN", "WODSYNC_WEBHOOK_SECRET", "WODSYNC_FACTS_TOKEN")
BADGES_KEY = "WODSYNC_BADGES_KEY"  # wodsync.badges.keys.KEY_SECRET
GIT = ["git", "-c", "user.name=wodsync demo", "-c", "user.email=demo@wodsync.invalid"]


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class DemoOptions:
    root: Path
    folder: Path
    port: int = 8000
    api_port: int = 8080
    mail_port: int = 2525
    location: str | None = None
    hub_prefix: Path | None = None
    pool_prefix: str | None = None
    uid_base: int | None = None
    force_manager: bool = False  # the demo's daemon takes over a host another store manages


def secret_names(catalog: Catalog) -> set[str]:
    """Every secret the catalog references: variables of all layers and hub tokens."""
    layers = [catalog.variables, *(ws.variables for ws in catalog.workshops.values()),
              *(h.variables for h in catalog.hosts.values())]
    names = {v.secret for layer in layers for v in layer.values() if isinstance(v, SecretRef)}
    return names | {h.hub.token.secret for h in catalog.hosts.values() if h.hub and h.hub.token}


def write_secrets(folder: Path, catalog: Catalog) -> Path:
    """Random values for every secret the demo catalog references, kept between runs, each
    granted to what uses it: a workshop's own, a host's (its hub token, its variables, also for
    the workshops it runs) and the global variables' (everyone), in the scoped format."""
    path = folder / "secrets.yaml"
    kept = (YAML(typ="safe").load(path.read_text()) or {}) if path.exists() else {}
    kept = kept.get("secrets", kept) if isinstance(kept, dict) else {}  # older demos: NAME: value
    grants: dict[str, dict[str, set[str]]] = {
        name: {"workshops": set(), "hosts": set()} for name in secret_names(catalog)}

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
    for name in CONTROLLER_SECRETS:  # the daemon's own tokens: no grant, never rendered
        grants.setdefault(name, {"workshops": set(), "hosts": set()})
    entries = {}
    for name, who in sorted(grants.items()):
        old = kept.get(name)
        value = old.get("value") if isinstance(old, dict) else old
        entries[name] = {"value": str(value or pysecrets.token_hex(24)),
                         **{k: sorted(v) for k, v in who.items() if v}}
    entries[BADGES_KEY] = badges_key(kept.get(BADGES_KEY))
    path.touch(mode=0o600)
    path.chmod(0o600)  # also a file an older demo or an editor left readable
    path.write_text(dump_yaml({"secrets": entries}, "# demo secrets written by `wodsync demo`"))
    return path


def badges_key(old: Any) -> dict[str, Any]:
    """The badges' signing key, granted to the `badges` service and kept between runs: a new
    key would leave the demo's earlier badges unverifiable."""
    from wodsync.badges.keys import SERVICE, new_key_pem

    value = old.get("value") if isinstance(old, dict) else None
    return {"value": value or new_key_pem(), "services": [SERVICE]}


def choose_location(opts: DemoOptions, catalog: Catalog) -> str:
    if opts.location:
        if opts.location not in catalog.locations:
            raise DemoError(f"unknown location '{opts.location}'")
        return opts.location
    counts = {loc: sum(ws.location == loc for ws in catalog.workshops.values())
              for loc in catalog.locations}
    return max(sorted(counts), key=lambda loc: counts[loc])


def write_repo(opts: DemoOptions, catalog: Catalog, location: str) -> Path:
    """The demo repository: the root's catalog and templates, a demo pool, one local host.
    Written on the first run only: afterwards it is the user's, who commits to it."""
    repo = opts.folder / "repo"
    if (repo / ".git").exists():
        return repo
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
    commit(repo)
    return repo


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args[:2])} in {repo} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def commit(repo: Path) -> str:
    """The demo repository is a git repository the daemon follows: what the demo wrote is
    committed (a rerun with nothing new commits nothing); the user's own commits stay."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A", "catalog", "templates", "hosts")
    if git(repo, "status", "--porcelain", "--", "catalog", "templates", "hosts"):
        git(repo, "commit", "-q", "-m", "wodsync demo: the example catalog on this machine")
    return git(repo, "rev-parse", "HEAD")


def ensure_npm(say: Callable[[str], None]) -> None:
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


def validated(root: Path) -> tuple[Catalog, list[Diagnostic]]:
    catalog, found = validate(root)
    if has_errors(found):
        raise DemoError("the catalog has errors:\n" + format_diagnostics(
            [d for d in found if d.is_error], "text"))
    return catalog, found


def demo_workshop(catalog: Catalog, location: str) -> str:
    """The demo's workshop: the first (by priority) active one of the location."""
    return min((k for k, ws in catalog.workshops.items() if ws.location == location and ws.active),
               key=lambda k: (catalog.workshops[k].priority, k))


