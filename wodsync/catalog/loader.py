"""Loading a repository's catalog and host inventory into validated models.

Loading never stops at the first problem: every file is read, every model error is mapped to
its `file:line:col`, and the caller gets whatever validated plus the full list of diagnostics,
so one `validate` run shows an author everything that is wrong.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from wodsync.catalog.models import (
    NAME_RE,
    WORKSHOP_KEY_RE,
    Host,
    Location,
    LocationsFile,
    Pool,
    Replay,
    ReplaysFile,
    StudentsFile,
    SystemFile,
    SystemFilesFile,
    VariablesFile,
    VarValue,
    Workshop,
)
from wodsync.catalog.yamlfile import Document, load_yaml, to_plain
from wodsync.diagnostics import Diagnostic

CATALOG_DIR = "catalog"
WORKSHOPS_DIR = "catalog/workshops"
HOSTS_DIR = "hosts"
TEMPLATES_DIR = "templates"
WORKSHOP_FILE = "workshop.yaml"
REPLAYS_FILE = "catalog/replays.yaml"
STUDENTS_FILE = "catalog/students.yaml"
LOCATIONS_FILE = "catalog/locations.yaml"
VARIABLES_FILE = "catalog/variables.yaml"
SYSTEM_FILE = "catalog/system.yaml"
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9._+@=,][A-Za-z0-9._+@=,-]*$")
MAX_FOLDER_FILES = 5000
MAX_FOLDER_DEPTH = 16


@dataclass
class WorkshopFolder:
    """A workshop's folder on disk: its key, path and the regular files inside (posix, sorted)."""

    key: str
    path: Path
    files: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    """Everything `validate` checked, as models, with the documents kept for locating."""

    root: Path
    workshops: dict[str, Workshop] = field(default_factory=dict)
    folders: dict[str, WorkshopFolder] = field(default_factory=dict)
    replays: list[Replay] = field(default_factory=list)
    pools: dict[str, Pool] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)
    variables: dict[str, VarValue] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    system_files: list[SystemFile] = field(default_factory=list)
    docs: dict[str, Document] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)

    def complete(self, *kinds: str) -> bool:
        """True when every file of these kinds validated, so checks relying on them are fair.

        Checks that depend on a broken file are skipped: its own errors say what to fix, and
        follow-on noise (a pool 'missing' because students.yaml has a typo) would only hide it.
        """
        return not self.broken.intersection(kinds)

    def hosts_in(self, location: str) -> dict[str, Host]:
        return {n: h for n, h in self.hosts.items() if h.location == location}

    def workshop_doc(self, key: str) -> Document:
        return self.docs[f"{WORKSHOPS_DIR}/{key}/{WORKSHOP_FILE}"]

    def host_doc(self, name: str) -> Document:
        return self.docs[f"{HOSTS_DIR}/{name}.yaml"]


def _message(err: Any, model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "document"
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc[-1], model, err["loc"][:-1])
        return f"unknown key '{loc[-1]}'{hint}"
    if err["type"] == "missing":
        return f"missing required key '{loc[-1]}'"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}"


