"""Loading a repository's catalog and host inventory into validated models.

Loading never stops at the first problem: every file is read, every model error is mapped to
its `file:line:col`, and the caller gets whatever validated plus the full list of diagnostics,
so one `validate` run shows an author everything that is wrong.

Every repository file is read through `repofs`, which never follows a link at any depth; code
outside the catalog reads templates with `read_template` for the same reason.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from wodsync.catalog.guard import GuardFile
from wodsync.catalog.models import (
    NAME_RE,
    WORKSHOP_KEY_RE,
    BadgesFile,
    Host,
    Location,
    LocationsFile,
    Event,
    EventsFile,
    Pool,
    PortalFile,
    Replay,
    ReplaysFile,
    StudentsFile,
    SystemFile,
    SystemFilesFile,
    VariablesFile,
    VarValue,
    Workshop,
)
from wodsync.catalog.repofs import (
    RepoFileError,
    open_repo_dir,
    read_repo_file,
    read_repo_text,
    walk_repo_tree,
)
from wodsync.catalog.yamlfile import MAX_FILE_BYTES, Document, parse_yaml, to_plain
from wodsync.diagnostics import Diagnostic

CATALOG_DIR = "catalog"
WORKSHOPS_DIR = "catalog/workshops"
HOSTS_DIR = "hosts"
TEMPLATES_DIR = "templates"
WORKSHOP_FILE = "workshop.yaml"
REPLAYS_FILE = "catalog/replays.yaml"
EVENTS_FILE = "catalog/events.yaml"
STUDENTS_FILE = "catalog/students.yaml"
LOCATIONS_FILE = "catalog/locations.yaml"
VARIABLES_FILE = "catalog/variables.yaml"
SYSTEM_FILE = "catalog/system.yaml"
GUARD_FILE = "catalog/guard.yaml"
PORTAL_FILE = "catalog/portal.yaml"
BADGES_FILE = "catalog/badges.yaml"
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
    events: list[Event] = field(default_factory=list)  # catalog/events.yaml (optional)
    pools: dict[str, Pool] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)
    variables: dict[str, VarValue] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    system_files: list[SystemFile] = field(default_factory=list)
    portal: PortalFile = field(default_factory=PortalFile)
    badges: BadgesFile | None = None  # catalog/badges.yaml: the badges' issuer (optional)
    docs: dict[str, Document] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # file types of files that did not validate
    # templates/ exists and is reached without a link (a link is reported once, at load).
    templates_ok: bool = True
    # catalog/mail.yaml (`wodsync.mail.settings.MailSettings`; None: no mail) and the mail
    # templates (`wodsync.mail.templates.MailTemplates`), set by `wodsync.mail.templates`.
    mail: Any = None
    mail_templates: Any = None
    guard: GuardFile | None = None  # catalog/guard.yaml; None: no guard rounds

    def complete(self, *file_types: str) -> bool:
        """True when every file of these types (`FILE_MODELS`' keys) validated, so checks
        relying on them are fair.

        Checks that depend on a broken file are skipped: its own errors say what to fix, and
        follow-on noise (a pool 'missing' because students.yaml has a typo) would only hide it.
        """
        return not self.broken.intersection(file_types)

    def hosts_in(self, location: str) -> dict[str, Host]:
        """The hosts of `location` that give seats: its appliances are reached only through
        the workshops that name them."""
        return {n: h for n, h in self.hosts.items()
                if h.location == location and h.role == "hub"}

    def workshop_doc(self, key: str) -> Document:
        return self.docs[f"{WORKSHOPS_DIR}/{key}/{WORKSHOP_FILE}"]

    def host_doc(self, name: str) -> Document:
        return self.docs[f"{HOSTS_DIR}/{name}.yaml"]


def _loc(err: Any) -> tuple[Any, ...]:
    """Where an error is: a model-level check names its field or item in its context."""
    at = (err.get("ctx") or {}).get("at")
    return (*err["loc"], at) if at is not None else tuple(err["loc"])


def _message(err: Any, model: type[BaseModel]) -> str:
    loc = [str(p) for p in _loc(err)]
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
            d = doc.diag(err["type"], _message(err, model), *_loc(err), key=is_key)
            if (d.line, d.col) not in seen:
                seen.add((d.line, d.col))
                doc.diagnostics.append(d)
        return None


def repo_diagnostic(exc: RepoFileError) -> Diagnostic:
    """A refused repository read as a diagnostic at the offending path (a link, a FIFO, …)."""
    return Diagnostic(exc.path, 1, 1, exc.code, exc.message)


def read_template(root: Path, template: str) -> str:
    """The text of `templates/<template>`, read without following any link (a `RepoFileError`
    otherwise). Every reader of system and hub templates uses this, never a plain path read."""
    return read_repo_text(root, f"{TEMPLATES_DIR}/{template}")


def _read_document(catalog: Catalog, rel: str, required: bool) -> Document | None:
    try:
        raw = read_repo_file(catalog.root, rel, max_bytes=MAX_FILE_BYTES)
    except RepoFileError as exc:
        if exc.code == "missing-file" and not required:
            return None
        problem = Diagnostic(rel, 1, 1, "missing-file", "file is missing") \
            if exc.code == "missing-file" else repo_diagnostic(exc)
        return Document(rel, diagnostics=[problem])
    return parse_yaml(rel, raw)


def _load(catalog: Catalog, rel: str, model: type[BaseModel], file_type: str, *,
          required: bool = True) -> Any:
    doc = _read_document(catalog, rel, required)
    if doc is None:
        return None
    catalog.docs[rel] = doc
    result = validate_document(doc, model)
    catalog.diagnostics.extend(doc.diagnostics)
    if result is None:
        catalog.broken.add(file_type)
    return result


EntryCheck = Callable[[os.DirEntry[str], int], tuple[str, str] | None]


def scan_tree(root: Path, rel: str,
              check: EntryCheck) -> tuple[list[str], list[Diagnostic]]:
    """The regular files under `root/rel` (relative to it, sorted) and the refused entries.

    Folders are walked by descriptor without following links (`repofs`): a link is reported
    at its own path, never resolved, so no file outside the repository is listed or read.
    """
    files: list[str] = []
    problems: list[Diagnostic] = []

    def visit(entry_rel: str, entry: os.DirEntry[str], depth: int) -> bool:
        problem = check(entry, depth)
        if problem:
            problems.append(Diagnostic(entry_rel, 1, 1, *problem))
            return False
        if entry.is_dir(follow_symlinks=False):
            return True
        files.append(entry_rel[len(rel) + 1:])
        return False

    try:
        walk_repo_tree(root, rel, visit)
    except RepoFileError as exc:
        problems.append(repo_diagnostic(exc))
    return sorted(files), problems


def scan_folder(root: Path, folder: Path) -> tuple[list[str], list[Diagnostic]]:
    """List the regular files of a workshop folder; refuse symlinks, devices and unsafe names.

    Nothing is followed out of the folder: links are reported, not resolved, so no file outside
    the repository can end up in a student's home.
    """
    rel = folder.relative_to(root).as_posix()
    files, problems = scan_tree(root, rel, _entry_problem)
    if len(files) > MAX_FOLDER_FILES:
        problems.append(Diagnostic(rel, 1, 1, "too-many-files",
                                   f"{len(files)} files; the limit is {MAX_FOLDER_FILES}"))
    return files, problems


def link_or_special(entry: os.DirEntry[str], depth: int) -> tuple[str, str] | None:
    """Entries no repository folder may hold: links, devices, FIFOs, sockets, deep nesting."""
    if entry.is_symlink():
        return "symlink", "symbolic links are not allowed in the repository"
    mode = entry.stat(follow_symlinks=False).st_mode
    if stat.S_ISDIR(mode):
        return ("too-deep", f"folders nested deeper than {MAX_FOLDER_DEPTH}") \
            if depth >= MAX_FOLDER_DEPTH else None
    if not stat.S_ISREG(mode):
        return "special-file", "only regular files and folders are allowed"
    return None


def _entry_problem(entry: os.DirEntry[str], depth: int) -> tuple[str, str] | None:
    if not FILE_NAME_RE.match(entry.name):
        return "unsafe-name", (f"file name {entry.name!r} has characters outside "
                               "letters, digits and . _ + @ = , -")
    return link_or_special(entry, depth)


def repo_folder(catalog: Catalog, rel: str) -> bool:
    """True when `rel` is a folder reached without links; a link on the way is reported."""
    try:
        os.close(open_repo_dir(catalog.root, rel))
    except RepoFileError as exc:
        if exc.code != "missing-file":
            catalog.diagnostics.append(repo_diagnostic(exc))
        return False
    return True


def _load_workshops(catalog: Catalog) -> None:
    if not repo_folder(catalog, WORKSHOPS_DIR):
        return
    base = catalog.root / WORKSHOPS_DIR
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
    if not repo_folder(catalog, HOSTS_DIR):
        return
    base = catalog.root / HOSTS_DIR
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
    if not repo_folder(catalog, CATALOG_DIR):
        if not catalog.diagnostics:
            catalog.diagnostics.append(Diagnostic(
                CATALOG_DIR, 1, 1, "missing-file",
                f"no catalog/ directory under {catalog.root}"))
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
    catalog.guard = _load(catalog, GUARD_FILE, GuardFile, "guard", required=False)
    portal: PortalFile | None = _load(catalog, PORTAL_FILE, PortalFile, "portal",
                                      required=False)
    catalog.portal = portal or PortalFile()
    catalog.badges = _load(catalog, BADGES_FILE, BadgesFile, "badges", required=False)
    events: EventsFile | None = _load(catalog, EVENTS_FILE, EventsFile, "events",
                                      required=False)
    catalog.events = events.events if events else []
    _load_workshops(catalog)
    _load_hosts(catalog)
    catalog.templates_ok = repo_folder(catalog, TEMPLATES_DIR)
    from wodsync.mail.templates import load_into  # mail reads the loader: imported here

    load_into(catalog)
    return catalog
