"""Cross-file rules: what no single file's schema can see.

Each rule takes the loaded `Catalog` and yields located diagnostics pointing at the field an
author has to change. Rules only look at entities whose own file validated, so a broken file
produces its own errors and no cascade of follow-on noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

from wodsync.catalog.appliances import appliances_fit, seat_values_compute
from wodsync.catalog.loader import (
    EVENTS_FILE,
    LOCATIONS_FILE,
    REPLAYS_FILE,
    STUDENTS_FILE,
    SYSTEM_FILE,
    TEMPLATES_DIR,
    Catalog,
)
from wodsync.catalog.models import Pool, Workshop, effective_limits
from wodsync.catalog.repofs import RepoFileError, check_repo_file
from wodsync.catalog.yamlfile import Document
from wodsync.diagnostics import Diagnostic

Rule = Callable[[Catalog], Iterator[Diagnostic]]


def seats_inside_pools(catalog: Catalog) -> Iterator[Diagnostic]:
    """A workshop's seats exist on every host it can run on (its location and alternates)."""
    if not catalog.complete("host", "students"):
        return
    for key, ws in catalog.workshops.items():
        for loc in [ws.location, *ws.alternate_locations]:
            for host_name, host in sorted(catalog.hosts_in(loc).items()):
                pool = catalog.pools.get(host.pool)
                if pool and not (pool.first <= ws.seats.first and ws.seats.last <= pool.last):
                    yield catalog.workshop_doc(key).diag(
                        "seats-outside-pool",
                        f"seats {ws.seats} are outside pool '{host.pool}' ({pool.seats}) "
                        f"of host '{host_name}' in location '{loc}'", "seats")


def seats_disjoint(catalog: Catalog) -> Iterator[Diagnostic]:
    """Two workshops of one location never share a seat (WoD's ranges overlap; ours don't).

    Both workshops of an overlapping pair get the error, so whichever file a pull request
    touches carries the annotation.
    """
    by_location: dict[str, list[tuple[str, Workshop]]] = {}
    for key, ws in sorted(catalog.workshops.items()):
        by_location.setdefault(ws.location, []).append((key, ws))
    for loc, items in by_location.items():
        for i, (key, ws) in enumerate(items):
            for other_key, other in items[:i]:
                if ws.seats.overlaps(other.seats):
                    yield _overlap(catalog, key, ws, other_key, other, loc)
                    yield _overlap(catalog, other_key, other, key, ws, loc)


def _overlap(catalog: Catalog, key: str, ws: Workshop, other_key: str, other: Workshop,
             loc: str) -> Diagnostic:
    other_doc = catalog.workshop_doc(other_key)
    line, _ = other_doc.at("seats")
    return catalog.workshop_doc(key).diag(
        "seats-overlap", f"seats {ws.seats} overlap {other_key} ({other.seats}, "
        f"{other_doc.rel}:{line}) in location '{loc}'", "seats")


def capacity_fits(catalog: Catalog) -> Iterator[Diagnostic]:
    """A workshop's capacity fits the seats its hosts offer: its range on every host of its
    location and alternates (two hosts of a location double it, and failover to an alternate
    adds the alternate's); without a host serving it, the range itself."""
    for key, ws in catalog.workshops.items():
        offered = _seats_offered(catalog, ws)
        if ws.capacity > offered:
            where = f"its hosts offer of {ws.seats}" if offered != ws.seats.size \
                else f"{ws.seats}"
            yield catalog.workshop_doc(key).diag(
                "capacity", f"capacity {ws.capacity} exceeds the {offered} seats {where}",
                "capacity")


def _seats_offered(catalog: Catalog, ws: Workshop) -> int:
    """The range on each host serving the workshop (a host whose pool does not hold the whole
    range is `seats-outside-pool`'s error, not counted twice here)."""
    hosts = sum(len(catalog.hosts_in(loc))
                for loc in dict.fromkeys([ws.location, *ws.alternate_locations]))
    total = hosts * ws.seats.size
    return total or ws.seats.size  # no host serves it yet: the range is all there is to check


