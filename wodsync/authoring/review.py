"""Which changes of a pull request are privileged: the reviewer's first question, answered.

The catalog is edited by workshop authors, but some of it runs as root on every host or reaches
the host's system: host files, system files and their templates, the seat accounts, and inside a
workshop its `packages`, `kernels`, `hooks`, `compile` scripts and the variables that carry
secrets. A title and a `kernels` entry sit in the same `workshop.yaml`, so a path-level diff is
not enough: each changed YAML file is parsed on both sides (round-trip, so nodes keep their
lines) and compared key by key, and every finding points at the line in the new version where
its difference starts. `wodsync review` informs (GitHub annotations, a job summary);
`.github/CODEOWNERS`, written from the same rules by `codeowners_text`, enforces: it names the
privileged paths, and for privileged keys inside catalog files it carries a digest per
file, so changing such a key makes `wodsync codeowners --check` fail until CODEOWNERS is
regenerated, a change the operators must approve.

A plain variable is content even in a workshop with hooks: hooks are never rendered and read
values as data (`$WOD_<NAME>`, `agent.hooks`), so no value can change what root runs. What root
runs is the hook's script, and that — with the `hooks` key naming it — stays privileged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from wodsync.catalog.recipes import recipe_of
from wodsync.catalog.repofs import RepoFileError, open_repo_file, walk_repo_tree
from wodsync.catalog.yamlfile import MAX_FILE_BYTES, Document, parse_yaml, to_plain

# How a finding is classed (the reviewer's "who must approve it"); not a resource kind.
Privilege = Literal["privileged", "content"]
PRIVILEGED: Privilege = "privileged"
CONTENT: Privilege = "content"
Verb = Literal["added", "changed", "removed"]

WORKSHOPS = "catalog/workshops/"
WORKSHOP_FILE = "workshop.yaml"
VARIABLES_FILE = "catalog/variables.yaml"
TEMPLATES = "templates/"
LINK_MODE = "120000"
READ_LIMIT = MAX_FILE_BYTES

# Paths whose every change is privileged; a trailing "/" means the folder. CODEOWNERS gets these.
PRIVILEGED_PATHS: dict[str, str] = {
    "hosts/": "the host inventory: how wodsync reaches the host as root, its hub, packages, "
              "sysctl values and variables",
    "templates/": "a template of host system files, rendered and written as root",
    "catalog/system.yaml": "system files written as root on every host, and the commands run "
                           "after they change",
    "catalog/students.yaml": "the seats' Linux accounts: uids, groups, homes and shells",
    "catalog/guard.yaml": "the seat guard's rules: what kills students' processes, purges "
                          "their sessions and takes seats out of service",
    ".github/": "CI and CODEOWNERS: how pull requests are checked and who must review them",
    "wodsync/": "wodsync's own code, which runs as root on the controller and the hosts",
    "bootstrap": "the installer of wodsync and its test tools, run as root",
    "pyproject.toml": "wodsync's dependencies, installed where it runs as root",
}
WORKSHOP_KEYS: dict[str, str] = {
    "packages": "apt and pip packages installed as root on every host of the workshop's "
                "locations",
    "kernels": "Jupyter kernels installed as root on the hosts (pip packages, install commands)",
    "hooks": "scripts run as root on the host when a seat is created, copied, reset or cleaned",
    "compile": "scripts compiled with shc as root when a seat is created",
}
LOCATION_KEYS = ("location", "alternate_locations")
MOVE_WHY = "moves a workshop that installs or runs things as root (packages, kernel recipes, " \
           "hooks, compile) onto other hosts"
SECRET_WHY = "a variable holding a {secret: …} reference: its value is rendered into the " \
             "students' homes, readable by each student"
TEMPLATE_VAR_WHY = "a global variable used by templates/: it is rendered into host system files"
SCRIPT_WHY = "a hook or compile script of the workshop, run as root on the host"
LINK_WHY = "a symbolic link: wodsync never reads through links (validate refuses it)"
UNPARSED_WHY = "does not parse, so its privileged keys cannot be compared"
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*$")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MISSING: Any = object()


class ReviewError(Exception):
    """Inputs that cannot be reviewed: not a git repository, an unknown revision, a bad file."""


@dataclass(frozen=True)
class Finding:
    """One changed path or key: `line` is in the new version, None when the path is gone (or
    for a content file, where the path says enough)."""

    privilege: Privilege
    path: str
    line: int | None
    what: str
    verb: Verb
    why: str = ""

    def sort_key(self) -> tuple[Any, ...]:
        return (self.privilege != PRIVILEGED, self.path, self.line or 0, self.what)

    def as_json(self) -> dict[str, Any]:
        """The finding as `review --format json` prints it; the keys `kind` and `change` are
        the output's names (kept for its readers) for `privilege` and `verb`."""
        return {"kind": self.privilege, "path": self.path, "line": self.line, "what": self.what,
                "change": self.verb, "why": self.why}

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def message(self) -> str:
        subject = "file" if self.what == "file" else f"'{self.what}'"
        return f"{subject} {self.verb}: {self.why}" if self.why else f"{subject} {self.verb}"


