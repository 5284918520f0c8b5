"""Workshop sessions against real accounts, homes, hooks and shc on two local hosts (no hub:
the hub side of a session is `test_sessions_api.py`'s)."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from wodsync.agent.run import BASE_PATH
from wodsync.controller import open_controller
from wodsync.secrets import Entry, Secrets
from wodsync.store import Candidate, Participant, SessionState

from helpers import until
from pg import pg_url  # noqa: F401  (a fixture)
from sessionlab import HOMES, cleanup_accounts, wodsync, write_catalog

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("shc") is None,
                                reason="needs root and shc (./bootstrap test)")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """The session lab, converged once for the module (80 accounts on two local hosts)."""
    cleanup_accounts()
    tmp = tmp_path_factory.mktemp("sessions")
    root = tmp / "repo"
    write_catalog(root, tmp)
    applied = wodsync(root, tmp, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield {"root": root, "tmp": tmp}
    cleanup_accounts()


@pytest.fixture
def ctl(catalog, tmp_path, request):
    """A controller on a fresh store (SQLite, or PostgreSQL when the test asks for it)."""
    db = request.getfixturevalue("pg_url") if getattr(request, "param", "") == "pg" else None
    controller = open_controller(catalog["root"], tmp_path / "state", db, Secrets())
    yield controller
    for s in controller.store.sessions.find(live=True):
        controller.sessions.purge(s.id, "test teardown")
    controller.close()


def alice(n: int = 0) -> Participant:
    return Participant(f"Alice {n}", f"alice{n}@example.org", "ACME")


def _home(user: str) -> Path:
    return HOMES / user


def _locked(user: str) -> bool:
    line = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                if ln.startswith(user + ":"))
    return line.split(":")[1].startswith("!")


def test_create_renders_the_seat_compiles_runs_hooks_and_sets_a_password(ctl, catalog):
    created = ctl.sessions.create("WKSHP-Sess", alice())
    s = created.session
    assert (s.state, s.host, s.location) == (SessionState.ACTIVE, "lab1", "lab")
    home = _home(s.username)
    nb = json.loads((home / "WKSHP-Sess/1-Intro.ipynb").read_text())
    assert nb["cells"][0]["source"] == [f"# Seat {s.seat} of WKSHP-Sess"]
    assert (home / "WKSHP-Sess/data/notes.txt").read_text().endswith("{{ STDID }}\n"), \
        "files that are not templates are copied as they are"
    script = home / "WKSHP-Sess/scripts/secret.sh"
    assert script.read_bytes()[:4] == b"\x7fELF", "a compiled script never reaches the home"
    assert b"s3cr3t" not in script.read_bytes()
    ran = subprocess.run(["runuser", "-u", s.username, "--", str(script)], capture_output=True,
                         text=True, check=True)
    assert ran.stdout.strip() == f"token for {s.username}: s3cr3t-{s.seat}"
    assert not (home / "WKSHP-Sess/scripts/create.sh").exists(), "hooks are root's"
    assert (catalog["tmp"] / f"created-{s.username}").exists()
    assert not _locked(s.username)
    assert all(p.stat().st_uid == pwd.getpwnam(s.username).pw_uid for p in home.rglob("*"))
    history = ctl.store.sessions.events(s.id)
    assert f"create wodtx{s.seat} {s.username} {s.id}" in history[-1].output
    assert s.ends_at is not None and s.started_at is not None


def test_cleanup_records_completion_empties_the_home_and_locks(ctl, catalog):
    s = ctl.sessions.create("WKSHP-Sess", alice()).session
    notebook = _home(s.username) / "WKSHP-Sess/1-Intro.ipynb"
    nb = json.loads(notebook.read_text())
    nb["cells"][1]["execution_count"] = 3
    notebook.write_text(json.dumps(nb))
    ended = ctl.sessions.cleanup(s.id)
    assert ended.state == SessionState.ENDED and ended.completion == 50.0
    assert list(_home(s.username).iterdir()) == []
    assert _locked(s.username)
    assert (catalog["tmp"] / f"cleaned-{s.username}").exists()
    assert not ctl.store.sessions.find(live=True)


def test_a_reset_workshop_holds_its_seat_until_reset(ctl, catalog):
    s = ctl.sessions.create("WKSHP-Reset", alice()).session
    (_home(s.username) / "WKSHP-Reset/work.txt").write_text("mine")
    held = ctl.sessions.cleanup(s.id)
    assert held.state == SessionState.HELD and _locked(s.username)
    assert (_home(s.username) / "WKSHP-Reset/work.txt").exists(), "kept until RESET"
    again = ctl.sessions.create("WKSHP-Reset", alice(1)).session
    assert again.seat != s.seat, "a held seat is not given again"
    reset = ctl.sessions.reset(s.id)
    assert reset.state == SessionState.ENDED and list(_home(s.username).iterdir()) == []
    assert (catalog["tmp"] / f"reset-{s.username}").exists()


@pytest.mark.parametrize("ctl", ["sqlite", "pg"], indirect=True)
def test_fifty_creates_at_once_give_distinct_seats_within_capacity(ctl):
    results, errors = [], []

    def one(n: int) -> None:
        try:
            results.append(ctl.sessions.create("WKSHP-Sess", alice(n)).session)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20, errors[:3]
    assert {type(e).__name__ for e in errors} == {"NoSeat"}
    assert len({(s.host, s.seat) for s in results}) == 20
    live = ctl.store.sessions.find(live=True)
    assert len(live) == 20 and all(s.state == SessionState.ACTIVE for s in live)
    assert all(not _locked(s.username) for s in results)


def test_the_same_participant_twice_gets_their_session_back(ctl):
    from wodsync.sessions.service import Duplicate

    first = ctl.sessions.create("WKSHP-Sess", alice()).session
    with pytest.raises(Duplicate) as raised:
        ctl.sessions.create("WKSHP-Sess", Participant("A", "ALICE0@example.org"))
    assert raised.value.session.id == first.id


def test_unknown_and_inactive_workshops_are_refused(ctl):
    from wodsync.sessions.service import UnknownWorkshop

    with pytest.raises(UnknownWorkshop, match="unknown workshop 'WKSHP-Nope'"):
        ctl.sessions.create("WKSHP-Nope", alice())
    with pytest.raises(UnknownWorkshop, match="is not active"):
        ctl.sessions.create("WKSHP-Off", alice())
    assert ctl.store.sessions.find() == []


def _snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p)] = (st.st_uid, st.st_mode, digest)
    return out


def _runs_as(uid: int) -> bool:
    """Some process of this machine runs with real uid `uid`."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        if any(ln.startswith("Uid:") and ln.split()[1] == str(uid) for ln in lines):
            return True
    return False