def references_exist(catalog: Catalog) -> Iterator[Diagnostic]:
    """Locations, alternate locations, replays, workshops and pools named anywhere exist."""
    yield from _workshop_references(catalog)
    if catalog.complete("workshop"):
        for i, replay in enumerate(catalog.replays):
            if replay.workshop not in catalog.folders:
                yield catalog.docs[REPLAYS_FILE].diag(
                    "unknown-workshop", f"workshop '{replay.workshop}' has no folder",
                    "replays", i, "workshop")
    for name, host in catalog.hosts.items():
        doc = catalog.host_doc(name)
        if host.location not in catalog.locations and catalog.complete("locations"):
            yield doc.diag("unknown-location", f"location '{host.location}' is not in "
                           f"{LOCATIONS_FILE}", "location")
        if host.pool not in catalog.pools and catalog.complete("students"):
            yield doc.diag("unknown-pool", f"pool '{host.pool}' is not in {STUDENTS_FILE}",
                           "pool")


def _workshop_references(catalog: Catalog) -> Iterator[Diagnostic]:
    replay_ids = {r.id for r in catalog.replays}
    locations_ok = catalog.complete("locations")
    for key, ws in catalog.workshops.items():
        doc = catalog.workshop_doc(key)
        if locations_ok and ws.location not in catalog.locations:
            yield doc.diag("unknown-location", f"location '{ws.location}' is not in "
                           f"{LOCATIONS_FILE}", "location")
        for i, alt in enumerate(ws.alternate_locations):
            if alt == ws.location:
                yield doc.diag("alternate-is-primary", f"'{alt}' is already the location",
                               "alternate_locations", i)
            elif locations_ok and alt not in catalog.locations:
                yield doc.diag("unknown-location", f"alternate location '{alt}' is not in "
                               f"{LOCATIONS_FILE}", "alternate_locations", i)
        if ws.replay is not None and ws.replay not in replay_ids and catalog.complete("replays"):
            yield doc.diag("unknown-replay", f"replay {ws.replay} is not in {REPLAYS_FILE}",
                           "replay")


def ids_unique(catalog: Catalog) -> Iterator[Diagnostic]:
    seen: dict[int, int] = {}
    for i, replay in enumerate(catalog.replays):
        if replay.id in seen:
            yield catalog.docs[REPLAYS_FILE].diag(
                "duplicate-id", f"replay id {replay.id} is already used by entry {seen[replay.id]}",
                "replays", i, "id")
        seen.setdefault(replay.id, i)
    if LOCATIONS_FILE in catalog.docs and catalog.docs[LOCATIONS_FILE].tree:
        names: set[str] = set()
        for i, entry in enumerate(catalog.docs[LOCATIONS_FILE].tree.get("locations") or []):
            name = entry.get("name") if hasattr(entry, "get") else None
            if not isinstance(name, str):
                continue  # no name at all: the model's own error says so, once per entry
            if name in names:
                yield catalog.docs[LOCATIONS_FILE].diag(
                    "duplicate-id", f"location '{name}' is defined twice", "locations", i, "name")
            names.add(name)
    prefixes: dict[str, str] = {}
    for name, pool in catalog.pools.items():
        if pool.prefix in prefixes:
            yield catalog.docs[STUDENTS_FILE].diag(
                "duplicate-id", f"prefix '{pool.prefix}' is also used by pool "
                f"'{prefixes[pool.prefix]}'", "pools", name, "prefix")
        prefixes.setdefault(pool.prefix, name)


def scripts_exist(catalog: Catalog) -> Iterator[Diagnostic]:
    """Hook, compile, check and solve scripts are regular files inside the workshop folder."""
    for key, ws in catalog.workshops.items():
        files = set(catalog.folders[key].files)
        doc = catalog.workshop_doc(key)
        refs: list[tuple[tuple[str | int, ...], str]] = [
            (("compile", i), p) for i, p in enumerate(ws.compile)]
        refs += [(("hooks", hook), p) for hook, p in ws.hooks.model_dump().items() if p]
        refs += [(("checks", i, part), p) for i, c in enumerate(ws.checks)
                 for part, p in (("script", c.script), ("solve", c.solve)) if p]
        for loc, rel in refs:
            normalized = PurePosixPath(rel).as_posix()
            if normalized not in files:
                yield doc.diag("missing-script", f"'{rel}' is not a file in {key}/", *loc)


