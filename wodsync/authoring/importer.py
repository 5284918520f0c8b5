"""Importing a Workshops-on-Demand notebooks tree into a wodsync catalog.

WoD's data is hand-edited and carries quirks (ranges written `[1981-1985]`, `compile: false`,
placeholders such as `'???'`, a tab in a value, capacities larger than the range). The importer
accepts them all, converts each to the strict wodsync form and reports every conversion as a
located warning in the *source* file, so nothing is changed silently. What is genuinely wrong in
the data (overlapping ranges, undefined template variables) is left for `validate` to report.
The output is written to a staging folder and moved into place only when complete.

An import that deploys (`authoring.deploy`): the kernels the notebooks' kernelspecs ask for,
a hosts skeleton per location, the appliance declarations, a placeholder for every value WoD
computed out of sight, with `replan_seats` the overlapping ranges packed into the pool
(`authoring.seatplan`), and the operator's checklist of what is left to decide.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodsync.authoring import deploy, seatplan
from wodsync.authoring.seatplan import Move
from wodsync.catalog.loader import FILE_NAME_RE
from wodsync.catalog.models import SECRET_NAME_RE, VAR_NAME_RE, WORKSHOP_KEY_RE
from wodsync.catalog.schema import generate as generate_schemas
from wodsync.catalog.schema import modeline
from wodsync.catalog.yamlfile import Document, dump_yaml, parse_yaml, to_plain
from wodsync.diagnostics import Diagnostic

PLACEHOLDERS = {"", "???", "??", "?", "tbd", "todo", "tba", "n/a", "na", "none", "xx", "xxx"}
SECRET_NAME_HINT = re.compile(r"(PWD|PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|APIKEY)", re.I)
WOD_MACHINERY = {"CLEAN", "NOCHECKSSH", "JPHUB"}
DEFAULT_LOCATION = "default"
SESSION_TYPES = {"workshops-on-demand": "Workshops-on-Demand",
                 "coding challenge": "Coding Challenge"}


@dataclass
class ImportResult:
    workshops: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)         # seat ranges re-planned
    kernels: dict[str, list[str]] = field(default_factory=dict)  # workshop → recipes
    checklist: deploy.Checklist = field(default_factory=deploy.Checklist)


class WodImportError(Exception):
    """The import cannot start (bad source or a destination that already holds a catalog)."""


@dataclass
class _WodFile:
    """One wod.yml being converted, with a shortcut for located warnings."""

    doc: Document
    result: ImportResult

    def warn(self, code: str, message: str, *loc: str | int) -> None:
        self.result.diagnostics.append(self.doc.diag(code, message, *loc, severity="warning"))

    def error(self, code: str, message: str, *loc: str | int) -> None:
        self.result.diagnostics.append(self.doc.diag(code, message, *loc))


def _is_placeholder(value: Any) -> bool:
    if value is None:
        return True
    text = str(value).strip().lower()
    return text in PLACEHOLDERS or re.fullmatch(r"https?://[^/]+/?", text) is not None


def _detab(src: _WodFile, raw: bytes) -> bytes:
    """WoD files sometimes hold a tab where YAML wants a space; replace and say where."""
    text = raw.decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        if "\t" in line:
            src.result.diagnostics.append(Diagnostic(
                src.doc.rel, n, line.index("\t") + 1, "tab", "tab replaced by a space",
                "warning"))
    return raw.replace(b"\t", b" ")


def _text(src: _WodFile, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if key in data and _is_placeholder(value):
        if value not in (None, ""):
            src.warn("placeholder", f"{key}: placeholder {value!r} dropped", key)
        return None
    return None if value is None else str(value)


def _bool(src: _WodFile, data: dict[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    result = text in {"true", "yes", "1", "on"}
    src.warn("coerced", f"{key}: {value!r} read as {str(result).lower()}", key)
    return result


def _int(src: _WodFile, data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        result = int(str(value).strip())
    except ValueError:
        src.warn("coerced", f"{key}: {value!r} is not a number; using {default}", key)
        return default
    src.warn("coerced", f"{key}: {value!r} read as {result}", key)
    return result


def _seats(src: _WodFile, data: dict[str, Any]) -> dict[str, int] | None:
    value = data.get("range")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        m = re.fullmatch(r"\s*\[?\s*(\d+)\s*[-,]\s*(\d+)\s*\]?\s*", value)
        if not m:
            src.error("range", f"range {value!r} is not first,last", "range")
            return None
        src.warn("range-string", f"range written as the string {value!r}; read as "
                 f"[{m[1]}, {m[2]}]", "range")
        return {"first": int(m[1]), "last": int(m[2])}
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return {"first": value[0], "last": value[1]}
    src.error("range", f"range {value!r} is not [first, last]", "range")
    return None


def _compile(src: _WodFile, data: dict[str, Any]) -> list[str]:
    value = data.get("compile")
    if value in (None, False, "") or _is_placeholder(value):
        if value is False:
            src.warn("compile-false", "compile: false read as no scripts", "compile")
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def _image(src: _WodFile, data: dict[str, Any], key: str) -> str | None:
    value = _text(src, data, key)
    if value is not None and not re.fullmatch(r"(https?://\S+)|([A-Za-z0-9._+/-]+)", value):
        src.warn("image", f"{key}: {value!r} is neither a URL nor a path; dropped", key)
        return None
    return value


def _location(src: _WodFile, data: dict[str, Any], key: str, fallback: str) -> str:
    value = _text(src, data, key)
    if value is None:
        return fallback
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-_") or fallback
    if name != value:
        src.warn("location-name", f"{key}: {value!r} becomes location '{name}'", key)
    return name


def _appliance(src: _WodFile, data: dict[str, Any]) -> str:
    mono = _bool(src, data, "monoappliance") if "monoappliance" in data else False
    multi = _bool(src, data, "multiappliance") if "multiappliance" in data else False
    if mono and multi:
        src.warn("appliance", "both monoappliance and multiappliance; using multi",
                 "multiappliance")
    return "multi" if multi else "mono" if mono else "none"


KNOWN_KEYS = {
    "name", "notebook", "description", "active", "capacity", "priority", "range", "reset",
    "ldap", "replayId", "varpass", "compile", "workshopImg", "badgeImg", "beta", "category",
    "duration", "presenter", "role", "avatar", "replayLink", "sessionType", "location",
    "alternateLocation", "monoappliance", "multiappliance", "id",
}


def convert_workshop(src: _WodFile, key: str, default_location: str) -> tuple[dict[str, Any],
                                                                               dict[str, Any]]:
    """Map every wod.yml key to the workshop (and its replay, returned separately)."""
    data = to_plain(src.doc.tree)
    for k in data:
        if k not in KNOWN_KEYS:
            src.warn("unknown-key", f"WoD key '{k}' has no wodsync field; dropped", k)
    if data.get("notebook") not in (None, key):
        src.warn("notebook", f"notebook {data['notebook']!r} differs from the folder; the "
                 "folder name is the key", "notebook")
    seats = _seats(src, data) or {"first": 1, "last": 1}
    capacity = _int(src, data, "capacity", seats["last"] - seats["first"] + 1)
    size = seats["last"] - seats["first"] + 1
    if capacity > size:
        src.warn("capacity", f"capacity {capacity} exceeds the {size} seats of the range; "
                 f"set to {size}", "capacity")
        capacity = size
    session = str(data.get("sessionType") or "Workshops-on-Demand")
    if session.lower() not in SESSION_TYPES:
        src.warn("session-type", f"sessionType {session!r} unknown; using Workshops-on-Demand",
                 "sessionType")
    alternates = data.get("alternateLocation") or []
    alternates = alternates if isinstance(alternates, list) else [alternates]
    category = data.get("category") or []
    workshop: dict[str, Any] = {
        "name": _text(src, data, "name") or key,
        "description": str(data.get("description") or "").strip(),
        "active": _bool(src, data, "active", True),
        "capacity": capacity,
        "priority": _int(src, data, "priority", 1),
        "seats": seats,
        "reset": _bool(src, data, "reset"),
        "ldap": _bool(src, data, "ldap"),
        "varpass": _bool(src, data, "varpass"),
        "compile": _compile(src, data),
        "session_type": SESSION_TYPES.get(session.lower(), "Workshops-on-Demand"),
        "location": _location(src, data, "location", default_location),
        "alternate_locations": [re.sub(r"[^A-Za-z0-9_-]+", "-", str(a)).strip("-")
                                for a in alternates if not _is_placeholder(a)],
        "workshop_image": _image(src, data, "workshopImg"),
        "badge_image": _image(src, data, "badgeImg"),
        "beta": _bool(src, data, "beta"),
        "category": [str(c) for c in (category if isinstance(category, list) else [category])],
        "duration": data.get("duration") if isinstance(data.get("duration"), int | float)
        and data.get("duration", 0) > 0 else _int(src, data, "duration", 2),
        "presenter": _text(src, data, "presenter"),
        "role": _text(src, data, "role"),
        "avatar": _image(src, data, "avatar"),
        "appliance": _appliance(src, data),
    }
    replay = _replay(src, data, key, workshop)
    if replay:
        workshop["replay"] = replay["id"]
    return {k: v for k, v in workshop.items() if v not in (None, [])}, replay or {}


def _replay(src: _WodFile, data: dict[str, Any], key: str,
            workshop: dict[str, Any]) -> dict[str, Any] | None:
    rid = data.get("replayId")
    link = _text(src, data, "replayLink")
    if rid is None and link is None:
        return None
    if not isinstance(rid, int) or rid < 1:
        src.warn("replay", f"replayId {rid!r} is not a replay id; replay dropped", "replayId")
        return None
    if link is None or not re.fullmatch(r"https?://\S+", link):
        src.warn("replay", f"replayId {rid} has no usable replayLink; replay dropped",
                 "replayLink" if "replayLink" in data else "replayId")
        return None
    replay = {"id": rid, "title": workshop["name"], "description": workshop["description"],
              "presenter": workshop.get("presenter"), "role": workshop.get("role"),
              "avatar": workshop.get("avatar"), "video": link, "workshop": key,
              "active": workshop["active"]}
    return {k: v for k, v in replay.items() if v is not None}


@dataclass
class _GlobalVars:
    variables: dict[str, Any] = field(default_factory=dict)
    per_workshop: dict[str, dict[str, Any]] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)


POOL_KEYS = {"WODUSERMIN": "first", "WODUSERMAX": "last", "UIDBASE": "uid_base",
             "GIDBASE": "gid_base"}


def _read_vars(files: list[Path], keys: set[str], result: ImportResult) -> _GlobalVars:
    """WoD group_vars → global variables, per-workshop variables, pool bounds and secrets."""
    out = _GlobalVars()
    for path in files:
        src = _WodFile(Document(str(path)), result)
        src.doc = parse_yaml(str(path), _detab(src, path.read_bytes()), allow_tabs=True)
        if src.doc.diagnostics:
            result.diagnostics.extend(src.doc.diagnostics)
            continue
        for name, value in (to_plain(src.doc.tree) or {}).items():
            _read_var(src, out, keys, str(name), value)
    return out


def _read_var(src: _WodFile, out: _GlobalVars, keys: set[str], name: str, value: Any) -> None:
    if name in POOL_KEYS and isinstance(value, int):
        out.pool[POOL_KEYS[name]] = value
        return
    if name in WOD_MACHINERY:
        src.warn("dropped", f"{name} is WoD machinery, not a template variable; dropped", name)
        return
    if isinstance(value, dict | list) or not re.match(VAR_NAME_RE, name):
        src.warn("dropped", f"{name} is not a scalar template variable; dropped", name)
        return
    if SECRET_NAME_HINT.search(name):
        secret = re.sub(r"[^A-Za-z0-9_]", "_", name)
        assert re.match(SECRET_NAME_RE, secret)
        src.warn("secret", f"{name} looks like a secret: written as {{secret: {secret}}}, the "
                 "value stays out of git", name)
        value = {"secret": secret}
    elif value is None:
        value = ""
    m = re.fullmatch(r"(.+)-(WKSHP-[A-Za-z0-9_-]+)", name)
    if m and m[2] in keys:
        out.per_workshop.setdefault(m[2], {})[m[1]] = value
    else:
        out.variables[name] = value


def _copy_files(src_dir: Path, dst_dir: Path, result: ImportResult, label: Path) -> None:
    for path in sorted(src_dir.rglob("*")):
        rel = path.relative_to(src_dir)
        if rel.as_posix() == "wod.yml" or (path.is_dir() and not path.is_symlink()):
            continue
        bad = next((p for p in rel.parts if not FILE_NAME_RE.match(p)), None)
        if path.is_symlink() or bad or not path.is_file():
            why = "a symlink" if path.is_symlink() else "an unsafe name" if bad else "special"
            result.diagnostics.append(Diagnostic(str(label / rel), 1, 1, "skipped",
                                                 f"not copied: {why}", "warning"))
            continue
        target = dst_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


def _write(root: Path, rel: str, file_type: str, data: Any) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(data, modeline(root, path, file_type)), encoding="utf-8")


def import_wod(src: Path, out: Path, var_files: list[Path],
               location: str = DEFAULT_LOCATION, replan_seats: bool = False,
               templates: Path | None = None) -> ImportResult:
    """Convert `src` (a wod-notebooks checkout) into a catalog and a hosts skeleton under
    `out`; with `replan_seats`, overlapping ranges are packed into the pool; `templates` (a
    wodsync checkout's `templates/`: the hub's configuration and unit) is copied along."""
    folders = sorted(p for p in src.glob("WKSHP-*") if (p / "wod.yml").is_file())
    if not folders:
        raise WodImportError(f"{src}: no WKSHP-*/wod.yml folders found")
    for part in ("catalog", "hosts", "templates"):
        if (out / part).exists():
            raise WodImportError(f"{out / part} already exists; import into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    result = ImportResult()
    stage = Path(tempfile.mkdtemp(prefix=".wodsync-import-", dir=out))
    try:
        if templates is not None:
            shutil.copytree(templates, stage / "templates", symlinks=True)
        _import_into(stage, src, folders, var_files, location, result, replan_seats)
        for part in ("catalog", "hosts", "templates", "schemas"):
            if (stage / part).exists() and not (out / part).exists():
                (stage / part).rename(out / part)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


@dataclass
class _Imported:
    """What the workshops gave, before it is written."""

    workshops: dict[str, dict[str, Any]] = field(default_factory=dict)
    replays: dict[int, dict[str, Any]] = field(default_factory=dict)
    locations: set[str] = field(default_factory=set)
    appliances: dict[str, dict[str, Any]] = field(default_factory=dict)  # host skeletons


def _import_into(stage: Path, src: Path, folders: list[Path], var_files: list[Path],
                 location: str, result: ImportResult, replan_seats: bool) -> None:
    keys = {p.name for p in folders if re.match(WORKSHOP_KEY_RE, p.name)}
    gvars = _read_vars(var_files, keys, result)
    got = _Imported(locations={location})
    for folder in folders:
        _import_workshop(stage, src, folder, keys, gvars, location, result, got)
    pool: dict[str, Any] = {"prefix": "student", "first": 1, "last": 2000, "uid_base": 2000,
                            "gid_base": 2000, "home_root": "/student",
                            "shell": "/bin/bash"} | gvars.pool
    pool_last = pool["last"]
    _replan(got, pool, result, replan_seats)
    for key, workshop in got.workshops.items():
        _write(stage, f"catalog/workshops/{key}/workshop.yaml", "workshop", workshop)
    _write(stage, "catalog/students.yaml", "students", {"pools": {"student": pool}})
    _write(stage, "catalog/locations.yaml", "locations", {"locations": [
        {"name": n, "description": "Imported from Workshops-on-Demand"}
        for n in sorted(got.locations)]})
    _write(stage, "catalog/replays.yaml", "replays",
           {"replays": [got.replays[i] for i in sorted(got.replays)]})
    _write(stage, "catalog/variables.yaml", "variables", gvars.variables)
    for loc in sorted(got.locations):
        _write(stage, f"hosts/{loc}.yaml", "host", deploy.host_skeleton(loc, "student"))
    for name, host in sorted(got.appliances.items()):
        _write(stage, f"hosts/{name}.yaml", "host", host)
    (stage / "schemas").mkdir()
    for name, text in generate_schemas().items():
        (stage / "schemas" / name).write_text(text, encoding="utf-8")
    _declare_undefined(stage, got, result)
    _repair_notebooks(stage, src, result)
    _checklist(got, gvars, pool, pool_last, result)


def _import_workshop(stage: Path, src: Path, folder: Path, keys: set[str], gvars: _GlobalVars,
                     location: str, result: ImportResult, got: _Imported) -> None:
    label = src / folder.name
    if folder.name not in keys:
        result.diagnostics.append(Diagnostic(str(label), 1, 1, "unsafe-name",
                                             "folder name is not WKSHP-<Name>; skipped"))
        return
    src_doc = _WodFile(Document(str(label / "wod.yml")), result)
    src_doc.doc = parse_yaml(str(label / "wod.yml"),
                             _detab(src_doc, (folder / "wod.yml").read_bytes()),
                             allow_tabs=True)
    if src_doc.doc.diagnostics or not isinstance(src_doc.doc.tree, dict):
        result.diagnostics.extend(src_doc.doc.diagnostics or [src_doc.doc.diag(
            "wod-yml", "wod.yml is not a mapping")])
        return
    workshop, replay = convert_workshop(src_doc, folder.name, location)
    if folder.name in gvars.per_workshop:
        workshop["variables"] = gvars.per_workshop[folder.name]
    kernels = deploy.infer_kernels(folder, label, result.diagnostics)
    if kernels:
        workshop["kernels"] = kernels
        result.kernels[folder.name] = kernels
    workshop["appliance"], appliances = deploy.appliance_declarations(
        folder.name, workshop["appliance"], workshop["location"], "student",
        workshop["seats"]["last"] - workshop["seats"]["first"] + 1)
    got.appliances.update(appliances)
    _merge_replay(src_doc, got.replays, replay)
    got.locations.add(workshop["location"])
    got.locations.update(workshop.get("alternate_locations", []))
    _copy_files(folder, stage / "catalog/workshops" / folder.name, result, label)
    got.workshops[folder.name] = workshop
    result.workshops.append(folder.name)


def _replan(got: _Imported, pool: dict[str, Any], result: ImportResult, replan: bool) -> None:
    """With `replan`, every location's ranges packed into the pool (grown if it must)."""
    if not replan:
        return
    by_location: dict[str, dict[str, tuple[int, int]]] = {}
    for key, ws in got.workshops.items():
        by_location.setdefault(ws["location"], {})[key] = (ws["seats"]["first"],
                                                           ws["seats"]["last"])
    for ranges in by_location.values():
        plan = seatplan.replan(ranges, pool["first"], pool["last"])
        for move in plan.moves:
            got.workshops[move.workshop]["seats"] = {"first": move.new[0], "last": move.new[1]}
        result.moves += plan.moves
        pool["last"] = max(pool["last"], plan.pool_last)