@dataclass
class Review:
    """The findings of one comparison, privileged first."""

    base: str
    base_commit: str
    head: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def privileged(self) -> list[Finding]:
        return [f for f in self.findings if f.privilege == PRIVILEGED]

    @property
    def content(self) -> list[Finding]:
        return [f for f in self.findings if f.privilege == CONTENT]


# --- git -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangedFile:
    """One path that differs, as `git diff --raw` reports it (path relative to the root); a
    file of the pull request, not a change of a plan (`engine.change.Change`)."""

    path: str
    status: str
    old_mode: str
    new_mode: str


class Git:
    """The repository holding `root`, driven with argv lists; every failure is a ReviewError."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not root.is_dir():
            raise ReviewError(f"{root}: no such folder")
        try:
            self.prefix = _decode(self.run("rev-parse", "--show-prefix")).strip()
        except ReviewError as exc:
            raise ReviewError(f"{root} is not a git repository ({exc})") from None

    def run(self, *args: str) -> bytes:
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0",
               "LC_ALL": "C"}
        try:
            done = subprocess.run(["git", *args], cwd=self.root, env=env, capture_output=True,
                                  check=False)
        except FileNotFoundError:
            raise ReviewError("git is not installed") from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise ReviewError(lines[0] if lines else f"git {args[0]} failed")
        return done.stdout

    def commit(self, rev: str) -> str:
        """The commit id of `rev`, or a ReviewError saying it is unknown here."""
        if not rev or rev.startswith("-"):
            raise ReviewError(f"{rev!r} is not a git revision")
        try:
            out = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except ReviewError:
            raise ReviewError(f"unknown revision {rev!r} in {self.root} (is it fetched? e.g. "
                              "`git fetch origin main`)") from None
        return out.decode().strip()

    def changed_files(self, base: str, head: str | None) -> list[ChangedFile]:
        """Paths under the root that differ between `base` and `head` (None: the work tree,
        untracked files included, ignored ones not)."""
        args = ["diff", "--raw", "-z", "--no-renames", "--relative", "--no-ext-diff", base]
        found = _parse_raw(self.run(*args, *([head] if head else [])))
        if head is None:
            found += [self._untracked(p) for p in _paths(self.run(
                "ls-files", "-z", "--others", "--exclude-standard"))]
        return sorted(found, key=lambda c: c.path)

    def _untracked(self, rel: str) -> ChangedFile:
        mode = os.lstat(self.root / rel).st_mode
        new = LINK_MODE if stat.S_ISLNK(mode) else "100755" if mode & 0o100 else "100644"
        return ChangedFile(rel, "A", "000000", new)

    def files(self, rev: str, under: str) -> list[str]:
        out = self.run("ls-tree", "-r", "-z", "--name-only", "--full-tree", rev, "--",
                       self.prefix + under)
        return [p[len(self.prefix):] for p in _paths(out)]

    @contextmanager
    def blobs(self) -> Iterator[CatFile]:
        cat = CatFile(self.root)
        try:
            yield cat
        finally:
            cat.close()


def _decode(out: bytes) -> str:
    """Git's bytes as text; a name that is not UTF-8 survives the round trip to the OS."""
    return out.decode(errors="surrogateescape")


def _paths(out: bytes) -> list[str]:
    return [p for p in _decode(out).split("\0") if p]


def _parse_raw(out: bytes) -> list[ChangedFile]:
    """`:old_mode new_mode old_sha new_sha status\\0path\\0` records."""
    fields = _decode(out).split("\0")
    changed = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, _, _, status = meta[1:].split()
        changed.append(ChangedFile(path, status[0], old_mode, new_mode))
    return changed


