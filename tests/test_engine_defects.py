"""The operator trial's defects of plan/apply, each reproduced against the loopback sshd lab."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from wodsync.engine.transport import CONNECT_TIMEOUT

from enginelab import NEEDS, PREFIX, UID_BASE, held_apply, plan_json, run, wodsync_command
from sshd import free_port

pytestmark = NEEDS


def _changes(lab: Path) -> set[tuple[str, str]]:
    return {(c["action"], c["address"]) for c in plan_json(lab)[0]["plan"]["changes"]}


def _grow(lab: Path, last: int) -> None:
    students = lab / "catalog/students.yaml"
    text = students.read_text()
    current = next(ln for ln in text.splitlines() if ln.strip().startswith("last:"))
    students.write_text(text.replace(current, f"    last: {last}"))


def test_a_seat_whose_uid_belongs_to_another_account_is_never_created(lab):
    """#1: growing the pool over a hand-made account's uid."""
    _grow(lab, 10)
    assert run(lab, "apply", "--yes").returncode == 0
    subprocess.run(["useradd", "-u", str(UID_BASE + 12), "-M", "zzwodt"], check=True)
    try:
        _grow(lab, 14)
        done = plan_json(lab)[0]["plan"]
        assert ("create", f"account:{PREFIX}12") not in {(c["action"], c["address"])
                                                          for c in done["changes"]}
        assert any(f"seat {PREFIX}12 cannot be created: uid {UID_BASE + 12} belongs to "
                   "account zzwodt" in e for e in done["errors"])
        applied = run(lab, "apply", "--yes")
        assert applied.returncode == 1
        assert [p.pw_name for p in pwd.getpwall() if p.pw_uid == UID_BASE + 12] == ["zzwodt"]
        assert pwd.getpwnam(f"{PREFIX}13").pw_uid == UID_BASE + 13, "the others are made"
    finally:
        subprocess.run(["userdel", "zzwodt"], check=False)


def _failing_hook(lab: Path, tmp_path: Path, code: int) -> Path:
    hook = tmp_path / "hook.sh"
    hook.write_text(f"touch {tmp_path}/ran-$$\nexit {code}\n")
    system = lab / "catalog/system.yaml"
    system.write_text(system.read_text().replace(f"[touch, {tmp_path}/changed]",
                                                 f"[sh, {hook}]"))
    return hook


def test_a_failing_on_change_fails_alone_and_is_retried_as_now_defined(lab, tmp_path):
    """#2: the rest of the batch converges; after the fix the command runs as defined now."""
    _failing_hook(lab, tmp_path, 3)
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 1
    assert "file.on_change: on_change sh" in applied.stderr and "exited 3" in applied.stderr
    assert pwd.getpwnam(f"{PREFIX}20"), "the accounts are created all the same"
    inventory = json.loads((lab.parent / "state/inventory.json").read_text())
    assert len(inventory["resources"]["account"]) == 20
    pending = plan_json(lab)[0]["plan"]["changes"]
    assert [c["detail"].split(", failed")[0] for c in pending] == \
        [f"on_change sh {tmp_path}/hook.sh left pending"]
    system = lab / "catalog/system.yaml"
    system.write_text(system.read_text().replace(f"[sh, {tmp_path}/hook.sh]",
                                                 f"[touch, {tmp_path}/changed]"))
    fixed = run(lab, "apply", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert (tmp_path / "changed").exists()
    assert run(lab, "plan").returncode == 0


def test_a_pending_command_of_a_file_no_longer_managed_is_dropped(lab, tmp_path):
    _failing_hook(lab, tmp_path, 3)
    assert run(lab, "apply", "--yes").returncode == 1
    (lab / "catalog/system.yaml").write_text("files: []\n")
    changes = _changes(lab)
    conf = f"file:{tmp_path}/etc/wodsync-test.conf"
    assert ("update", conf) in changes and ("delete", conf) in changes
    ran_before = len(list(tmp_path.glob("ran-*")))
    assert run(lab, "apply", "--yes").returncode == 0
    assert len(list(tmp_path.glob("ran-*"))) == ran_before, "the dropped command never ran"
    assert run(lab, "plan").returncode == 0


def test_a_missing_secret_fails_its_host_alone(lab):
    """#4: the other host is planned; the failing one is named, in text and in JSON."""
    host = lab / "hosts/lab1.yaml"
    text = host.read_text()
    (lab / "hosts/lab2.yaml").write_text(text + "variables:\n  TOKEN: {secret: WODT_NOPE}\n")
    host.write_text(text + "variables:\n  TOKEN: plain\n")
    (lab / "templates/test.conf.j2").write_text("# {{ BRANDING }} {{ TOKEN }}\n")
    env = {k: v for k, v in os.environ.items() if k != "WODT_NOPE"}
    done = run(lab, "plan", env=env)
    assert done.returncode == 1
    assert "✗ lab2: templates/test.conf.j2: secret WODT_NOPE is not set" in done.stderr
    assert "host lab1:" in done.stdout
    as_json = json.loads(run(lab, "plan", "--json", env=env).stdout)
    assert {r["host"]: bool(r["error"]) for r in as_json} == {"lab1": False, "lab2": True}


def test_an_invalid_sysctl_value_fails_that_key_only(lab):
    """#12: the key is named; the accounts are created."""
    host = lab / "hosts/lab1.yaml"
    text = host.read_text()
    host.write_text(text.replace("sysctl:\n", "sysctl:\n  net.ipv4.ip_local_port_range: "
                                              "not-a-range\n"))
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 1
    assert "sysctl net.ipv4.ip_local_port_range = 'not-a-range' refused" in applied.stderr
    assert pwd.getpwnam(f"{PREFIX}20")


def test_an_unknown_sysctl_key_is_a_plan_error(lab):
    host = lab / "hosts/lab1.yaml"
    host.write_text(host.read_text().replace("sysctl:\n", "sysctl:\n  net.wodsync.nope: 1\n"))
    done = run(lab, "check")
    assert done.returncode == 1
    assert "sysctl net.wodsync.nope does not exist on this host's kernel" in done.stdout


def test_a_renamed_prefix_deletes_the_old_seats_before_creating_the_new(lab):
    """#8: as a deletion under the cap; the new seats end up on their own private groups."""
    _grow(lab, 5)
    assert run(lab, "apply", "--yes").returncode == 0
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace(f"prefix: {PREFIX}",
                                                     f"prefix: {PREFIX}n"))
    refused = run(lab, "apply", "--yes")
    assert refused.returncode == 1 and "REFUSED: plan deletes 5 accounts" in refused.stdout
    applied = run(lab, "apply", "--yes", "--allow-deletions", "5")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for n in range(1, 6):
        user = pwd.getpwnam(f"{PREFIX}n{n}")
        assert (user.pw_uid, user.pw_gid) == (UID_BASE + n, UID_BASE + n)
        with pytest.raises(KeyError):
            pwd.getpwnam(f"{PREFIX}{n}")
    groups = Path("/etc/group").read_text()
    assert f"\n{PREFIX}1:" not in groups and f"\n{PREFIX}n1:x:{UID_BASE + 1}:" in groups
    assert run(lab, "plan").returncode == 0