def _declare_undefined(stage: Path, got: _Imported, result: ImportResult) -> None:
    """A placeholder variable for every name a workshop's templates use and nobody defines
    (WoD computed them per seat, out of sight); validate then names each one."""
    from wodsync.catalog import validate  # the template checks render: imported when used

    _, found = validate(stage)
    for key, names in sorted(deploy.undefined_names(found).items()):
        if key not in got.workshops:
            continue
        variables = got.workshops[key].setdefault("variables", {})
        for name in sorted(names):
            m = deploy.PER_WORKSHOP_RE.match(name)
            var = m[1] if m and m[2] == key else name
            variables.setdefault(var, deploy.placeholder(deploy.per_seat_why(var)))
        _write(stage, f"catalog/workshops/{key}/workshop.yaml", "workshop", got.workshops[key])
        result.checklist.add(f"{key}: decide {', '.join(sorted(names))} (placeholders in its "
                             "workshop.yaml: WoD computed them per seat)")


def _repair_notebooks(stage: Path, src: Path, result: ImportResult) -> None:
    """A notebook still not JSON once rendered gets its stray quotes escaped (a warning at
    each line of the source), kept only if it then renders to JSON."""
    from wodsync.catalog import validate

    _, found = validate(stage)
    originals: dict[str, tuple[str, list[int]]] = {}
    for rel in sorted({d.path for d in found if d.code == "notebook-json"}):
        before = (stage / rel).read_text(encoding="utf-8")
        after, lines = deploy.escape_stray_quotes(before)
        if lines:
            originals[rel] = (before, lines)
            (stage / rel).write_text(after, encoding="utf-8")
    if not originals:
        return
    _, found = validate(stage)
    still = {d.path for d in found if d.code == "notebook-json"}
    for rel, (before, lines) in originals.items():
        if rel in still:  # not what was wrong: left as WoD wrote it, for validate to report
            (stage / rel).write_text(before, encoding="utf-8")
            continue
        label = src / rel.removeprefix("catalog/workshops/")
        result.diagnostics += [Diagnostic(str(label), n, 1, "notebook-quotes",
                                          "quotes inside a JSON string escaped: the notebook "
                                          "was not JSON even once rendered", "warning")
                               for n in lines]


