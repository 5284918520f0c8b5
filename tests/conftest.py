"""Shared fixtures (a throw-away copy of the project's example repository per test), and what
each test module shares with the others on this machine, for the markers and pytest-xdist.

`./bootstrap test` runs the suite on several xdist workers (`--dist loadgroup`, scheduled by
pytest_xdist_make_scheduler below). Tests of one group run on one worker, one after another:
a group is one host resource that two tests must not use at once (Linux accounts of one
prefix and uid range, a home root, a lab's sysctl) and keeps a module's module-scoped lab on
the worker that built it. A module with no entry in HOST_MODULES is pure (its own temporary
files only) and its tests go to any worker. Every test module must be listed in one of the
two tables, so that a new module says which it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from wodsync.cli import main

PROJECT = Path(__file__).resolve().parent.parent
# The one-host SSH lab fixtures (`sshd`, `lab`); the root tests' count and --strict-root.
# `chromium` and `page`: a real browser (browser.py).
pytest_plugins = ["enginelab", "needsroot", "browser"]
REPO_PARTS = ("catalog", "hosts", "templates", "schemas")

# Module → (xdist group, markers). Markers: `root` (needs root), `sshd` (starts an sshd),
# `hub` (starts a real JupyterHub), `pg` (uses PostgreSQL); `-m "not root"` is the fast loop.
HOST_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    # The engine lab (enginelab.py): accounts wodt* with uids 50001-50999, group wodtgrp,
    # net.ipv4.tcp_keepalive_time.
    "test_engine": ("enginelab", ("root", "sshd")),
    "test_engine_defects": ("enginelab", ("root", "sshd")),
    "test_engine_plans": ("enginelab", ("root", "sshd")),
    "test_facts": ("enginelab", ("root", "sshd")),
    # The session lab (sessionlab.py): wodtx/wodty, uids 58001-58140, its home root.
    "test_sessions": ("sessionlab", ("root", "pg")),
    "test_sessions_api": ("sessionlab", ("root", "hub")),
    # CLEANUP bursts: wodqd 41601-41606 on one local host, the API under uvicorn in-process
    "test_cleanup_burst": ("test_cleanup_burst", ("root",)),
    "test_ssh_sessions": ("sessionlab", ("root", "sshd")),  # lab1 behind a default sshd
    "test_mail_serve": ("sessionlab", ("root",)),  # mails of a real `wodsync serve`
    # Content CI (contentcilab.py): wodqc, uids 41401-41404, its home root.
    "test_contentci": ("contentcilab", ("root",)),
    "test_portal": ("sessionlab", ("root", "pg")),  # the participant's pages on its seats
    "test_hotseats": ("hotseatlab", ("root",)),  # wodqe, uids 41801-41840, own home root
    # Hot seats with a real hub (stormlab.py): wodqf seats 1-10, uids 43001-43010.
    "test_hotseats_hub": ("test_hotseats_hub", ("root", "hub")),
    # uids 55001-55050 (wodta) and 55001-55010 (wodtw) overlap.
    "test_accountsdb": ("uids-55000", ("root",)),
    "test_sweep": ("uids-55000", ("root",)),
    # Checks and scores: wodqa, uids 41001-41008, homes under /home/wodsync-test-checks.
    "test_checks": ("test_checks", ("root",)),
    # A prefix, uid range and home root each (the hub venv at hubs.HUB_PREFIX is shared:
    # hubs.hub_prefix_lock() keeps its installs apart).
    "test_handover": ("handoverlab", ("root", "sshd", "pg")),           # wodtr, 58501-58508
    "test_handover_hub": ("test_handover_hub", ("root", "hub")),      # wodtk, 59501-59520
    "test_hub": ("test_hub", ("root", "hub")),                        # wodth, 52001-52999
    "test_kernel_recipes": ("test_kernel_recipes", ("root", "hub")),  # wodtt, 56601
    "test_import_deploy": ("test_import_deploy", ("root",)),  # plan only: wodtt, 47001-47380
    "test_hub_ports": ("test_hub_ports", ("root", "hub")),            # wodtp, 57001-57050
    "test_hub_systemd": ("test_hub_systemd", ("root", "hub")),        # wodts, 54001-…
    # wodto: the hub with TLS 54801-54850, apply's progress and the public URL 54851-54860
    # (one group: the uids and the group gid 54800 are shared).
    "test_hub_tls": ("wodto", ("root", "hub")),
    "test_progress": ("wodto", ("root",)),
    "test_public_url": ("wodto", ("root",)),
    "test_demo": ("test_demo", ("root", "hub")),     # wodtd, /etc/skel, /etc/sysctl.d, …
    # The participant's host (journeylab.py): wodtj, 58301-58350, a hub and chromium.
    "test_student_polish": ("journeylab", ("root", "hub")),
    "test_journey": ("journeylab", ("root", "hub")),
    "test_daemon": ("test_daemon", ("root", "sshd", "pg")),           # wodtg, 59001-…
    # Hosts on their own clocks: wodtb, 54201-54260, a slow sshd host, a hub killed.
    "test_host_clocks": ("test_host_clocks", ("root", "sshd", "hub")),
    "test_multihost": ("test_multihost", ("root", "sshd")),           # netns wodtns*
    "test_egress": ("test_egress", ("root", "sshd")),       # netns wodteg*, wodte 53601-53650
    "test_safefs": ("test_safefs", ("root",)),                        # wodtf, 56001-56010
    "test_persistent_agent": ("test_persistent_agent", ("root", "sshd")),  # no accounts
    "test_daemon_agent": ("test_daemon_agent", ("root",)),          # wodqg, 43501-43503
    # A private PostgreSQL cluster restarted under two daemons: wodtz, 59801-59802.
    "test_writer_lock": ("test_writer_lock", ("root", "pg")),
    # A daemon whose remote moves, revisions folder turns read-only (bind mounts): wodtbq,
    # 56801-56840.
    "test_source_health": ("test_source_health", ("root",)),
    # Tokens and secrets reloaded on SIGHUP (serve, a daemon) and the session CLI over a real
    # serve: wodti, 54601-54660 (group gid 54600).
    "test_reload": ("wodti", ("root",)),
    "test_cli_api": ("wodti", ("root",)),
    "test_guard": ("test_guard", ("root",)),                          # wodtn, 53501-53508
    "test_guard_idle": ("test_guard", ("root", "hub")),               # wodtn, 53521-53524
    # wodtl, 60401-60450, cgroups wodsync/WKSHP-Wodtl* (v1 hierarchies of this machine)
    "test_limits": ("limits", ("root",)),
    "test_badges_seats": ("test_badges_seats", ("root",)),            # wodtv, 58701-58750
    "test_liveupdate": ("test_liveupdate", ("root",)),                # wodqb, 41201-41206
    # The store's lab (storelab.py): wodtc, 54401-54440.
    "test_managed_host": ("storelab", ("root", "hub")),
    "test_store_backup": ("storelab", ("root", "pg")),
    "test_replicas": ("storelab", ("root", "pg")),
    # The appliance lab (appliancelab.py): wodtq 56201-56220 on the hub host, wodtu
    # 56401-56420 and wodtuv 56431-56450 on two appliance hosts behind a loopback sshd.
    "test_appliance": ("appliancelab", ("root", "sshd")),
    "test_seat_values": ("appliancelab", ("root", "sshd")),
    # bench/*.py at their smoke size: wodb* seats, uids 40001-45999, netns hosts from .201
    "test_bench_smoke": ("test_bench_smoke", ("root", "sshd", "hub")),
    # A PostgreSQL database per module (made once, on the worker running the module).
    "test_store": ("test_store", ("pg",)),
    "test_store_secrets": ("test_store_secrets", ("pg",)),
    "test_mail": ("test_mail", ("pg",)),  # the outbox on PostgreSQL; an SMTP sink per test
    "test_badges": ("test_badges", ("pg",)),  # no accounts: sessions moved in the store
    "test_alerts": ("test_alerts", ("pg",)),  # episodes on both databases; no accounts
    "test_wodapi": ("test_wodapi", ("root",)),  # WoD's api-db routes: wodtiw, 56901-56910
    "test_wodapi_ids": ("test_wodapi_ids", ("pg",)),  # WoD's numbers on PostgreSQL too
}
PURE_MODULES = {
    "test_contentci_pure",
    "test_agent_python", "test_egress_rules", "test_guard_rules", "test_events_catalog",
    "test_hotseats_store",
    "test_api", "test_burst", "test_catalog_valid", "test_cli", "test_hooks", "test_hostile",
    "test_import", "test_limits_plan", "test_logs", "test_models", "test_plan_hub",
    "test_project", "test_render_budget", "test_review", "test_liveupdate_rules",
    "test_ends",
    "test_portal_rules", "test_schedule",
    "test_rules", "test_secrets", "test_source", "test_suite", "test_templates", "test_watch",
    "test_tokens",
    "test_checks_catalog",  # checks: and check_timeout in the catalog; the score's arithmetic
}
MARKERS = {
    "sshd": "starts a real sshd on loopback (or in a network namespace)",
    "hub": "starts a real JupyterHub with configurable-http-proxy",
    "pg": "uses the PostgreSQL server that ./bootstrap test starts",
}


def pytest_configure(config: pytest.Config) -> None:
    """The markers, and every test module listed (here, not at collection: under xdist the
    controller collects nothing, and a worker's error would read as a crash)."""
    for name, why in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {why}")
    modules = {p.stem for p in Path(__file__).parent.glob("test_*.py")}
    unlisted = modules - HOST_MODULES.keys() - PURE_MODULES
    if unlisted:
        raise pytest.UsageError(
            f"tests/conftest.py does not say which host resources {sorted(unlisted)} use: "
            "add each to HOST_MODULES (with its xdist group) or to PURE_MODULES")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its module's markers (before `-m` deselects)."""
    for item in items:
        for name in HOST_MODULES.get(item.path.stem, (None, ()))[1]:
            item.add_marker(name)


def host_group(nodeid: str) -> str:
    """The unit of work a test belongs to: its module's group, else the test alone."""
    module = Path(nodeid.split("::", 1)[0]).stem
    group = HOST_MODULES.get(module, (None, ()))[0]
    return f"group:{group}" if group else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` by HOST_MODULES's groups.

    xdist's own loadgroup reads `xdist_group` marks by renaming each test's node id, which
    pytest 9 no longer lets a plugin do (the id is `Node._id` now): every test would be
    scheduled alone and two workers would build one lab at once. The same scheduling, by
    scope: largest groups first, a pure test a unit of its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class HostGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return host_group(nodeid)

    return HostGroups(config, log)


class Repo:
    """A copy of the example catalog that a test may break on purpose."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str | bytes) -> Path:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
        return target

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def replace(self, rel: str, old: str, new: str) -> None:
        text = self.read(rel)
        assert old in text, f"{old!r} not in {rel}"
        self.write(rel, text.replace(old, new, 1))

    def line_of(self, rel: str, needle: str) -> int:
        """1-based line of the first line containing `needle` (so tests assert real lines)."""
        for n, line in enumerate(self.read(rel).splitlines(), start=1):
            if needle in line:
                return n
        raise AssertionError(f"{needle!r} not in {rel}")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repo"
    root.mkdir()
    for part in REPO_PARTS:
        shutil.copytree(PROJECT / part, root / part, symlinks=True)
    return Repo(root)


@pytest.fixture
def cli() -> Callable[..., Result]:
    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return run
