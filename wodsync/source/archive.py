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
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
MANIFEST_SUFFIX = ".json"
DIR_MODE, FILE_MODE, EXEC_MODE = 0o555, 0o444, 0o555


class ArchiveError(Exception):
    """The archive holds something a revision folder never may (the message names the entry)."""


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


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path,
                   links: list[tuple[str, str]], executables: set[str]) -> None:
    rel = _check_name(member.name)
    target = dest / rel
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


def extract_tree(stream: IO[bytes], dest: Path) -> tuple[int, list[RefusedLink]]:
    """Unpack a tar stream into the empty private folder `dest` and seal it read-only.

    Returns how many files were written and the links refused. Raises `ArchiveError` for an
    entry no commit can hold (a device, a hard link, an unsafe name).
    """
    links: list[tuple[str, str]] = []
    executables: set[str] = set()
    files = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _unpack_member(tar, member, dest, links, executables)
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
