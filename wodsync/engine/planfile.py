"""A saved plan (`wodsync plan --out PLAN.json`), applied as reviewed (`wodsync apply PLAN.json`).

The file holds every host's plan in full — changes with their data, which never includes a
secret — the revision of the catalog it was made from (a digest of every repository file, and
the git commit when there is one) and, per host, the digests of the facts it was made against.
Applying it computes the plan again from the same catalog and fresh facts and refuses a host
whose facts, or whose plan, moved since: what is applied is exactly what was reviewed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wodsync.engine.plan import HostPlan

FORMAT = "wodsync-plan/1"
TREE = ("catalog", "hosts", "templates")


class PlanFileError(Exception):
    """The saved plan cannot be used (unreadable, another format, another catalog)."""


def tree_digest(root: Path) -> str:
    """A digest of every file of the repository that shapes a plan (links are not followed)."""
    h = hashlib.sha256()
    for top in TREE:
        base = root / top
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                rel = path.relative_to(root).as_posix()
                data = str(path.readlink()).encode() if path.is_symlink() else path.read_bytes()
                h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return "sha256:" + h.hexdigest()


def git_commit(root: Path) -> str | None:
    """The commit checked out at `root`, when it is a git work tree."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


@dataclass(frozen=True)
class Revision:
    digest: str
    commit: str | None

    @classmethod
    def of(cls, root: Path) -> Revision:
        return cls(tree_digest(root), git_commit(root))

    def __str__(self) -> str:
        return (self.commit[:12] if self.commit else self.digest[:19])


@dataclass
class SavedPlan:
    revision: Revision
    created_at: str
    hosts: dict[str, HostPlan]

    def write(self, path: Path) -> None:
        data = {"format": FORMAT, "created_at": self.created_at,
                "revision": {"digest": self.revision.digest, "commit": self.revision.commit},
                "hosts": [p.to_json() for p in self.hosts.values()]}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> SavedPlan:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PlanFileError(f"{path}: not a readable plan ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PlanFileError(f"{path}: not a wodsync plan (format {FORMAT} expected)")
        try:
            hosts = [HostPlan.from_json(h) for h in data["hosts"]]
            revision = Revision(data["revision"]["digest"], data["revision"].get("commit"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanFileError(f"{path}: damaged plan ({exc})") from None
        return cls(revision, data.get("created_at", ""), {p.host: p for p in hosts})

    def check_revision(self, now: Revision) -> None:
        if now.digest != self.revision.digest:
            raise PlanFileError(f"the catalog moved since the plan was made (plan: revision "
                                f"{self.revision}, now {now}): make a new plan")


def new_saved_plan(root: Path, plans: list[HostPlan]) -> SavedPlan:
    return SavedPlan(Revision.of(root), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     {p.host: p for p in plans})