def test_a_changed_home_root_moves_the_homes_with_their_files(lab, tmp_path):
    """#9."""
    _grow(lab, 3)
    assert run(lab, "apply", "--yes").returncode == 0
    (tmp_path / f"homes/{PREFIX}2/work.txt").write_text("mine\n")
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace(f"{tmp_path}/homes", f"{tmp_path}/moved"))
    assert ("update", f"account:{PREFIX}2") in _changes(lab)
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert pwd.getpwnam(f"{PREFIX}2").pw_dir == f"{tmp_path}/moved/{PREFIX}2"
    assert (tmp_path / f"moved/{PREFIX}2/work.txt").read_text() == "mine\n"
    assert not (tmp_path / f"homes/{PREFIX}2").exists()
    assert run(lab, "plan").returncode == 0


def test_the_shared_group_gets_the_catalogs_gid_outside_the_seat_range(lab):
    """#7: never groupadd's choice."""
    import grp

    assert run(lab, "apply", "--yes").returncode == 0
    assert grp.getgrnam("wodtgrp").gr_gid == UID_BASE
    _grow(lab, 22)
    assert run(lab, "apply", "--yes").returncode == 0
    assert pwd.getpwnam(f"{PREFIX}22").pw_gid == UID_BASE + 22


def test_home_acl_converges(lab, tmp_path):
    """With home_acl the ACL mask reads as 0770: the plan must still be empty after an apply."""
    subprocess.run(["useradd", "-u", str(UID_BASE + 900), "-M", f"{PREFIX}adm"], check=True)
    host = lab / "hosts/lab1.yaml"
    host.write_text(host.read_text() + f"home_acl: {PREFIX}adm\n")
    _grow(lab, 5)
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    acl = subprocess.run(["getfacl", "-p", f"{tmp_path}/homes/{PREFIX}3"], capture_output=True,
                         text=True, check=True).stdout
    assert f"user:{PREFIX}adm:rwx" in acl
    assert run(lab, "plan").returncode == 0, "an ACL mask is not drift"


def test_usage_errors_exit_64_not_the_drift_code(lab):
    """#14."""
    done = subprocess.run(wodsync_command(lab, "check", "--no-such-option"),
                          capture_output=True, text=True)
    assert done.returncode == 64 and "No such option" in done.stderr


def test_apply_json_without_yes_keeps_stdout_json(lab):
    """#15: the plan and the prompt go to stderr."""
    done = run(lab, "apply", "--json", stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list)
    assert "Apply these changes?" in done.stderr and "Plan: " in done.stderr