def _checklist(got: _Imported, gvars: _GlobalVars, pool: dict[str, Any], pool_last: int,
               result: ImportResult) -> None:
    """The operator's decisions, hosts first: nothing deploys before they are made."""
    c = result.checklist
    for loc in sorted(got.locations):
        c.items.insert(0, f"hosts/{loc}.yaml: write the hub host's address, pin its SSH key "
                          f"(host_key), set WODBEFQDN and WODBEEXTFQDN; a second host of "
                          f"'{loc}' is a copy of this file")
    secrets = {deploy.hub_token_secret(loc): f"host {loc}" for loc in got.locations}
    secrets |= {v["secret"]: "the global variables" for v in gvars.variables.values()
                if isinstance(v, dict)}
    for key, ws in got.workshops.items():
        secrets |= {v["secret"]: key for v in ws.get("variables", {}).values()
                    if isinstance(v, dict) and "secret" in v}
    for name, who in sorted(secrets.items()):
        c.add(f"secrets file: {name} (granted to {who}); `wodsync validate --secrets FILE` "
              "warns about a missing grant")
    for key, ws in sorted(got.workshops.items()):
        appliance = ws.get("appliance", "none")
        if isinstance(appliance, dict):
            c.add(f"{key}: ran on a remote appliance in WoD: write the address and key of "
                  f"hosts/{appliance['hosts'][0]}.yaml"
                  + (f" and its {len(appliance['hosts']) - 1} siblings (one per seat)"
                     if len(appliance["hosts"]) > 1 else "")
                  + "; WoD's create script becomes its create hook")
        elif appliance != "none":
            c.add(f"{key}: ran on a remote appliance in WoD ({appliance}): declare the "
                  "appliance host(s) and the create hook that prepares a seat there")
    if result.moves:
        c.add(f"{len(result.moves)} seat ranges re-planned (printed above): WoD's api-db and "
              "its mails still name the old ones; cut over per workshop (README: Migrating)")
    if pool["last"] > pool_last:
        c.add(f"the pool grew from {pool_last} to {pool['last']} seats to hold every range: "
              "that many accounts on every hub host (or give a location more hosts)")
    users: dict[str, list[str]] = {}
    for key, kernels in sorted(result.kernels.items()):
        for kernel in kernels:
            users.setdefault(kernel, []).append(key)
    if users:
        c.add("kernels declared from the notebooks' kernelspecs (recipes, installed as root on "
              "every hub host serving them; review the versions): " + "; ".join(
                  f"{k} ({len(keys)} workshops)" if len(keys) > 3 else f"{k} ({', '.join(keys)})"
                  for k, keys in sorted(users.items())))


def _merge_replay(src: _WodFile, replays: dict[int, dict[str, Any]],
                  replay: dict[str, Any]) -> None:
    """WoD workshops share replay ids; the first keeps the record, later ones refer to it."""
    if not replay:
        return
    existing = replays.get(replay["id"])
    if existing is None:
        replays[replay["id"]] = replay
    elif existing["video"] != replay["video"]:
        src.warn("replay", f"replayId {replay['id']} is also used by {existing['workshop']} "
                 f"with another video; that record is kept", "replayId")
