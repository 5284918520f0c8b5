"""Egress allow-lists enforced by the real kernel: nftables, and iptables where nft is absent.

Everything happens in a fake host (tests/netns.py: its own network and mount namespaces, named
`wodteg170`), so this machine's own rules are never read or touched. Inside it, servers listen
on an address the workshop's list allows and on one it does not (both on its loopback device,
so the traffic is local yet not to loopback), a UDP echo stands for the resolver that the
host's /etc/resolv.conf names, and a probe run as a seat's uid (`setpriv`) says whether a
connection is made or refused. Sessions are made and ended with the real CLI over SSH, the
kind is planned and applied against the real ruleset.

Accounts: prefix `wodte`, uids 53601-53610 (of 53601-53650; the catalog keeps seats' ids within
1000..59999, so not the 60601-60650 first planned), made in the fake host's copy of /etc only.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import until
from helpers import wodsync as run_wodsync
from netns import FakeHost, netns_available, start_host
from sshd import keygen

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not netns_available()
    or shutil.which("nft") is None or shutil.which("iptables-restore") is None
    or shutil.which("setpriv") is None,
    reason="needs root, openssh-server, network namespaces, nftables, iptables and setpriv "
           "(./bootstrap test)")

PREFIX, UID_BASE, SEATS = "wodte", 53600, 10
NETNS_PREFIX, INDEX = "wodteg", 170
ALLOWED, DENIED, RESOLVER, PORT = "10.232.0.1", "10.232.0.2", "10.232.0.53", 8001
FENCED, OPEN = "WKSHP-Fenced", "WKSHP-Open"
OUTSIDER = UID_BASE + 49  # a uid of the range no seat of the catalog has

# TCP servers that accept and close, on both addresses and on loopback; UDP echoes on port 53
# of the resolver and of the address outside the list.
SERVERS = f"""
import socket, threading
def tcp(addr):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, {PORT})); s.listen(16)
    while True: s.accept()[0].close()
def udp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 53))
    while True:
        data, peer = s.recvfrom(512); s.sendto(data, peer)