def _template_problem(catalog: Catalog, template: str) -> RepoFileError | None:
    return check_repo_file(catalog.root, f"{TEMPLATES_DIR}/{template}")


def _link_on_the_way(doc: Document, problem: RepoFileError, template: str,
                     *loc: str | int, key: bool = False) -> Diagnostic:
    """A template reached through a link: the reference names the link to remove."""
    return doc.diag("symlink", f"{TEMPLATES_DIR}/{template} is reached through the link "
                    f"{problem.path}; wodsync never reads through links", *loc, key=key)


def system_files_exist(catalog: Catalog) -> Iterator[Diagnostic]:
    """Each system file names a template that exists and a destination used once."""
    seen: set[str] = set()
    for i, f in enumerate(catalog.system_files):
        problem = _template_problem(catalog, f.template)
        doc = catalog.docs[SYSTEM_FILE]
        if problem and problem.code == "symlink":
            yield _link_on_the_way(doc, problem, f.template, "files", i, "template")
        elif problem:
            yield doc.diag("missing-template", f"'{f.template}' is not a file in "
                           f"{TEMPLATES_DIR}/ ({problem})", "files", i, "template")
        if f.path in seen:
            yield catalog.docs[SYSTEM_FILE].diag(
                "duplicate-id", f"'{f.path}' is declared twice", "files", i, "path")
        seen.add(f.path)


def hub_template_exists(catalog: Catalog) -> Iterator[Diagnostic]:
    """A host whose hub wodsync manages needs the hub's templates (config, and unit)."""
    for name, host in sorted(catalog.hosts.items()):
        if not (host.hub and host.hub.manage):
            continue
        for spec in host.hub.files():
            problem = _template_problem(catalog, spec.template)
            doc = catalog.host_doc(name)
            if problem and problem.code == "symlink":
                yield _link_on_the_way(doc, problem, spec.template, "hub", key=True)
            elif problem:
                yield doc.diag("missing-template", f"the hub is managed (hub.manage) but "
                               f"{TEMPLATES_DIR}/{spec.template} is not a file ({problem})",
                               "hub", key=True)


def shared_gids_apart(catalog: Catalog) -> Iterator[Diagnostic]:
    """A pool's shared group never takes a seat's gid in any pool, nor another group's gid.

    Seats of every pool may end up on one host (pools are per host, hosts change pools), so
    the check is across all pools: a gid in another pool's seat range would make that pool's
    seat a member-by-primary-group of the shared group once both exist on a host.
    """
    groups = {name: pool for name, pool in catalog.pools.items() if pool.group}
    for name, pool in sorted(groups.items()):
        yield from _gid_in_seats(catalog, name, pool)
        yield from _gid_shared(catalog, name, pool, groups)


def _gid_at(catalog: Catalog, name: str, pool: Pool, code: str, message: str) -> Diagnostic:
    at = "group_gid" if pool.group_gid is not None else "group"
    return catalog.docs[STUDENTS_FILE].diag(code, message, "pools", name, at)


def _gid_in_seats(catalog: Catalog, name: str, pool: Pool) -> Iterator[Diagnostic]:
    for other_name, other in sorted(catalog.pools.items()):
        first, last = other.seat_gids
        if other_name != name and first <= pool.shared_gid <= last:
            yield _gid_at(catalog, name, pool, "group-gid",
                          f"the shared group '{pool.group}' gets gid {pool.shared_gid}, the "
                          f"gid of seat {pool.shared_gid - other.gid_base} of pool "
                          f"'{other_name}' ({first}..{last}); set group_gid outside every "
                          "pool's seat gids")