def test_secrets_file_problems_are_messages_not_tracebacks(lab, tmp_path):
    """#13."""
    missing = run(lab, "plan", "--secrets", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nope.yaml" in missing.stderr
    (tmp_path / "bad.yaml").write_text("a: [b\n")
    bad = run(lab, "plan", "--secrets", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "is not valid YAML" in bad.stderr


def _serve(handler) -> int:
    """A one-port server answering each connection with `handler(conn)`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                handler(conn)

    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1]


def _read_until_closed(conn: socket.socket) -> None:
    """A peer that never answers: it reads what the client sends until the client hangs up."""
    try:
        while conn.recv(4096):
            pass
    except OSError:  # a reset is a hang-up too
        pass


def test_a_port_that_is_not_ssh_is_a_one_line_error(lab):
    """#13: an HTTP server, then a silent port; no traceback, the host named once."""
    host = lab / "hosts/lab1.yaml"
    text = host.read_text()
    port = next(ln for ln in text.splitlines() if ln.startswith("port:"))
    http = _serve(lambda c: c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    host.write_text(text.replace(port, f"port: {http}"))
    done = run(lab, "plan")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "✗ lab1:" in done.stderr and "lab1: lab1" not in done.stderr
    assert "[Errno None]" not in done.stderr
    silent = _serve(_read_until_closed)
    host.write_text(text.replace(port, f"port: {silent}"))
    done = run(lab, "plan")
    assert done.returncode == 1
    assert f"does not speak SSH (no SSH banner within {CONNECT_TIMEOUT:g} s)" in done.stderr, \
        "the silent port is given up by the banner timeout, not left hanging"


def test_host_add_checks_location_and_pool_and_sets_a_state_dir(lab, sshd):
    """#16."""
    args = ("host", "add", "lab9", "--address", "127.0.0.1", "--port", str(sshd.port),
            "--accept-new")
    bad = run(lab, *args, "--location", "nowhere", "--pool", "test")
    assert bad.returncode == 1 and "unknown location 'nowhere'" in bad.stderr
    bad = run(lab, *args, "--location", "lab", "--pool", "nopool")
    assert bad.returncode == 1 and "unknown pool 'nopool'" in bad.stderr
    assert not (lab / "hosts/lab9.yaml").exists()
    ok = run(lab, *args, "--location", "lab", "--pool", "test")
    assert ok.returncode == 0, ok.stderr
    assert "state_dir: /var/lib/wodsync/repo" in (lab / "hosts/lab9.yaml").read_text()


def test_two_catalogs_never_share_an_inventory(lab, tmp_path):
    """#16: another catalog's host pointed at the same state folder is refused."""
    assert run(lab, "apply", "--yes").returncode == 0
    host = lab / "hosts/lab1.yaml"
    (lab / "hosts/other.yaml").write_text(host.read_text())
    host.unlink()
    done = run(lab, "plan")
    assert done.returncode == 1
    assert "holds the inventory of host lab1, not of host other" in done.stderr


def test_ctrl_c_finishes_the_batch_in_flight_then_reports(lab, tmp_path):
    """#10: the first Ctrl-C says what it finishes; the apply completes and is reported."""
    proc = held_apply(lab, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    (tmp_path / "gate").touch()
    out, err = proc.communicate(timeout=120)
    assert "interrupted: finishing the host batches in flight" in err
    assert proc.returncode == 0, out + err
    assert "converged" in err
    assert pwd.getpwnam(f"{PREFIX}20")


def test_a_second_ctrl_c_stops_the_host_side_at_a_safe_point(lab, tmp_path):
    """#10: after the second Ctrl-C no phase starts on the host; the next plan shows the rest."""
    proc = held_apply(lab, tmp_path)
    assert proc.stderr is not None
    said: list[str] = []

    def until_said(start: str) -> None:
        """Read the apply's stderr up to the line that starts with `start`."""
        while not (said and said[-1].startswith(start)):
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert line, f"the apply ended before saying {start!r}: {said}"
            said.append(line)

    proc.send_signal(signal.SIGINT)
    until_said("interrupted:")  # the first Ctrl-C taken: only then the second
    proc.send_signal(signal.SIGINT)
    until_said("stopping:")
    time.sleep(1.0)  # the agent's stdin closed: its watcher sees the end before the gate opens
    (tmp_path / "gate").touch()
    out, rest = proc.communicate(timeout=120)
    err = "".join(said) + rest
    assert proc.returncode == 1, out + err
    stopped = next(ln for ln in err.splitlines() if "stopped before" in ln)
    assert "account.create" in stopped
    time.sleep(1)
    with pytest.raises(KeyError):
        pwd.getpwnam(f"{PREFIX}20")
    assert ("create", f"account:{PREFIX}20") in _changes(lab)


def test_an_unreachable_port_says_so_once(lab):
    host = lab / "hosts/lab1.yaml"
    text = host.read_text()
    port = next(ln for ln in text.splitlines() if ln.startswith("port:"))
    host.write_text(text.replace(port, f"port: {free_port()}"))
    done = run(lab, "plan")
    assert done.returncode == 1
    assert "✗ lab1: cannot connect to 127.0.0.1:" in done.stderr
    assert "connection refused" in done.stderr.lower()