for fn, addr in ((tcp, "{ALLOWED}"), (tcp, "{DENIED}"), (tcp, "127.0.0.1"),
                 (udp, "{RESOLVER}"), (udp, "{DENIED}")):
    threading.Thread(target=fn, args=(addr,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
# `ok`, or `refused <errno>`: a TCP connection, or a UDP datagram answered.
PROBE = """
import socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        socket.create_connection((addr, port), timeout=3).close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.connect((addr, port)); s.send(b"q"); s.recv(16)
    print("ok")
except OSError as exc:
    print("refused", exc.errno)
"""


def reach(host: FakeHost, uid: int, addr: str, port: int = PORT, proto: str = "tcp") -> bool:
    """Whether `uid` reaches `addr:port` from inside the host (a refusal is quick: REJECT)."""
    done = host.run("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                    "/usr/bin/python3", "-c", PROBE, proto, addr, str(port))
    assert done.returncode == 0 and done.stdout.split()[:1] in (["ok"], ["refused"]), \
        done.stdout + done.stderr
    return done.stdout.strip() == "ok"


def fenced(host: FakeHost, uid: int) -> None:
    """What a seat of the fenced workshop may and may not reach."""
    assert reach(host, uid, ALLOWED)
    assert reach(host, uid, "127.0.0.1"), "loopback (the hub) must stay reachable"
    assert reach(host, uid, RESOLVER, 53, "udp"), "the host's resolver must stay reachable"
    assert not reach(host, uid, DENIED)
    assert not reach(host, uid, DENIED, 53, "udp")


def open_to_all(host: FakeHost, uid: int) -> None:
    assert reach(host, uid, ALLOWED) and reach(host, uid, DENIED)
    assert reach(host, uid, DENIED, 53, "udp")


def _range_taken() -> list[str]:
    return [p.pw_name for p in pwd.getpwall()
            if UID_BASE < p.pw_uid <= UID_BASE + 50 or p.pw_name.startswith(PREFIX)]


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Iterator[FakeHost]:
    """The fake host, its addresses, its resolver and its servers."""
    taken = _range_taken()
    if taken:
        pytest.skip(f"uids {UID_BASE + 1}-{UID_BASE + 50} or prefix {PREFIX} are taken on "
                    f"this machine ({', '.join(taken[:5])}): this module needs them free")
    workdir = tmp_path_factory.mktemp("egress")
    key = workdir / "client_key"
    keygen(key)
    fake = start_host(INDEX, workdir, key, prefix=NETNS_PREFIX)
    servers = None
    try:
        for addr in (ALLOWED, DENIED, RESOLVER):
            assert fake.run("ip", "addr", "add", f"{addr}/32", "dev", "lo").returncode == 0
        resolv = fake.root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text(f"nameserver {RESOLVER}\n")
        servers = subprocess.Popen(
            ["nsenter", "-t", str(fake.sshd.process.pid), "-n", "-m", "/usr/bin/python3", "-c",
             SERVERS], stdout=subprocess.PIPE, text=True)
        assert servers.stdout and servers.stdout.readline().strip() == "ready"
        yield fake
    finally:
        if servers is not None:
            servers.kill()
            servers.wait()
        fake.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, host) -> Iterator[Path]:
    """A catalog whose one host is the fake one: a fenced workshop (seats 1-5) and an open one
    (6-10), its accounts made once."""
    root = tmp_path_factory.mktemp("egress-repo")
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n",
        "catalog/students.yaml": f"pools:\n  test:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: {SEATS}\n    uid_base: {UID_BASE}\n"
                                 f"    gid_base: {UID_BASE}\n    home_root: /home\n",
        "catalog/variables.yaml": "BRANDING: Egress\n",
        f"catalog/workshops/{FENCED}/workshop.yaml": workshop(f"[{ALLOWED}:{PORT}]", 1),
        f"catalog/workshops/{FENCED}/README.md": "fenced\n",
        f"catalog/workshops/{OPEN}/workshop.yaml": workshop(None, 6),
        f"catalog/workshops/{OPEN}/README.md": "open\n",
        f"hosts/{host.name}.yaml": (
            f"address: {host.address}\nuser: root\nidentity: {host.sshd.client_key}\n"
            f"host_key: {host.sshd.host_pub}\nlocation: lab\npool: test\n"
            "state_dir: /etc/wodsync-state\n"),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    applied = wodsync(root, "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    yield root
    for n in range(1, SEATS + 1):
        host.run("userdel", f"{PREFIX}{n}")
        host.run("rm", "-rf", f"/home/{PREFIX}{n}")


def workshop(egress: str | None, first: int) -> str:
    return (f"name: Egress {first}\ncapacity: 5\nseats: {{first: {first}, last: {first + 4}}}\n"
            "location: lab\nduration: 1\n" + (f"egress: {egress}\n" if egress else ""))


def wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wodsync(*args, "--root", root, "--state-dir", root.parent / "state")


def session(root: Path, key: str) -> dict[str, Any]:
    done = wodsync(root, "session", "create", key, "--email", "ada@example.org", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def uid_of(data: dict[str, Any]) -> int:
    return UID_BASE + int(data["credentials"]["username"][len(PREFIX):])


def end(root: Path, data: dict[str, Any]) -> None:
    done = wodsync(root, "session", "cleanup", data["id"])
    assert done.returncode == 0, done.stdout + done.stderr


def plan(root: Path) -> tuple[int, list[dict[str, Any]]]:
    done = wodsync(root, "plan", "--json", "--verbose")
    assert done.returncode in (0, 2), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)[0]["plan"]["changes"]


def egress_changes(root: Path) -> list[str]:
    return sorted(f"{c['action']} {c['address']}" for c in plan(root)[1]
                  if c["address"].startswith("egress:"))


def ruleset(host: FakeHost) -> str:
    return host.run("nft", "list", "ruleset").stdout


def test_a_fenced_seat_reaches_its_list_only_until_its_cleanup(host, repo):
    fenced_seat, open_seat = session(repo, FENCED), session(repo, OPEN)
    try:
        fenced(host, uid_of(fenced_seat))
        open_to_all(host, uid_of(open_seat))
        open_to_all(host, OUTSIDER)
        listed = ruleset(host)
        assert f"{uid_of(fenced_seat)} : jump ws_{FENCED}" in listed
        assert f"{uid_of(open_seat)} :" not in listed
        code, changes = plan(repo)
        assert code == 0, changes
    finally:
        end(repo, fenced_seat)
        end(repo, open_seat)
    open_to_all(host, uid_of(fenced_seat))
    assert "table inet wodsync" not in ruleset(host)


def test_refused_packets_are_counted_in_the_facts_and_do_not_make_a_plan_stale(host, repo):
    seat = session(repo, FENCED)
    address = f"egress:{seat['credentials']['username']}"
    try:
        before = verbose_plan(repo)
        assert "0 packets refused" in before["noops"][address], before["noops"]
        assert not reach(host, uid_of(seat), DENIED)
        assert not reach(host, uid_of(seat), DENIED)
        after = verbose_plan(repo)
        assert "2 packets refused" in after["noops"][address], after["noops"]
        assert after["digests"]["egress"] == before["digests"]["egress"]
    finally:
        end(repo, seat)


def verbose_plan(root: Path) -> dict[str, Any]:
    done = wodsync(root, "plan", "--json", "--verbose")
    assert done.returncode == 0, done.stdout + done.stderr
    plan: dict[str, Any] = json.loads(done.stdout)[0]["plan"]
    plan["noops"] = {n["address"]: n["reason"] for n in plan["noops"]}
    return plan


def test_the_kind_restores_updates_and_drops_rules_and_leaves_other_tables(host, repo):
    assert host.run("nft", "add", "table", "inet", "theirs").returncode == 0
    seat = session(repo, FENCED)
    uid, user = uid_of(seat), seat["credentials"]["username"]
    try:
        assert host.run("nft", "delete", "table", "inet", "wodsync").returncode == 0  # reboot
        open_to_all(host, uid)
        assert egress_changes(repo) == [f"create egress:{user}"]
        assert wodsync(repo, "apply", "--yes").returncode == 0
        fenced(host, uid)
        assert egress_changes(repo) == []
        assert host.run("nft", "insert", "rule", "inet", "wodsync", f"ws_{FENCED}", "ip", "daddr",
                        DENIED, "accept").returncode == 0
        assert reach(host, uid, DENIED)
        assert egress_changes(repo) == ["update egress:*"]
        assert wodsync(repo, "apply", "--yes").returncode == 0
        fenced(host, uid)
        _set_egress(repo, f"[{ALLOWED}:{PORT}, '{DENIED}']")
        assert egress_changes(repo) == [f"update egress:{user}"]
        assert wodsync(repo, "apply", "--yes").returncode == 0
        assert reach(host, uid, DENIED) and reach(host, uid, DENIED, 53, "udp")
        _set_egress(repo, None)
        assert egress_changes(repo) == []  # no workshop has a list: the kind is not looked at
        _set_egress(repo, f"[{ALLOWED}:{PORT}]", OPEN)
        assert egress_changes(repo) == [f"delete egress:{user}"]
        assert wodsync(repo, "apply", "--yes").returncode == 0
        open_to_all(host, uid)
        assert "table inet theirs" in ruleset(host)
    finally:
        _set_egress(repo, f"[{ALLOWED}:{PORT}]")
        _set_egress(repo, None, OPEN)
        end(repo, seat)
        host.run("nft", "delete", "table", "inet", "theirs")


def _set_egress(repo: Path, egress: str | None, key: str = FENCED) -> None:
    first = 1 if key == FENCED else 6
    (repo / f"catalog/workshops/{key}/workshop.yaml").write_text(workshop(egress, first))


def test_iptables_enforces_the_same_lists_where_nft_is_absent(host, repo):
    hidden = shutil.which("nft") or "/usr/sbin/nft"
    assert host.run("mount", "--bind", "/dev/null", hidden).returncode == 0
    try:
        seat = session(repo, FENCED)
        uid = uid_of(seat)
        try:
            fenced(host, uid)
            open_to_all(host, OUTSIDER)
            saved = host.run("iptables-save", "-t", "filter").stdout
            assert f"--uid-owner {uid}" in saved and "-A OUTPUT -j WODSYNC-EGRESS" in saved
            assert egress_changes(repo) == []
        finally:
            end(repo, seat)
        open_to_all(host, uid)
        assert "--uid-owner" not in host.run("iptables-save", "-t", "filter").stdout
        _without_any_firewall_a_fenced_create_fails_and_frees_its_seat(host, repo)
    finally:
        until(lambda: host.run("umount", hidden).returncode == 0, "nft stays hidden")


def _without_any_firewall_a_fenced_create_fails_and_frees_its_seat(host: FakeHost,
                                                                    repo: Path) -> None:
    xtables = os.path.realpath(shutil.which("iptables-save") or "/usr/sbin/iptables-save")
    assert host.run("mount", "--bind", "/dev/null", xtables).returncode == 0
    try:
        done = wodsync(repo, "session", "create", FENCED, "--email", "ada@example.org")
        assert done.returncode == 1 and "egress lists cannot be enforced" in done.stderr, \
            done.stdout + done.stderr
        opened = session(repo, OPEN)  # an open workshop needs no firewall
        assert opened["state"] == "active"
        end(repo, opened)
    finally:
        until(lambda: host.run("umount", xtables).returncode == 0, "iptables stays hidden")