def test_links_and_processes_left_by_the_previous_occupant(ctl, catalog, tmp_path):
    """The seat's previous occupant plants links and leaves a process before the next CREATE:
    nothing outside the home is written or chowned, and the process is gone."""
    first = ctl.sessions.create("WKSHP-Sess", alice()).session
    ctl.sessions.cleanup(first.id)
    user = first.username
    target = tmp_path / "rootdir"
    (target / "scripts").mkdir(parents=True)
    (target / "scripts/keep.sh").write_text("root's\n")
    target.chmod(0o755)
    before = _snapshot(target)
    home = _home(user)
    as_student = ["runuser", "-u", user, "--"]
    subprocess.run([*as_student, "ln", "-s", str(target), str(home / "WKSHP-Sess")], check=True)
    subprocess.run([*as_student, "ln", "-s", str(target / "scripts/keep.sh"),
                    str(home / ".bashrc")], check=True)
    sleeper = subprocess.Popen([*as_student, "sleep", "600"])
    try:
        # runuser opens a PAM session before its child becomes the student: under load that
        # takes a moment, and a process that is not yet the student's is no one's leftover.
        uid = pwd.getpwnam(user).pw_uid
        until(lambda: _runs_as(uid), f"{user}'s sleep never started", timeout=30)
        second = ctl.sessions.create("WKSHP-Sess", alice(1)).session
        assert second.username == user, "the freed seat is the first one again"
        assert _snapshot(target) == before, "nothing outside the home changed"
        assert (home / "WKSHP-Sess").is_dir() and not (home / "WKSHP-Sess").is_symlink()
        assert sleeper.wait(timeout=10) != 0, "the previous occupant's process was ended"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_a_full_location_fails_over_to_the_alternate(ctl):
    """Seats of the primary location taken (by another workshop's failover sessions)."""
    other = [Candidate("lab", "lab1", n, f"wodtx{n}") for n in range(1, 21)]
    for n in range(20):
        ctl.store.sessions.allocate("WKSHP-Elsewhere", alice(100 + n), other, 40, 1, "test",
                                    "x")
    s = ctl.sessions.create("WKSHP-Sess", alice()).session
    assert (s.location, s.host, s.username) == ("alt", "alt1", "wodty1")
    assert not _locked("wodty1")