class CatFile:
    """One `git cat-file --batch` process serving every blob the review reads."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})

    def read(self, spec: str, limit: int = READ_LIMIT) -> bytes | None:
        """The blob named `spec` (`<commit>:<path>`), at most `limit + 1` bytes; None when it is
        missing or not a file."""
        assert self.proc.stdin and self.proc.stdout
        if "\n" in spec:
            return None
        try:
            self.proc.stdin.write(spec.encode(errors="surrogateescape") + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ReviewError(f"git cat-file stopped while reading {spec}") from None
        header = self.proc.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            return None  # "<spec> missing" or "<spec> ambiguous": nothing follows
        size = int(header[2])
        data = self.proc.stdout.read(min(size, limit + 1))
        self._skip(size - len(data) + 1)
        return data if header[1] == b"blob" else None

    def _skip(self, n: int) -> None:
        assert self.proc.stdout
        while n > 0:
            n -= len(self.proc.stdout.read(min(n, 1 << 20)))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


# --- the two sides -----------------------------------------------------------------------------

class Side(Protocol):
    def read(self, rel: str) -> bytes | None: ...

    def files(self, under: str) -> list[str]: ...


@dataclass
class CommitSide:
    """A commit's files, read through `git cat-file`."""

    git: Git
    cat: CatFile
    commit: str

    def read(self, rel: str) -> bytes | None:
        return self.cat.read(f"{self.commit}:{self.git.prefix}{rel}")

    def files(self, under: str) -> list[str]:
        return self.git.files(self.commit, under)


@dataclass
class WorkTree:
    """The files under the root as they are now, read without following any link."""

    root: Path

    def read(self, rel: str) -> bytes | None:
        try:
            fd = open_repo_file(self.root, rel)
        except RepoFileError:
            return None
        with os.fdopen(fd, "rb") as f:
            os.set_blocking(fd, True)
            return f.read(READ_LIMIT + 1)

    def files(self, under: str) -> list[str]:
        found: list[str] = []

        def visit(rel: str, entry: os.DirEntry[str], depth: int) -> bool:
            if entry.is_file(follow_symlinks=False):
                found.append(rel)
            return entry.is_dir(follow_symlinks=False)

        try:
            walk_repo_tree(self.root, under.rstrip("/"), visit)
        except RepoFileError:
            return []
        return found


# --- YAML, key by key --------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """A part of a catalog file compared on its own: `why` is set when it is privileged."""

    label: str
    loc: tuple[Any, ...]
    value: Any
    why: str = ""


def parse(rel: str, raw: bytes | None) -> Document | None:
    """The round-trip document of one side, None when the path does not exist there."""
    return None if raw is None else parse_yaml(rel, raw)


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and "secret" in value


def split_items(rel: str, tree: Any, template_names: set[str]) -> list[Item]:
    """The items of one catalog file, each with its privilege; one item for a non-mapping."""
    if not isinstance(tree, dict):
        return [Item("document", (), tree, _path_why(rel))]
    if rel == VARIABLES_FILE:
        return [Item(str(k), (k,), v, _global_why(str(k), v, template_names))
                for k, v in tree.items()]
    if not _is_workshop_file(rel):
        return [Item(str(k), (k,), v, _path_why(rel)) for k, v in tree.items()]
    return _workshop_items(tree)


def _workshop_items(tree: dict[Any, Any]) -> list[Item]:
    moves = MOVE_WHY if installs_as_root(to_plain(tree)) else ""
    items = []
    for k, v in tree.items():
        if k == "variables" and isinstance(v, dict):
            items += [Item(f"variables.{n}", (k, n), x, SECRET_WHY if is_secret(to_plain(x))
                           else "") for n, x in v.items()]
        else:
            why = WORKSHOP_KEYS.get(str(k), "") or (moves if k in LOCATION_KEYS else "")
            items.append(Item(str(k), (k,), v, _kernels_why(to_plain(v)) if k == "kernels"
                              else why))
    return items


def _kernels_why(kernels: Any) -> str:
    """The kernels key's reason, with what each recipe it names installs as root."""
    recipes = [r for r in map(recipe_of, kernels if isinstance(kernels, list) else [])
               if r is not None]
    return "; ".join([WORKSHOP_KEYS["kernels"], *(r.describe() for r in recipes)])