def _suggest(word: str, model: type[BaseModel], parent: tuple[Any, ...]) -> str:
    fields = _fields_at(model, parent)
    close = difflib.get_close_matches(word, fields, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the nested model at `loc`, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next((a for a in getattr(annotation, "__args__", (annotation,))
                        if isinstance(a, type) and issubclass(a, BaseModel)), annotation)
    return list(getattr(current, "model_fields", {}))


def validate_document(doc: Document, model: type[BaseModel]) -> Any:
    """Validate a parsed document; each Pydantic error becomes one located diagnostic.

    Union members fail separately under the same node; only the first failure per position is
    kept so an author sees one message per mistake.
    """
    if doc.diagnostics:
        return None
    try:
        return model.model_validate(to_plain(doc.tree))
    except ValidationError as exc:
        seen: set[tuple[int, int]] = set()
        for err in exc.errors(include_url=False):
            is_key = err["type"] == "extra_forbidden"
            d = doc.diag(err["type"], _message(err, model), *err["loc"], key=is_key)
            if (d.line, d.col) not in seen:
                seen.add((d.line, d.col))
                doc.diagnostics.append(d)
        return None


def _load(catalog: Catalog, rel: str, model: type[BaseModel], kind: str, *,
          required: bool = True) -> Any:
    path = catalog.root / rel
    if not path.exists() and not path.is_symlink():
        if required:
            catalog.diagnostics.append(Diagnostic(rel, 1, 1, "missing-file", "file is missing"))
            catalog.broken.add(kind)
        return None
    doc = load_yaml(catalog.root, path)
    catalog.docs[rel] = doc
    result = validate_document(doc, model)
    catalog.diagnostics.extend(doc.diagnostics)
    if result is None:
        catalog.broken.add(kind)
    return result


def scan_folder(root: Path, folder: Path) -> tuple[list[str], list[Diagnostic]]:
    """List the regular files of a workshop folder; refuse symlinks, devices and unsafe names.

    Nothing is followed out of the folder: links are reported, not resolved, so no file outside
    the repository can end up in a student's home.
    """
    files: list[str] = []
    problems: list[Diagnostic] = []
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        with os.scandir(current) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            problem = _entry_problem(entry, depth)
            if problem:
                problems.append(Diagnostic(rel, 1, 1, *problem))
            elif entry.is_dir(follow_symlinks=False):
                stack.append((path, depth + 1))
            else:
                files.append(path.relative_to(folder).as_posix())
    if len(files) > MAX_FOLDER_FILES:
        problems.append(Diagnostic(folder.relative_to(root).as_posix(), 1, 1, "too-many-files",
                                   f"{len(files)} files; the limit is {MAX_FOLDER_FILES}"))
    return sorted(files), problems


def _entry_problem(entry: os.DirEntry[str], depth: int) -> tuple[str, str] | None:
    if not FILE_NAME_RE.match(entry.name):
        return "unsafe-name", (f"file name {entry.name!r} has characters outside "
                               "letters, digits and . _ + @ = , -")
    if entry.is_symlink():
        return "symlink", "symlinks are not allowed in a workshop folder"
    mode = entry.stat(follow_symlinks=False).st_mode
    if stat.S_ISDIR(mode):
        return ("too-deep", f"folders nested deeper than {MAX_FOLDER_DEPTH}") \
            if depth >= MAX_FOLDER_DEPTH else None
    if not stat.S_ISREG(mode):
        return "special-file", "only regular files and folders are allowed"
    return None


def _load_workshops(catalog: Catalog) -> None:
    base = catalog.root / WORKSHOPS_DIR
    if not base.is_dir():
        return
    for entry in sorted(base.iterdir()):
        rel = entry.relative_to(catalog.root).as_posix()
        if entry.name.startswith(".") or entry.name.lower() == "readme.md":
            continue
        if entry.is_symlink() or not entry.is_dir():
            catalog.diagnostics.append(Diagnostic(
                rel, 1, 1, "unexpected-file", "only workshop folders (not links) belong here"))
            continue
        if not re.match(WORKSHOP_KEY_RE, entry.name):
            catalog.diagnostics.append(Diagnostic(
                rel, 1, 1, "unsafe-name",
                f"workshop folder {entry.name!r} must match WKSHP-<Name> ({WORKSHOP_KEY_RE})"))
            continue
        _load_workshop(catalog, entry)


def _load_workshop(catalog: Catalog, folder: Path) -> None:
    key = folder.name
    files, problems = scan_folder(catalog.root, folder)
    catalog.diagnostics.extend(problems)
    catalog.folders[key] = WorkshopFolder(key, folder, files)
    workshop = _load(catalog, f"{WORKSHOPS_DIR}/{key}/{WORKSHOP_FILE}", Workshop, "workshop")
    if workshop is not None:
        catalog.workshops[key] = workshop


def _load_hosts(catalog: Catalog) -> None:
    base = catalog.root / HOSTS_DIR
    if not base.is_dir():
        return
    for path in sorted(base.glob("*.yaml")):
        rel = path.relative_to(catalog.root).as_posix()
        if not re.match(NAME_RE, path.stem):
            catalog.diagnostics.append(Diagnostic(
                rel, 1, 1, "unsafe-name", f"host name {path.stem!r} must match {NAME_RE}"))
            catalog.broken.add("host")
            continue
        host = _load(catalog, rel, Host, "host")
        if host is not None:
            catalog.hosts[path.stem] = host


def load_catalog(root: Path) -> Catalog:
    """Load and model-validate everything under `root` (no cross-file rules: see `rules`)."""
    catalog = Catalog(root=root.resolve())
    if not (catalog.root / CATALOG_DIR).is_dir():
        catalog.diagnostics.append(Diagnostic(
            CATALOG_DIR, 1, 1, "missing-file", f"no catalog/ directory under {catalog.root}"))
        return catalog
    replays: ReplaysFile | None = _load(catalog, REPLAYS_FILE, ReplaysFile, "replays",
                                        required=False)
    students: StudentsFile | None = _load(catalog, STUDENTS_FILE, StudentsFile, "students")
    locations: LocationsFile | None = _load(catalog, LOCATIONS_FILE, LocationsFile, "locations")
    variables: VariablesFile | None = _load(catalog, VARIABLES_FILE, VariablesFile, "variables",
                                            required=False)
    catalog.replays = replays.replays if replays else []
    catalog.pools = dict(students.pools) if students else {}
    catalog.locations = {loc.name: loc for loc in locations.locations} if locations else {}
    catalog.variables = dict(variables.root) if variables else {}
    system: SystemFilesFile | None = _load(catalog, SYSTEM_FILE, SystemFilesFile, "system",
                                           required=False)
    catalog.system_files = system.files if system else []
    _load_workshops(catalog)
    _load_hosts(catalog)
    return catalog