def test_an_unreachable_primary_host_fails_over(catalog, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(catalog["root"], root)
    host = root / "hosts/lab1.yaml"
    host.write_text(host.read_text().replace(
        "address: localhost\ntransport: local\n",
        "address: 127.0.0.1\nport: 9\nhost_key: ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAINzfOlzAboCD63XDt919hOsKiQP5cZgs8+hiyJVx3GXU\n"))
    controller = open_controller(root, tmp_path / "state", None, Secrets())
    try:
        s = controller.sessions.create("WKSHP-Sess", alice()).session
        assert (s.location, s.host) == ("alt", "alt1")
        # Whatever the call may have made there stays lab1's until a release says so: the
        # attempt waits as `releasing` (its seat held, its participant free to go elsewhere).
        pending = controller.store.sessions.find(state=SessionState.RELEASING)
        assert [p.host for p in pending] == ["lab1"] and "unreachable" in pending[0].error
        controller.sessions.purge(s.id)
    finally:
        controller.close()


def test_cli_create_show_extend_purge(catalog, tmp_path):
    state = tmp_path / "state"
    created = wodsync(catalog["root"], state, "session", "create", "WKSHP-Sess", "--email",
                      "bob@example.org", "--name", "Bob", "--json")
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    assert data["state"] == "active" and data["credentials"]["username"] == "wodtx1"
    assert len(data["credentials"]["password"]) == 12
    shown = wodsync(catalog["root"], state, "session", "show", data["id"])
    assert f"password:    {data['credentials']['password']}" in shown.stdout
    assert "creating → active: seat ready" in shown.stdout
    assert f"      | create wodtx1 wodtx1 {data['id']}" in shown.stdout  # the hook's output
    extended = wodsync(catalog["root"], state, "session", "extend", data["id"], "--hours", "1",
                       "--json")
    assert extended.returncode == 0, extended.stderr
    assert json.loads(extended.stdout)["ends_at"] > data["ends_at"]
    too_long = wodsync(catalog["root"], state, "session", "extend", data["id"], "--hours",
                       "100")
    assert too_long.returncode == 1 and "more than the" in too_long.stderr
    listed = wodsync(catalog["root"], state, "session", "list", "--state", "active")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["SESSION", "STATE", "WORKSHOP", "USER", "HOST", "ENDS", "E-MAIL"]
    ends = datetime.fromisoformat(json.loads(extended.stdout)["ends_at"])
    assert row.split()[0] == data["id"] and ends.strftime("%Y-%m-%d %H:%MZ") in row
    purged = wodsync(catalog["root"], state, "session", "purge", data["id"])
    assert purged.returncode == 0 and "state:       ended" in purged.stdout
    assert _locked("wodtx1") and list(_home("wodtx1").iterdir()) == []
    bad = wodsync(catalog["root"], state, "session", "create", "WKSHP-Sess", "--email", "nope")
    assert bad.returncode == 1 and "invalid participant" in bad.stderr


def test_a_full_apply_keeps_live_seats(ctl, catalog):
    s = ctl.sessions.create("WKSHP-Sess", alice()).session
    (_home(s.username) / "WKSHP-Sess/mine.txt").write_text("work")
    for args in ((), ("--state", str(ctl.state))):  # host records alone, then with the store
        applied = wodsync(catalog["root"], ctl.state, "apply", "--yes", *args)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert not _locked(s.username)
        assert (_home(s.username) / "WKSHP-Sess/mine.txt").read_text() == "work"


def test_a_pool_shrink_over_a_live_seat_is_refused_naming_the_session(ctl, catalog, tmp_path):
    sessions = [ctl.sessions.create("WKSHP-Reset", alice(n)).session for n in range(5)]
    last = max(sessions, key=lambda s: s.seat)
    root = tmp_path / "repo"  # the same hosts, a catalog whose pool wodtx ends at seat 24
    shutil.copytree(catalog["root"], root)
    shutil.rmtree(root / "catalog/workshops/WKSHP-Off")
    students = root / "catalog/students.yaml"
    students.write_text(students.read_text().replace("    last: 40\n", "    last: 24\n", 1))
    reset_ws = root / "catalog/workshops/WKSHP-Reset/workshop.yaml"
    reset_ws.write_text(reset_ws.read_text().replace(
        "capacity: 5\nseats: {first: 21, last: 25}", "capacity: 4\nseats: {first: 21, last: 24}"))
    done = wodsync(root, ctl.state, "apply", "--yes", "--allow-deletions", "50",
                   "--state", str(ctl.state), "--host", "lab1")
    assert done.returncode == 1
    assert f"seat {last.username}, held by session {last.id}" in done.stdout
    assert pwd.getpwnam(last.username) and pwd.getpwnam("wodtx30"), "nothing was applied"
    assert grp.getgrnam(last.username)


def test_expiry_cleans_up_due_sessions(ctl):
    from datetime import timedelta

    s = ctl.sessions.create("WKSHP-Sess", alice()).session
    later = s.ends_at + timedelta(minutes=1)
    ended = ctl.sessions.expire(now=later)
    assert [e.id for e in ended] == [s.id] and ended[0].state == SessionState.ENDED
    assert _locked(s.username)


def _password_works(user: str, password: str) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = next(ln for ln in Path("/etc/shadow").read_text().splitlines()
                  if ln.startswith(user + ":")).split(":")[1]
    return crypt.crypt(password, hashed) == hashed


def test_a_burst_shares_one_call_and_a_failing_seat_fails_alone(catalog, tmp_path):
    """Five CREATEs at once with one lane: the first leaves alone, the four others wait and
    leave in one `seat_create`. The create hook refuses odd seats: those fail and are purged,
    each alone; the others of the same call are active with their own passwords."""
    root = tmp_path / "repo"
    shutil.copytree(catalog["root"], root)
    odd = root / "catalog/workshops/WKSHP-Odd"
    (odd / "scripts").mkdir(parents=True)
    (odd / "workshop.yaml").write_text(
        "name: Odd\ncapacity: 5\nseats: {first: 26, last: 30}\nlocation: lab\nduration: 1\n"
        "hooks: {create: scripts/create.sh}\n")
    shutil.copy(root / "catalog/workshops/WKSHP-Sess/1-Intro.ipynb", odd / "1-Intro.ipynb")
    (odd / "scripts/create.sh").write_text(
        "#!/bin/bash\nif [ $((STDID % 2)) -eq 1 ]; then echo odd seat refused; exit 3; fi\n")
    controller = open_controller(root, tmp_path / "state", None, Secrets())
    burst = controller.sessions.burst
    burst.lanes = 1
    sizes: list[int] = []
    carry = burst._call

    def held_first(name, host, payload):  # the first call waits until the others queue
        if not sizes:
            for _ in range(600):
                if burst.waiting(name) == 4:
                    break
                threading.Event().wait(0.05)
        sizes.append(len(payload["seats"]))
        return carry(name, host, payload)

    burst._call = held_first
    outcomes: list = []

    def one(n: int) -> None:
        try:
            outcomes.append(controller.sessions.create("WKSHP-Odd", alice(n)))
        except Exception as exc:
            outcomes.append(exc)

    try:
        threads = [threading.Thread(target=one, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sizes == [1, 4]
        sessions = {s.seat: s for s in controller.store.sessions.find(workshop="WKSHP-Odd")}
        assert sorted(sessions) == [26, 27, 28, 29, 30]
        for n, s in sessions.items():
            home = _home(s.username)
            if n % 2:
                assert s.state == SessionState.FAILED and "create hook" in s.error, s.error
                assert _locked(s.username) and list(home.iterdir()) == []
            else:
                assert s.state == SessionState.ACTIVE
                assert _password_works(s.username, s.password)
                assert (home / "WKSHP-Odd/1-Intro.ipynb").exists()
        records = catalog["tmp"] / "state-lab1/seats"
        assert sorted(p.stem for p in records.glob("*.json")) == sorted(
            sessions[n].username for n in (26, 28, 30)), "only the seats in use are recorded"
        created = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(created) == 3 and all(c.timings.get("password") for c in created)
    finally:
        for s in controller.store.sessions.find(live=True):
            controller.sessions.purge(s.id, "test teardown")
        controller.close()


# ---- hooks get values as data --------------------------------------------------------------

HOOKS_WORKSHOP = """name: Hooks
capacity: 3
seats: {first: 38, last: 40}
location: lab
duration: 1
varpass: true
variables:
  GREETING: hello
  MY-VAR: 3
  PATH: /evil
  TOKEN: {secret: HOOKS_TOKEN}
hooks: {create: scripts/create.sh, cleanup: scripts/cleanup.sh}
"""
HOOK_SECRETS = {"HOOKS_TOKEN": Entry("hooks-s3cr3t", frozenset({"WKSHP-Hooks"})),
                "OTHER_TOKEN": Entry("other-s3cr3t", frozenset({"WKSHP-Sess"}))}
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Author", "GIT_AUTHOR_EMAIL": "author@example.org",
           "GIT_COMMITTER_NAME": "Author", "GIT_COMMITTER_EMAIL": "author@example.org"}


def _dump_hook(seen: Path, name: str) -> str:
    """A hook that keeps what it was given: environment, variables file and its mode."""
    return ("#!/bin/bash\nset -eu\n"
            f'out="{seen}/$STUDENT-{name}"\nmkdir -p "$out"\n'
            'env -0 > "$out/env"\n'
            'stat -c "%a %u" "$WOD_VARIABLES" > "$out/mode"\n'
            'cp "$WOD_VARIABLES" "$out/variables.json"\n'
            'printf %s "$WOD_VARIABLES" > "$out/path"\n'
            'echo "$WOD_GREETING" > "$out/greeting"\n'
            'echo "hello $WOD_STUDENT"\n')


def _hooks_catalog(catalog: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the lab with WKSHP-Hooks (seats 38-40 of lab1), a host variable and a global
    secret granted to another workshop, committed as `main`."""
    root, seen = tmp_path / "repo", tmp_path / "seen"
    shutil.copytree(catalog["root"], root)
    folder = root / "catalog/workshops/WKSHP-Hooks"
    (folder / "scripts").mkdir(parents=True)
    (folder / "workshop.yaml").write_text(HOOKS_WORKSHOP)
    shutil.copy(root / "catalog/workshops/WKSHP-Sess/1-Intro.ipynb", folder / "1-Intro.ipynb")
    for name in ("create", "cleanup"):
        (folder / f"scripts/{name}.sh").write_text(_dump_hook(seen, name))
    with (root / "catalog/variables.yaml").open("a") as f:
        f.write("SHARED: {secret: OTHER_TOKEN}\n")
    with (root / "hosts/lab1.yaml").open("a") as f:
        f.write("variables:\n  HOSTVAR: from-lab1\n")
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "base")):
        subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True)
    return root, seen


def _seen_env(folder: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in (folder / "env").read_bytes().decode().split("\0")
             if item)
    return dict(pairs)


def test_a_variable_holding_shell_reaches_the_root_hook_as_data(catalog, tmp_path):
    """Issue 17: a pull request changing only a variable to `x"; id > FILE; echo "` is
    content for review, and the CREATE's root hook sees the literal string: `id` never runs."""
    root, seen = _hooks_catalog(catalog, tmp_path)
    pwned = tmp_path / "pwned"
    attack = f'x"; id > {pwned}; echo "'
    ws = root / "catalog/workshops/WKSHP-Hooks/workshop.yaml"
    ws.write_text(ws.read_text().replace("GREETING: hello", f"GREETING: '{attack}'"))
    reviewed = wodsync(root, tmp_path, "review", "--base", "main")
    assert reviewed.returncode == 0, reviewed.stderr
    assert "0 privileged changes and 1 content change" in reviewed.stdout, reviewed.stdout
    controller = open_controller(root, tmp_path / "state", None,
                                 Secrets(env={}, entries=HOOK_SECRETS))
    try:
        s = controller.sessions.create("WKSHP-Hooks", alice()).session
        assert s.state == SessionState.ACTIVE and s.username == "wodtx38"
        created = seen / f"{s.username}-create"
        assert (created / "greeting").read_text() == attack + "\n"
        assert not pwned.exists(), "the id never ran"
        env = _seen_env(created)
        assert env["WOD_GREETING"] == attack and env["PATH"] == BASE_PATH
        assert env["WOD_PATH"] == "/evil" and env["WOD_HOSTVAR"] == "from-lab1"
        assert (env["WOD_STUDENT"], env["WOD_STDID"], env["WOD_WKSHP"], env["WOD_MODEWS"],
                env["WOD_PASSSTU"]) == (s.username, "38", "WKSHP-Hooks", "WKSHP", s.password)
        assert env["WOD_TOKEN"] == "hooks-s3cr3t" and env["WOD_BRANDING"] == "Lab"
        assert (created / "mode").read_text().split() == ["600", "0"]
        values = json.loads((created / "variables.json").read_text())
        assert values["MY-VAR"] == 3 and values["GREETING"] == attack
        assert not Path((created / "path").read_text()).exists(), "gone after the hook"
        assert "SHARED" not in values and "WOD_SHARED" not in env
        assert not any(b"other-s3cr3t" in p.read_bytes() for p in seen.rglob("*")
                       if p.is_file()), "a secret not granted to the workshop never arrives"
        history = controller.store.sessions.events(s.id)
        assert f"hello {s.username}" in history[-1].output
        assert not any("s3cr3t" in f"{e.message} {e.output}" for e in history)
        ended = controller.sessions.cleanup(s.id)
        assert ended.state == SessionState.ENDED
        cleaned = _seen_env(seen / f"{s.username}-cleanup")
        assert "WOD_PASSSTU" not in cleaned and cleaned["WOD_TOKEN"] == "hooks-s3cr3t"
        assert "PASSSTU" not in json.loads(
            (seen / f"{s.username}-cleanup/variables.json").read_text())
    finally:
        for live in controller.store.sessions.find(live=True):
            controller.sessions.purge(live.id, "test teardown")
        controller.close()


def test_a_hook_written_as_a_template_is_refused_by_validate(catalog, tmp_path):
    root, _ = _hooks_catalog(catalog, tmp_path)
    hook = root / "catalog/workshops/WKSHP-Hooks/scripts/create.sh"
    hook.write_text('#!/bin/bash\necho "{{ GREETING }}" > /tmp/greeting\n')
    done = wodsync(root, tmp_path, "validate")
    assert done.returncode == 1
    assert ("catalog/workshops/WKSHP-Hooks/scripts/create.sh:2:7: error[hook-template]: hooks "
            "are not rendered: `{{ GREETING }}` reaches the script as $WOD_GREETING") \
        in done.stdout