def installs_as_root(workshop: dict[str, Any]) -> bool:
    """True when the workshop makes root install or run something on its hosts: packages,
    hooks, compile scripts or a kernel installer (a recipe, even named alone; any other kernel
    named alone is the host's own)."""
    hooks = workshop.get("hooks")
    kernels = workshop.get("kernels")
    packages = workshop.get("packages")
    return bool((isinstance(hooks, dict) and any(hooks.values())) or workshop.get("compile")
                or (isinstance(packages, dict) and any(packages.values()))
                or (isinstance(kernels, list)
                    and any(not isinstance(k, str) or recipe_of(k) for k in kernels)))


def _global_why(name: str, value: Any, template_names: set[str]) -> str:
    if is_secret(to_plain(value)):
        return SECRET_WHY
    return TEMPLATE_VAR_WHY if name in template_names else ""


def _path_why(rel: str) -> str:
    for pattern, why in PRIVILEGED_PATHS.items():
        if rel == pattern or (pattern.endswith("/") and rel.startswith(pattern)):
            return why
    return ""


def _is_workshop_file(rel: str) -> bool:
    parts = rel.split("/")
    return rel.startswith(WORKSHOPS) and len(parts) == 4 and parts[3] == WORKSHOP_FILE


def is_catalog_yaml(rel: str) -> bool:
    """Catalog files compared key by key: those the loader reads as models."""
    if _is_workshop_file(rel):
        return True
    if rel.startswith("hosts/") and rel.count("/") == 1:
        return rel.endswith(".yaml")
    return rel.startswith("catalog/") and rel.count("/") == 1 and rel.endswith(".yaml")


