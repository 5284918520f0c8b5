"""Importing a Workshops-on-Demand notebooks tree into a wodsync catalog.

WoD's data is hand-edited and carries quirks (ranges written `[1981-1985]`, `compile: false`,
placeholders such as `'???'`, a tab in a value, capacities larger than the range). The importer
accepts them all, converts each to the strict wodsync form and reports every conversion as a
located warning in the *source* file, so nothing is changed silently. What is genuinely wrong in
the data (overlapping ranges, undefined template variables) is left for `validate` to report.
The output is written to a staging folder and moved into place only when complete.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
               location: str = DEFAULT_LOCATION) -> ImportResult:
    """Convert `src` (a wod-notebooks checkout) into a catalog under `out`."""
    folders = sorted(p for p in src.glob("WKSHP-*") if (p / "wod.yml").is_file())
    if not folders:
        raise WodImportError(f"{src}: no WKSHP-*/wod.yml folders found")
    if (out / "catalog").exists():
        raise WodImportError(f"{out / 'catalog'} already exists; import into an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    result = ImportResult()
    stage = Path(tempfile.mkdtemp(prefix=".wodsync-import-", dir=out))
    try:
        _import_into(stage, src, folders, var_files, location, result)
        for part in ("catalog", "schemas"):
            if not (out / part).exists():
                (stage / part).rename(out / part)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def _import_into(stage: Path, src: Path, folders: list[Path], var_files: list[Path],
                 location: str, result: ImportResult) -> None:
    keys = {p.name for p in folders if re.match(WORKSHOP_KEY_RE, p.name)}
    gvars = _read_vars(var_files, keys, result)
    replays: dict[int, dict[str, Any]] = {}
    locations = {location}
    for folder in folders:
        label = src / folder.name
        if folder.name not in keys:
            result.diagnostics.append(Diagnostic(str(label), 1, 1, "unsafe-name",
                                                 "folder name is not WKSHP-<Name>; skipped"))
            continue
        src_doc = _WodFile(Document(str(label / "wod.yml")), result)
        src_doc.doc = parse_yaml(str(label / "wod.yml"),
                                 _detab(src_doc, (folder / "wod.yml").read_bytes()),
                                 allow_tabs=True)
        if src_doc.doc.diagnostics or not isinstance(src_doc.doc.tree, dict):
            result.diagnostics.extend(src_doc.doc.diagnostics or [src_doc.doc.diag(
                "wod-yml", "wod.yml is not a mapping")])
            continue
        workshop, replay = convert_workshop(src_doc, folder.name, location)
        if folder.name in gvars.per_workshop:
            workshop["variables"] = gvars.per_workshop[folder.name]
        _merge_replay(src_doc, replays, replay)
        locations.add(workshop["location"])
        locations.update(workshop.get("alternate_locations", []))
        dst = stage / "catalog/workshops" / folder.name
        _copy_files(folder, dst, result, label)
        _write(stage, f"catalog/workshops/{folder.name}/workshop.yaml", "workshop", workshop)
        result.workshops.append(folder.name)
    pool = {"prefix": "student", "first": 1, "last": 2000, "uid_base": 2000, "gid_base": 2000,
            "home_root": "/student", "shell": "/bin/bash"} | gvars.pool
    _write(stage, "catalog/students.yaml", "students", {"pools": {"student": pool}})
    _write(stage, "catalog/locations.yaml", "locations", {"locations": [
        {"name": n, "description": "Imported from Workshops-on-Demand"}
        for n in sorted(locations)]})
    _write(stage, "catalog/replays.yaml", "replays",
           {"replays": [replays[i] for i in sorted(replays)]})
    _write(stage, "catalog/variables.yaml", "variables", gvars.variables)
    (stage / "schemas").mkdir()
    for name, text in generate_schemas().items():
        (stage / "schemas" / name).write_text(text, encoding="utf-8")


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
