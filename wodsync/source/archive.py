"""Unpacking `git archive` output into a folder nobody can be tricked into leaving.

A revision folder is what the daemon validates and deploys, so unpacking a commit must not be
a way out of it: a commit is attacker-controlled input the moment a pull request is merged.
`tarfile.extractall` would follow a link created by an earlier member and write through it, so
the tar stream is unpacked by hand: names are checked (relative, no `..`), files are created
with `O_EXCL|O_NOFOLLOW`, and links are created only after every file and folder exists (no
write can pass through one). A link whose target leaves the folder — absolute, climbing out
with `..`, or escaping through another link — is not created at all; it is recorded in the
revision's manifest so validation reports it, since the catalog loader refuses every link
anyway and must see that the commit held one. Everything is then made read-only.

A commit is also small on the wire and large on disk when its blobs compress well (1.5 MB of
objects unpacked to 300 MB), so an export is bounded (`ExportLimits`: bytes in all, files,
bytes of one file). The caller asks git for the sizes before anything is written; the tar
stream is checked again here, member by member from its header, before a byte of it is
written, so a stream that passes a bound is stopped with `TooLarge` and nothing beyond the
bound ever reaches the disk.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
MANIFEST_SUFFIX = ".json"
DIR_MODE, FILE_MODE, EXEC_MODE = 0o555, 0o444, 0o555
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
SIZE_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
              "g": GIB, "gb": GIB, "gib": GIB}


class ArchiveError(Exception):
    """The archive holds something a revision folder never may (the message names the entry)."""


class TooLarge(ArchiveError):
    """The archive passed an `ExportLimits` bound; `path` locates the excess (the largest
    file, `.` when only the count is over) and `reason` says where the stream was stopped."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class ExportLimits:
    """How large one exported revision may be, so a small push cannot fill the state's disk.

    The defaults hold a whole catalog many times over (the largest WoD workshop that validates
    is 6.35 MB in 74 files) while keeping a hostile commit far below a disk's size; one file
    may be as large as GitHub itself accepts in a repository (100 MiB).
    """

    max_bytes: int = 256 * MIB
    max_files: int = 20_000
    max_file_bytes: int = 100 * MIB


@dataclass
class Tally:
    """Files counted (links too: both are blobs of the commit), their bytes, the largest one."""

    files: int = 0
    bytes: int = 0
    largest: str = ""
    largest_bytes: int = -1

    def add(self, path: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if size > self.largest_bytes:
            self.largest, self.largest_bytes = path, size

    def over(self, limits: ExportLimits) -> bool:
        return self.bytes > limits.max_bytes or self.files > limits.max_files \
            or self.largest_bytes > limits.max_file_bytes

    def where(self, limits: ExportLimits) -> str:
        """The path that locates the excess: the largest file, unless only the count is over."""
        if self.bytes > limits.max_bytes or self.largest_bytes > limits.max_file_bytes:
            return self.largest
        return "."

    def describe(self, limits: ExportLimits, complete: bool = True) -> str:
        """`312 MiB in 3 files (limit 256 MiB); largest: path (300 MiB)`: every bound passed
        with its limit; `at least …` when counting stopped early."""
        passed = []
        if self.bytes > limits.max_bytes:
            passed.append(f"limit {_versus(self.bytes, limits.max_bytes)}")
        if self.files > limits.max_files:
            passed.append(f"limit {limits.max_files} files")
        text = f"{'' if complete else 'at least '}{format_size(self.bytes)} in {self.files} " \
               f"{'file' if self.files == 1 else 'files'}"
        if passed:
            text += f" ({'; '.join(passed)})"
        if self.largest_bytes >= 0:
            text += f"; largest{'' if complete else ' so far'}: {self.largest} " \
                    f"({format_size(self.largest_bytes)}"
            if self.largest_bytes > limits.max_file_bytes:
                text += f", limit {_versus(self.largest_bytes, limits.max_file_bytes)} a file"
            text += ")"
        return text


def format_size(n: int) -> str:
    """`312 MiB`, `1.5 KiB`, `12 B`: one decimal at most."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def _versus(value: int, limit: int) -> str:
    """The limit as shown beside a value over it: exact bytes when rounding would hide why."""
    if format_size(value) == format_size(limit):
        return f"{limit} B"
    return format_size(limit)


def parse_size(text: str) -> int:
    """`256MiB`, `1G`, `500k`, `1048576` → bytes (K, M, G and KB, MB, GB are binary units too).

    Raises `ValueError` naming the text for anything else, zero and negative numbers included.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with KiB, MiB or GiB)")
    size = int(float(match.group(1)) * SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"{text!r}: a size must be more than 0 bytes")
    return size


@dataclass(frozen=True)
class RefusedLink:
    """A link of the commit that was not created: `path` in the commit, its `target`, why."""

    path: str
    target: str
    reason: str


def _check_name(name: str) -> str:
    rel = name.rstrip("/")
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\0" in rel:
        raise ArchiveError(f"archive entry {name!r}: not a plain relative path")
    return rel


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise ArchiveError(f"archive entry {member.name!r}: no data")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)


