"""A bare origin that a daemon follows and a clone to commit in, for the daemon's tests and
its bench (which times the push apart from the commit)."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT = ["git", "-c", "user.email=tester@wodsync.invalid", "-c", "user.name=wodsync tester"]


class GitError(RuntimeError):
    """A git command failed; the message names it and ends with git's own words."""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


class Origin:
    """`folder/origin.git` (bare, branch main) and its clone `folder/work`."""

    def __init__(self, folder: Path) -> None:
        self.origin, self.work = folder / "origin.git", folder / "work"
        folder.mkdir(parents=True, exist_ok=True)
        git(folder, "init", "-q", "--bare", "-b", "main", str(self.origin))
        git(folder, "clone", "-q", str(self.origin), str(self.work))

    def write(self, rel: str, text: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str, push: bool = True) -> str:
        """Commit everything in the clone (and push it, unless told not to); the new sha."""
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        if push:
            self.push()
        return git(self.work, "rev-parse", "HEAD")

    def push(self) -> None:
        git(self.work, "push", "-q", "origin", "HEAD:main")


def local_lab(folder: Path, prefix: str, uid_base: int, last: int) -> Origin:
    """An origin holding the daemon tests' lab, committed (its sha in `.first`): this machine
    as the `local` host, a pool of seats 1..`last` with homes under `folder/homes`, a motd
    rendered from a variable (drift a test can make), no workshop."""
    homes = folder / "homes"
    homes.mkdir()
    folder.chmod(0o755)
    r = Origin(folder)
    r.write("catalog/locations.yaml", "locations:\n  - name: lab\n")
    r.write("catalog/students.yaml", f"pools:\n  test:\n    prefix: {prefix}\n    first: 1\n"
            f"    last: {last}\n    uid_base: {uid_base}\n    gid_base: {uid_base}\n"
            f"    home_root: {homes}\n")
    r.write("catalog/variables.yaml", "BRANDING: Lab\n")
    r.write("catalog/system.yaml", f"files:\n  - template: motd.j2\n    path: {folder}/motd\n")
    r.write("templates/motd.j2", "Welcome to {{ host.name }} ({{ BRANDING }})\n")
    r.write("catalog/workshops/README.md", "none yet\n")
    r.write("hosts/local.yaml", "address: localhost\ntransport: local\nlocation: lab\n"
            f"pool: test\nstate_dir: {folder}/hoststate\n")
    r.first = r.commit("a lab")
    return r
