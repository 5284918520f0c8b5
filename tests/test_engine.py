"""The host engine against a real sshd on loopback and real Linux accounts (test pool only)."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from enginelab import GROUP, NEEDS, PREFIX, SYSCTL, UID_BASE, plan_json, run
from sshd import free_port, kill_sessions

pytestmark = NEEDS


def test_fresh_host_converges_and_second_plan_is_empty(lab, tmp_path):
    first = run(lab, "plan")
    assert first.returncode == 2, first.stderr
    assert "+ account:wodt1  (uid 50001" in first.stdout
    assert "Plan: 22 to create, 0 to change, 0 to delete." in first.stdout
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "converged" in applied.stderr
    again = run(lab, "plan")
    assert again.returncode == 0 and "no changes" in again.stdout
    user = pwd.getpwnam("wodt7")
    assert (user.pw_uid, user.pw_gid, user.pw_dir) == (50007, 50007, f"{tmp_path}/homes/wodt7")
    st = Path(user.pw_dir).stat()
    assert (st.st_uid, st.st_mode & 0o777) == (50007, 0o700)
    assert "wodt7" in grp.getgrnam(GROUP).gr_mem
    shadow = Path("/etc/shadow").read_text()
    assert any(line.startswith("wodt7:!") for line in shadow.splitlines())
    conf = tmp_path / "etc/wodsync-test.conf"
    assert conf.read_text() == "# Lab on lab1\nseats=20\n"
    assert conf.stat().st_mode & 0o777 == 0o640 and (tmp_path / "changed").exists()
    assert run(lab, "check").returncode == 0


def test_drift_is_planned_exactly_and_repaired(lab, tmp_path):
    assert run(lab, "apply", "--yes").returncode == 0
    (tmp_path / "changed").unlink()
    subprocess.run(["userdel", "wodt3"], check=True)
    (tmp_path / "homes/wodt5").chmod(0o755)
    (tmp_path / "etc/wodsync-test.conf").write_text("edited by hand\n")
    Path("/proc/sys/" + SYSCTL.replace(".", "/")).write_text("4321")
    check = run(lab, "check")
    assert check.returncode == 2
    actions = {(a["action"], a["address"]) for a in plan_json(lab)[0]["plan"]["changes"]}
    assert actions == {("create", "account:wodt3"), ("update", "account:wodt5"),
                       ("update", f"file:{tmp_path}/etc/wodsync-test.conf"),
                       ("update", f"sysctl:{SYSCTL}"), ("update", f"group:{GROUP}")}
    assert run(lab, "apply", "--yes").returncode == 0
    assert run(lab, "plan").returncode == 0
    assert (tmp_path / "homes/wodt5").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "changed").exists()


def test_deletion_cap_refuses_then_allows_and_keeps_homes_with_files(lab, tmp_path):
    assert run(lab, "apply", "--yes").returncode == 0
    (tmp_path / "homes/wodt18/notebook.ipynb").write_text("{}")
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 20", "last: 15"))
    refused = run(lab, "apply", "--yes")
    assert refused.returncode == 1
    assert "REFUSED: plan deletes 5 accounts; the cap is 2" in refused.stdout
    assert pwd.getpwnam("wodt18")
    text = run(lab, "plan", "--allow-deletions", "5").stdout
    assert "- account:wodt18  (home " in text and "kept: 1 entries" in text
    assert run(lab, "apply", "--yes", "--allow-deletions", "5").returncode == 0
    with pytest.raises(KeyError):
        pwd.getpwnam("wodt18")
    assert (tmp_path / "homes/wodt18/notebook.ipynb").exists()
    assert not (tmp_path / "homes/wodt19").exists()


def test_accounts_not_created_by_wodsync_are_never_deleted(lab, tmp_path):
    subprocess.run(["useradd", "-u", "50019", "-M", "wodt19"], check=True)
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 20", "last: 18"))
    result = plan_json(lab)[0]
    assert not any(a["action"] == "delete" for a in result["plan"]["changes"])
    assert any("wodt19" in n and "never deleted" in n for n in result["plan"]["notes"])
    assert run(lab, "apply", "--yes").returncode == 0
    assert pwd.getpwnam("wodt19")


def test_growing_the_pool_creates_only_the_difference(lab):
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 20", "last: 10"))
    assert run(lab, "apply", "--yes").returncode == 0
    students.write_text(students.read_text().replace("last: 10", "last: 20"))
    creates = [a for a in plan_json(lab)[0]["plan"]["changes"] if a["action"] == "create"]
    assert [a["address"] for a in creates] == [f"account:wodt{n}" for n in range(11, 21)]
    assert run(lab, "apply", "--yes").returncode == 0
    assert run(lab, "plan").returncode == 0


def test_unknown_and_changed_host_keys_are_refused(lab, tmp_path):
    host = lab / "hosts/lab1.yaml"
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(tmp_path / "other")], check=True)
    assert other.returncode == 0
    fake = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    text = host.read_text()
    pinned = next(ln for ln in text.splitlines() if ln.startswith("host_key"))
    host.write_text(text.replace(pinned, f"host_key: {fake}"))
    result = run(lab, "plan")
    assert result.returncode == 1 and "host key of lab1 changed" in result.stderr
    assert not any(p.pw_name.startswith(PREFIX) and UID_BASE < p.pw_uid < UID_BASE + 1000
                   for p in pwd.getpwall()), "no account of the lab was made"
    rsa = subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f",
                          str(tmp_path / "rsa")], check=True)
    assert rsa.returncode == 0
    host.write_text(text.replace(pinned, "host_key: " + " ".join(
        (tmp_path / "rsa.pub").read_text().split()[:2])))
    result = run(lab, "plan")
    assert result.returncode == 1 and "lab1" in result.stderr and "key" in result.stderr


def test_one_unreachable_host_does_not_stop_the_other(lab):
    text = (lab / "hosts/lab1.yaml").read_text()
    port = next(ln for ln in text.splitlines() if ln.startswith("port:"))
    (lab / "hosts/lab2.yaml").write_text(text.replace(port, f"port: {free_port()}"))
    result = run(lab, "apply", "--yes", "--parallel", "2")
    assert result.returncode == 1
    assert "✗ lab2: cannot connect" in result.stderr or "✗ lab2:" in result.stderr
    assert "✓ lab1:" in result.stderr
    assert pwd.getpwnam("wodt20")


def test_local_transport_runs_the_same_engine(lab):
    host = lab / "hosts/lab1.yaml"
    host.write_text(host.read_text() + "transport: local\n")
    assert run(lab, "apply", "--yes").returncode == 0
    assert run(lab, "plan").returncode == 0
    assert pwd.getpwnam("wodt1").pw_uid == 50001


def test_host_add_pins_the_key(lab, sshd):
    from wodsync.engine.transport import fingerprint, scan_host_key

    wrong = run(lab, "host", "add", "lab3", "--address", "127.0.0.1", "--port",
                str(sshd.port), "--location", "lab", "--pool", "test",
                "--fingerprint", "SHA256:AAAA")
    assert wrong.returncode == 1 and not (lab / "hosts/lab3.yaml").exists()
    fp = fingerprint(scan_host_key("127.0.0.1", sshd.port))
    ok = run(lab, "host", "add", "lab3", "--address", "127.0.0.1", "--port", str(sshd.port),
             "--location", "lab", "--pool", "test", "--identity", str(sshd.client_key),
             "--fingerprint", fp)
    assert ok.returncode == 0, ok.stderr
    assert sshd.host_pub in (lab / "hosts/lab3.yaml").read_text()
    assert run(lab, "plan", "--host", "lab3").returncode == 2


def test_connection_killed_mid_apply_then_rerun_converges(lab, tmp_path, sshd):
    """The file written, its on_change command still running, accounts not made yet: cut the
    SSH session. The rerun must finish the job, including the command the cut left unrun."""
    hook = tmp_path / "hook.sh"
    hook.write_text(f"[ -e {tmp_path}/slept ] || {{ touch {tmp_path}/slept; sleep 120; }}\n"
                    f"touch {tmp_path}/changed\n")
    system = lab / "catalog/system.yaml"
    system.write_text(system.read_text().replace(f"[touch, {tmp_path}/changed]",
                                                 f"[sh, {hook}]"))
    first = subprocess.Popen([str(Path(os.sys.executable).parent / "wodsync"), "apply", "--yes",
                              "--root", str(lab)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "slept").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "slept").exists(), "apply never reached the on_change command"
    assert kill_sessions(sshd) > 0
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1, out + err
    assert not (tmp_path / "changed").exists()
    pending = {(a["action"], a["address"], a["detail"])
               for a in plan_json(lab)[0]["plan"]["changes"]}
    conf = f"file:{tmp_path}/etc/wodsync-test.conf"
    assert ("update", conf, f"on_change sh {hook} left pending") in pending, pending
    assert ("create", "account:wodt20", f"uid 50020, home {tmp_path}/homes/wodt20") in pending
    rerun = run(lab, "apply", "--yes")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (tmp_path / "changed").exists()
    assert run(lab, "plan").returncode == 0


def test_new_homes_start_from_etc_skel(lab, tmp_path):
    assert run(lab, "apply", "--yes").returncode == 0
    skel = sorted(p.name for p in Path("/etc/skel").iterdir())
    home = tmp_path / "homes/wodt4"
    assert sorted(p.name for p in home.iterdir()) == skel
    assert all(p.stat().st_uid == 50004 for p in home.iterdir())