def _count(member: tarfile.TarInfo, rel: str, tally: Tally, limits: ExportLimits) -> None:
    """Count a file or link from its header, before any of its data is written; stop the
    stream (`TooLarge`) the moment a bound is passed."""
    tally.add(rel, member.size if member.isreg() else 0)
    if tally.over(limits):
        raise TooLarge(tally.where(limits),
                       f"{tally.describe(limits, complete=False)}; stopped at {rel}")


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path,
                   links: list[tuple[str, str]], executables: set[str], tally: Tally,
                   limits: ExportLimits) -> None:
    rel = _check_name(member.name)
    target = dest / rel
    if member.isreg() or member.issym():
        _count(member, rel, tally, limits)
    if member.isdir():
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif member.isreg():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_file(tar, member, target)
        if member.mode & 0o111:
            executables.add(rel)
    elif member.issym():
        links.append((rel, member.linkname))
    else:
        raise ArchiveError(f"archive entry {member.name!r}: type {member.type!r} is neither a "
                           "file, a folder nor a link")


def _escapes(rel: str, target: str) -> bool:
    """True when the link's target leaves the folder on its face (absolute or `..` out)."""
    if not target or target.startswith("/") or "\0" in target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined == ".." or joined.startswith("../")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _make_links(dest: Path, links: list[tuple[str, str]]) -> list[RefusedLink]:
    """Create the links that stay inside `dest`, then drop any that escapes through another."""
    refused = []
    made = []
    for rel, target in links:
        if _escapes(rel, target):
            refused.append(RefusedLink(rel, target, "points outside the revision"))
            continue
        (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        (dest / rel).symlink_to(target)
        made.append((rel, target))
    root = os.path.realpath(dest)
    for rel, target in made:
        if not _inside(os.path.realpath(dest / rel), root):
            (dest / rel).unlink()
            refused.append(RefusedLink(rel, target, "resolves outside the revision through "
                                       "another link"))
    return sorted(refused, key=lambda r: r.path)


def _seal(dest: Path, executables: set[str]) -> None:
    """Folders 0555, files 0444 (0555 when executable in the commit); links untouched."""
    for folder, dirs, files in os.walk(dest, topdown=False):
        base = Path(folder)
        for name in files:
            path = base / name
            if path.is_symlink():
                continue
            rel = path.relative_to(dest).as_posix()
            path.chmod(EXEC_MODE if rel in executables else FILE_MODE)
        for name in dirs:
            if not (base / name).is_symlink():
                (base / name).chmod(DIR_MODE)
    dest.chmod(DIR_MODE)


def extract_tree(stream: IO[bytes], dest: Path, limits: ExportLimits | None = None,
                 ) -> tuple[int, list[RefusedLink]]:
    """Unpack a tar stream into the empty private folder `dest` and seal it read-only.

    Returns how many files were written and the links refused. Raises `ArchiveError` for an
    entry no commit can hold (a device, a hard link, an unsafe name), `TooLarge` as soon as
    the stream passes `limits` (the default `ExportLimits()`); the caller removes `dest`.
    """
    links: list[tuple[str, str]] = []
    executables: set[str] = set()
    tally, limits = Tally(), limits or ExportLimits()
    files = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, dest, links, executables, tally, limits)
                files += member.isreg()
    except tarfile.TarError as exc:
        raise ArchiveError(f"unreadable archive: {exc}") from None
    except FileExistsError as exc:
        raise ArchiveError(f"archive entry {exc.filename}: appears twice") from None
    refused = _make_links(dest, links)
    _seal(dest, executables)
    return files, refused


def manifest_path(folder: Path) -> Path:
    """Where the export manifest of a revision folder lives: beside it, not inside."""
    return folder.with_name(folder.name + MANIFEST_SUFFIX)


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    """Write the manifest atomically (temp file, then rename), before the folder appears."""
    target = manifest_path(folder)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(target)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a revision folder, or {} when it has none or it is unreadable."""
    try:
        data = json.loads(manifest_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def refused_links(folder: Path) -> list[RefusedLink]:
    """The links of the commit that the export did not create (from the manifest)."""
    out = []
    for item in read_manifest(folder).get("refused_links", []):
        if isinstance(item, dict):
            out.append(RefusedLink(str(item.get("path", "")), str(item.get("target", "")),
                                   str(item.get("reason", ""))))
    return out


def refused_json(refused: list[RefusedLink]) -> list[dict[str, str]]:
    return [asdict(r) for r in refused]


def make_writable(folder: Path) -> None:
    """Give the owner write access to every folder of a sealed tree, so it can be removed."""
    if folder.is_symlink() or not folder.is_dir():
        return
    folder.chmod(stat.S_IMODE(folder.stat().st_mode) | stat.S_IRWXU)
    for base, dirs, _ in os.walk(folder):
        for name in dirs:
            path = Path(base) / name
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IRWXU)
