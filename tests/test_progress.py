"""What `apply` shows while it works: one log line per step off a terminal (text or JSON), a
rich display on a terminal (a real pseudo-terminal), and the agent's phase steps as they come
(the persistent agent's wire, or a one-shot agent's stderr in whatever pieces the pipe cuts).

A local host with ten seats, wodto51-60 (uids 54851-54860; the same group of tests as
test_hub_tls, which uses 54801-54850), made again by each apply.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from wodsync.agent.protocol import PROGRESS_MARK
from wodsync.engine.remote import _progress_lines
from wodsync.progress import Batch, Lines, Progress, agent_step

from helpers import remove_test_accounts, wodsync, wodsync_argv

PREFIX, UID_BASE, GROUP = "wodto", 54800, "wodtoprg"
HOMES = Path("/home/wodsync-test-progress")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture
def lab(tmp_path):
    """A one-host catalog (local, no hub) whose apply creates ten seats."""
    if os.geteuid() != 0:
        pytest.skip("needs root (real Linux accounts)")
    taken = [n for n in (f"{PREFIX}{i}" for i in range(51, 61))
             if subprocess.run(["getent", "passwd", n], capture_output=True).returncode == 0]
    if taken:
        _cleanup()
    files = {
        "catalog/workshops/WKSHP-Prog/workshop.yaml":
            "name: Prog\ncapacity: 10\nseats: {first: 51, last: 60}\nlocation: lab\n"
            "duration: 1\n",
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml":
            f"pools:\n  test:\n    prefix: {PREFIX}\n    first: 51\n    last: 60\n"
            f"    uid_base: {UID_BASE}\n    gid_base: {UID_BASE}\n    home_root: {HOMES}\n"
            f"    group: {GROUP}\n",
        "hosts/lab.yaml": f"address: localhost\ntransport: local\nlocation: lab\npool: test\n"
                          f"state_dir: {tmp_path}/state\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    yield tmp_path
    _cleanup()


def _steps(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " INFO lab: " in ln]


@pytest.mark.parametrize("agent", ["persistent", "oneshot"])
def test_apply_off_a_terminal_prints_a_log_line_per_step_up_to_all_changes_done(lab, agent):
    """The agent's steps come as `progress` lines of the persistent agent's wire, or as
    marked lines on a one-shot agent's stderr: the same lines either way."""
    env = {k: v for k, v in os.environ.items() if k != "WODSYNC_AGENT"}
    done = wodsync("apply", "--yes", "--root", lab,
                   env=env if agent == "persistent" else dict(env, WODSYNC_AGENT="oneshot"))
    assert done.returncode == 0, done.stdout + done.stderr
    steps = _steps(done.stderr)
    phases = [re.search(r"INFO lab: ([^:\[]+)", s).group(1).strip() for s in steps]
    assert phases[0] == "observing" and phases[-2:] == ["observing again", "converged"], steps
    assert "applying account.create" in phases, steps
    counts = [tuple(map(int, m.groups())) for s in steps
              if (m := re.search(r"\[(\d+)/(\d+) changes", s))]
    total = counts[-1][1]
    assert total >= 10 and counts[-1] == (total, total), steps
    assert [c[0] for c in counts] == sorted(c[0] for c in counts), "done never goes back"
    assert all(re.search(r"\d+\.\d s\]", s) for s in steps), "each line says the elapsed time"


def test_apply_with_log_json_prints_each_step_as_a_json_line_with_its_fields(lab):
    done = wodsync("apply", "--yes", "--log-json", "--root", lab)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(ln) for ln in done.stderr.splitlines() if ln.startswith("{")]
    steps = [ln for ln in lines if ln["logger"].startswith("wodsync.progress")]
    assert steps and all(ln["host"] == "lab" and ln["level"] == "info" and "time" in ln
                         for ln in steps)
    assert steps[-1]["phase"] == "converged"
    assert steps[-1]["done"] == steps[-1]["total"] >= 10
    assert any(ln["phase"] == "applying account.create" for ln in steps)


def test_apply_on_a_terminal_draws_the_rich_display_instead_of_log_lines(lab):
    main, child = pty.openpty()
    proc = subprocess.Popen(wodsync_argv("apply", "--yes", "--root", lab),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child,
                            env=dict(os.environ, TERM="xterm", COLUMNS="120"))
    os.close(child)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output from apply within 120 s: " + shown.decode())
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(main)
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode() + shown.decode()
    proc.stdout.close()
    text = ANSI.sub("", shown.decode(errors="replace"))
    assert "\x1b[" in shown.decode(errors="replace"), "a terminal gets the live display"
    assert " INFO lab: " not in text, "no log lines on a terminal"
    final = re.search(r"lab\s+converged\s+(\d+)/(\d+)\s+changes", text)
    assert final and final.group(1) == final.group(2), text[-2000:]


def test_the_agents_progress_lines_are_read_across_pipe_pieces_and_count_changes():
    seen: list[dict] = []
    feed = _progress_lines(seen.append)
    line = (PROGRESS_MARK + json.dumps({"phase": "package.install", "step": 2, "steps": 3,
                                        "detail": "pip: installing 5 packages"}) + "\n").encode()
    feed(b"a warning the agent printed\n" + line[:7])
    assert seen == []
    feed(line[7:] + line)
    assert [s["detail"] for s in seen] == ["pip: installing 5 packages"] * 2

    shown = Progress()
    # file.write 10, sysctl.write 20, account phases 48-54, package.install 60
    batch = Batch({"file": 2, "account": 10, "package": 3})
    assert batch.total == 15
    step = agent_step(shown, "h", batch)
    steps = batch.names
    step({"phase": "account.create", "step": steps.index("account.create")})
    assert shown.hosts["h"].done == 2, "the files' phases are all behind"
    step({"phase": "package.install", "step": steps.index("package.install")})
    assert shown.hosts["h"].done == 12 and shown.hosts["h"].phase == "applying package.install"


def test_the_daemons_lines_leave_out_hosts_with_nothing_to_change(caplog):
    lines = Lines(changes_only=True)
    with caplog.at_level("INFO", logger="wodsync.progress"):
        lines.update("idle", "observing")
        lines.update("idle", "converged", done=0, total=0)
        lines.update("busy", "applying", done=0, total=4)
    assert [r.getMessage().split(" [")[0] for r in caplog.records] == ["busy: applying"]