def first_difference(new: Any, old: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The path into `new` of the deepest node where `new` starts to differ from `old`."""
    if isinstance(new, dict) and isinstance(old, dict):
        for k, v in new.items():
            if k not in old:
                return (*loc, k)
            if to_plain(v) != to_plain(old[k]):
                return first_difference(v, old[k], (*loc, k))
    elif isinstance(new, list) and isinstance(old, list):
        for i, v in enumerate(new):
            if i >= len(old):
                return (*loc, i)
            if to_plain(v) != to_plain(old[i]):
                return first_difference(v, old[i], (*loc, i))
    return loc


def line_at(tree: Any, loc: tuple[Any, ...]) -> int:
    """1-based line of the node at `loc` (a mapping entry: its key), or of its nearest
    existing ancestor; 1 for the document itself."""
    node, line = tree, 0
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0]
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0]
            node = node[part]
        else:
            break
    return line + 1


def first_changed_line(old: bytes | None, new: bytes | None) -> int | None:
    """The first line of `new` that differs from `old` (None when `new` is gone)."""
    if new is None:
        return None
    a, b = (old or b"").splitlines(), new.splitlines()
    if a == b:
        return 1   # only the mode or the line endings changed
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i + 1
    return max(1, min(len(a) + 1, len(b)))


# --- classification ----------------------------------------------------------------------------

class Classifier:
    """Turns the changed paths between two sides into findings."""

    def __init__(self, old: Side, new: Side, files: list[ChangedFile]) -> None:
        self.old, self.new, self.files = old, new, files
        self._scripts: dict[str, set[str]] = {}

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        for changed in self.files:
            found += self.classify(changed)
        return sorted(found, key=Finding.sort_key)

    def classify(self, changed: ChangedFile) -> list[Finding]:
        rel = changed.path
        if changed.new_mode == LINK_MODE:
            return [Finding(PRIVILEGED, rel, None, "file", _verb(changed), LINK_WHY)]
        if is_catalog_yaml(rel):
            return self.yaml_findings(changed)
        why = _path_why(rel) or self.script_why(rel)
        if not why:
            return [Finding(CONTENT, rel, None, "file", _verb(changed))]
        return [self.file_finding(changed, PRIVILEGED, why)]

    def file_finding(self, changed: ChangedFile, privilege: Privilege, why: str) -> Finding:
        """The whole file, at its first changed line."""
        old = None if changed.status == "A" else self.old.read(changed.path)
        new = None if changed.status == "D" else self.new.read(changed.path)
        return Finding(privilege, changed.path, first_changed_line(old, new), "file",
                       _verb(changed), why)

    def yaml_findings(self, changed: ChangedFile) -> list[Finding]:
        """One finding per changed item; the file itself when only comments changed."""
        rel = changed.path
        old = parse(rel, None if changed.status == "A" else self.old.read(rel))
        new = parse(rel, None if changed.status == "D" else self.new.read(rel))
        broken = [d for doc in (new, old) if doc and doc.tree is None for d in doc.diagnostics]
        if broken:
            return [self._unparsed(changed, new, broken[0].message)]
        names = self.template_names if rel == VARIABLES_FILE else set()
        old_items = {i.label: i for i in split_items(rel, old.tree if old else {}, names)}
        new_items = {i.label: i for i in split_items(rel, new.tree if new else {}, names)}
        found = []
        for label in [*new_items, *(k for k in old_items if k not in new_items)]:
            f = self._item_finding(rel, old_items.get(label), new_items.get(label), new)
            if f is not None:
                found.append(f)
        return found or [self.file_finding(changed, _path_privilege(rel), _path_why(rel))]

    @staticmethod
    def _item_finding(rel: str, old: Item | None, new: Item | None,
                      doc: Document | None) -> Finding | None:
        """The finding for one item present on either side, None when it did not change; a
        removed item points at its nearest ancestor still in the file."""
        before = to_plain(old.value) if old else MISSING
        after = to_plain(new.value) if new else MISSING
        if before == after:
            return None
        some = new or old
        assert some is not None
        why = (new.why if new else "") or (old.why if old else "")
        verb: Verb = "added" if old is None else "removed" if new is None else "changed"
        loc = first_difference(new.value, old.value, new.loc) if new and old else some.loc
        line = line_at(doc.tree, loc) if doc is not None and doc.tree is not None else None
        return Finding(PRIVILEGED if why else CONTENT, rel, line, some.label, verb, why)

    def _unparsed(self, changed: ChangedFile, new: Document | None, problem: str) -> Finding:
        """A side that does not parse: a workshop or the global variables count as privileged,
        since what they would change cannot be told."""
        rel = changed.path
        conservative = _is_workshop_file(rel) or rel == VARIABLES_FILE or _path_why(rel)
        line = new.diagnostics[0].line if new is not None and new.diagnostics else 1
        return Finding(PRIVILEGED if conservative else CONTENT, rel,
                       None if changed.status == "D" else line, "file", _verb(changed),
                       f"{UNPARSED_WHY} ({problem})")

    def script_why(self, rel: str) -> str:
        """SCRIPT_WHY when `rel` is a hook or compile script of its workshop on either side."""
        parts = rel.split("/", 3)
        if not rel.startswith(WORKSHOPS) or len(parts) < 4:
            return ""
        return SCRIPT_WHY if parts[3] in self.scripts(parts[2]) else ""

    def scripts(self, key: str) -> set[str]:
        """The scripts workshop `key` names on either side (parsed once per workshop)."""
        if key not in self._scripts:
            rel = f"{WORKSHOPS}{key}/{WORKSHOP_FILE}"
            self._scripts[key] = workshop_scripts(self.old.read(rel)) | \
                workshop_scripts(self.new.read(rel))
        return self._scripts[key]

    @cached_property
    def template_names(self) -> set[str]:
        """Names used in templates/ on either side: a global variable among them reaches the
        hosts' system files."""
        names: set[str] = set()
        for side in (self.old, self.new):
            for rel in side.files(TEMPLATES):
                raw = side.read(rel) or b""
                names.update(IDENT_RE.findall(raw.decode(errors="replace")))
        return names


def workshop_scripts(raw: bytes | None) -> set[str]:
    """The hook and compile script paths a workshop.yaml names (empty when it does not parse)."""
    doc = parse(WORKSHOP_FILE, raw)
    tree = to_plain(doc.tree) if doc and doc.tree is not None else None
    if not isinstance(tree, dict):
        return set()
    hooks, compiled = tree.get("hooks"), tree.get("compile")
    scripts = [*(hooks.values() if isinstance(hooks, dict) else ()),
               *(compiled if isinstance(compiled, list) else ())]
    return {s for s in scripts if isinstance(s, str)}


def _path_privilege(rel: str) -> Privilege:
    return PRIVILEGED if _path_why(rel) else CONTENT


def _verb(changed: ChangedFile) -> Verb:
    return "added" if changed.status == "A" else "removed" if changed.status == "D" else "changed"


def _shown(path: str) -> str:
    """A path as printed: bytes that are not UTF-8 (kept by surrogateescape) as escapes."""
    return path.encode(errors="surrogateescape").decode(errors="backslashreplace")


def review(root: Path, base: str, head: str | None = None) -> Review:
    """Classify every change of `root` (its work tree, or the revision `head`) against `base`."""
    git = Git(root)
    base_commit = git.commit(base)
    head_commit = git.commit(head) if head else None
    with git.blobs() as cat:
        old = CommitSide(git, cat, base_commit)
        new: Side = CommitSide(git, cat, head_commit) if head_commit else WorkTree(root)
        files = git.changed_files(base_commit, head_commit)
        findings = Classifier(old, new, files).findings()
    findings = [Finding(f.privilege, _shown(git.prefix + f.path), f.line, f.what, f.verb, f.why)
                for f in findings]
    return Review(base, base_commit, head or "the work tree", findings)


# --- output ------------------------------------------------------------------------------------

MAX_ROWS = 200


def _gh(value: str, *, prop: bool = False) -> str:
    """Escape a value for a GitHub workflow command (its properties escape more)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value


def _count(n: int, what: str) -> str:
    return f"{n} {what} change{'s' * (n != 1)}"


def _summary(r: Review) -> str:
    return (f"{_count(len(r.privileged), 'privileged')} and {_count(len(r.content), 'content')} "
            f"in {r.head} against {r.base} ({r.base_commit[:12]})")


def format_text(r: Review) -> str:
    lines = [f"{f.privilege:<10}  {f.where()}  {f.message()}" for f in r.findings]
    return "\n".join([*lines, _summary(r)])


def format_github(r: Review) -> str:
    lines = []
    for f in r.privileged:
        props = f"file={_gh(f.path, prop=True)}"
        if f.line:
            props += f",line={f.line}"
        lines.append(f"::warning {props},title=privileged::{_gh(f.message())}")
    lines.append(f"::notice title=wodsync review::{_gh(_summary(r))}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def format_markdown(r: Review) -> str:
    """A section for the job summary and the PR comment: privileged changes first."""
    n = len(r.privileged)
    title = _count(n, "privileged") if n else "no privileged changes"
    out = [f"### wodsync review: {title}", "",
           f"Changes in {r.head} against `{_cell(r.base)}` (`{r.base_commit[:12]}`)."]
    if n:
        out += ["Privileged changes run as root on the hosts or reach their system; the "
                "operators review them (CODEOWNERS).", "",
                "| where | change | why |", "|---|---|---|"]
        out += [f"| `{_cell(f.where())}` | `{_cell(f.what)}` {f.verb} | {_cell(f.why)} |"
                for f in r.privileged[:MAX_ROWS]]
        if n > MAX_ROWS:
            out.append(f"| … | {n - MAX_ROWS} more | |")
    out += ["", f"{_count(len(r.content), 'content')} (notebooks and other workshop files, "
            "workshop metadata, replays, locations)."]
    return "\n".join(out)


def format_json(r: Review) -> str:
    return json.dumps({"base": r.base, "base_commit": r.base_commit, "head": r.head,
                       "privileged": len(r.privileged), "content": len(r.content),
                       "findings": [f.as_json() for f in r.findings]}, indent=2)


FORMATS = {"text": format_text, "github": format_github, "markdown": format_markdown,
           "json": format_json}


def format_review(r: Review, fmt: str) -> str:
    return FORMATS[fmt](r)


# --- CODEOWNERS --------------------------------------------------------------------------------

CODEOWNERS = ".github/CODEOWNERS"
BEGIN = "# BEGIN wodsync privileged paths: generated by `wodsync codeowners`, edit outside"
END = "# END wodsync privileged paths"
OWNER_RE = re.compile(r"^(@[A-Za-z0-9][A-Za-z0-9-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?"
                      r"|[^@\s]+@[^@\s]+\.[^@\s]+)$")


def check_owners(owners: list[str]) -> None:
    bad = [o for o in owners if not OWNER_RE.match(o)]
    if not owners or bad:
        raise ReviewError(f"owners must be @user, @org/team or an e-mail address: "
                          f"{', '.join(bad) or 'none given'}")


def digest(value: Any) -> str:
    """A short SHA-256 of `value` as canonical JSON: it changes when a privileged key does."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()[:16]


def _settings_line(rel: str, raw: bytes | None, names: set[str]) -> str | None:
    """`# <file> <privileged labels> <digest>` for a catalog file with privileged keys."""
    if raw is None:
        return None
    doc = parse(rel, raw)
    if doc is None or doc.tree is None:
        return f"# {rel} (does not parse) {digest(raw.decode(errors='replace'))}"
    items = [i for i in split_items(rel, doc.tree, names) if i.why]
    if not items:
        return None
    value = {i.label: to_plain(i.value) for i in items}
    return f"# {rel} {','.join(sorted(value))} {digest(value)}"


def codeowners_block(root: Path, owners: list[str]) -> list[str]:
    """The generated lines: privileged paths, every workshop's scripts, then the digests
    of privileged keys inside catalog files (comments: they change when those keys do)."""
    check_owners(owners)
    tree, who = WorkTree(root), " ".join(owners)
    keys = sorted(f"{WORKSHOPS}{k}/{WORKSHOP_FILE}" for k in _workshop_keys(root))
    lines = [BEGIN, "# Changes here run as root on the hosts or reach their system."]
    lines += [f"/{p} {who}" for p in PRIVILEGED_PATHS]
    for rel in keys:
        scripts = workshop_scripts(tree.read(rel))
        lines += [f"/{rel.rsplit('/', 1)[0]}/{s} {who}" for s in sorted(scripts)
                  if SAFE_PATH_RE.match(s) and ".." not in s.split("/")]
    names = {n for rel in tree.files(TEMPLATES)
             for n in IDENT_RE.findall((tree.read(rel) or b"").decode(errors="replace"))}
    settings = [_settings_line(rel, tree.read(rel), names) for rel in [*keys, VARIABLES_FILE]]
    lines += ["# Privileged keys inside catalog files; when one changes, run `wodsync "
              "codeowners`:", "# the change to this file then needs the operators' review."]
    lines += [s for s in settings if s]
    return [*lines, END]


def _workshop_keys(root: Path) -> list[str]:
    folder = root / WORKSHOPS
    if folder.is_symlink() or not folder.is_dir():
        return []
    return [e.name for e in folder.iterdir()
            if e.is_dir() and not e.is_symlink() and SAFE_PATH_RE.match(e.name)]


def split_codeowners(text: str) -> tuple[list[str], list[str]]:
    """The lines outside the generated block, and the block's lines (empty when absent)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line == BEGIN]
    if not starts:
        return lines, []
    if len(starts) > 1:
        raise ReviewError(f"{CODEOWNERS}: the generated block appears {len(starts)} times "
                          f"(lines {', '.join(str(i + 1) for i in starts)})")
    start = starts[0]
    end = next((i for i in range(start, len(lines)) if lines[i] == END), None)
    if end is None:
        raise ReviewError(f"{CODEOWNERS}:{start + 1}: the generated block has no end marker "
                          f"({END!r})")
    return lines[:start] + lines[end + 1:], lines[start:end + 1]


def block_owners(block: list[str]) -> list[str]:
    """The owners the block was generated with (from its first path line)."""
    for line in block:
        if line.startswith("/"):
            return line.split()[1:]
    return []


def codeowners_text(existing: str, block: list[str]) -> str:
    """The file with the block at its end: CODEOWNERS' last matching line wins, so no line
    written by hand can lift the operators' review from a privileged path."""
    outside, _ = split_codeowners(existing)
    while outside and not outside[-1].strip():
        outside.pop()
    return "\n".join([*outside, *([""] if outside else []), *block]) + "\n"


def read_codeowners(root: Path) -> str:
    path = root / CODEOWNERS
    if path.is_symlink():
        raise ReviewError(f"{path} is a symbolic link; wodsync does not write through links")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: cannot be read ({exc})") from None


def codeowners(root: Path, owners: list[str] | None) -> tuple[str, str]:
    """The current CODEOWNERS text and the one `wodsync codeowners` writes; `owners` default
    to those of the existing block."""
    existing = read_codeowners(root)
    owners = owners or block_owners(split_codeowners(existing)[1])
    if not owners:
        raise ReviewError(f"{root / CODEOWNERS} has no generated block yet: name the owners "
                          "with --owners (e.g. --owners @org/operators)")
    return existing, codeowners_text(existing, codeowners_block(root, owners))