def _gid_shared(catalog: Catalog, name: str, pool: Pool,
                groups: dict[str, Pool]) -> Iterator[Diagnostic]:
    for other_name, other in sorted(groups.items()):
        if other_name == name:
            continue
        if other.group == pool.group and other.shared_gid != pool.shared_gid:
            yield _gid_at(catalog, name, pool, "group-gid",
                          f"group '{pool.group}' gets gid {pool.shared_gid} here and "
                          f"{other.shared_gid} in pool '{other_name}'; one group has one gid")
        elif other.group != pool.group and other.shared_gid == pool.shared_gid:
            yield _gid_at(catalog, name, pool, "group-gid",
                          f"gid {pool.shared_gid} of group '{pool.group}' is also the gid of "
                          f"group '{other.group}' of pool '{other_name}'")


def hub_ports_privileged(catalog: Catalog) -> Iterator[Diagnostic]:
    """A managed hub's ports are below 1024, where only root may listen: a student listening on
    one while the hub or its proxy restarts would receive login forms or the proxy's token."""
    for name, host in sorted(catalog.hosts.items()):
        if not (host.hub and host.hub.manage):
            continue
        for field, port in host.hub.unprivileged_ports():
            yield catalog.host_doc(name).diag(
                "hub-port-unprivileged",
                f"hub.{field} {port} is not below 1024: a student listening on it while the hub "
                "or its proxy restarts receives its traffic (login forms, the proxy's token); "
                "keep the default or use a port below 1024",
                "hub", field, severity="warning")


def limits_fit(catalog: Catalog) -> Iterator[Diagnostic]:
    """A workshop's limits merged over a host's and a pool's defaults still make sense
    (memory_high ≤ memory_max), on every host it can run on: one error at the workshop per
    problem, naming the hosts."""
    if not catalog.complete("host", "students"):
        return
    for key, ws in sorted(catalog.workshops.items()):
        problems: dict[str, list[str]] = {}
        for loc in [ws.location, *ws.alternate_locations]:
            for host_name, host in sorted(catalog.hosts_in(loc).items()):
                pool = catalog.pools.get(host.pool)
                merged = effective_limits(ws.limits, host.limits, pool.limits if pool else None)
                problem = merged.memory_problem()
                if problem:
                    problems.setdefault(problem, []).append(f"'{host_name}'")
        at = ("limits",) if ws.limits else ()
        for problem, hosts in problems.items():
            yield catalog.workshop_doc(key).diag(
                "limits-memory", f"{problem} on host{'s' if len(hosts) > 1 else ''} "
                f"{', '.join(hosts)} (workshop over host over pool limits)", *at)


def events_valid(catalog: Catalog) -> Iterator[Diagnostic]:
    """An event names a workshop of the catalog, and no other event's name."""
    seen: dict[str, int] = {}
    for i, event in enumerate(catalog.events):
        doc = catalog.docs[EVENTS_FILE]
        if event.name in seen:
            yield doc.diag("duplicate-event", f"event '{event.name}' is already entry "
                           f"{seen[event.name]}", "events", i, "name")
        seen.setdefault(event.name, i)
        ws = catalog.workshops.get(event.workshop)
        if ws is None and catalog.complete("workshop"):
            yield doc.diag("unknown-workshop", f"workshop '{event.workshop}' of event "
                           f"'{event.name}' is not in the catalog", "events", i, "workshop")
        elif ws is not None and event.hot_target > ws.capacity:
            yield doc.diag("hot-seats-capacity", f"event '{event.name}' wants "
                           f"{event.hot_target} hot seats (expected × warm) but "
                           f"{event.workshop} has a capacity of {ws.capacity}: at most "
                           f"{ws.capacity} are kept", "events", i, "expected",
                           severity="warning")


RULES: tuple[Rule, ...] = (
    system_files_exist,
    hub_template_exists,
    seats_inside_pools,
    seats_disjoint,
    capacity_fits,
    references_exist,
    ids_unique,
    events_valid,
    scripts_exist,
    shared_gids_apart,
    hub_ports_privileged,
    limits_fit,
    appliances_fit,
    seat_values_compute,
)


def run_rules(catalog: Catalog) -> list[Diagnostic]:
    from wodsync.catalog.kernelcheck import check_notebook_kernels  # reads the loader too
    from wodsync.catalog.placeholders import check_placeholders

    return [d for rule in (*RULES, check_notebook_kernels, check_placeholders)
            for d in rule(catalog)]
