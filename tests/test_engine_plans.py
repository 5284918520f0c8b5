"""The plan as a value, one writer per host, the inventory, the agent's table of operations —
against the loopback sshd lab and real accounts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from enginelab import NEEDS, held_apply, lab_shadow, plan_json, run

pytestmark = NEEDS


def test_a_saved_plan_is_applied_as_reviewed(lab, tmp_path):
    saved = tmp_path / "plan.json"
    made = run(lab, "plan", "--out", str(saved))
    assert made.returncode == 2, made.stderr
    data = json.loads(saved.read_text())
    assert data["format"] == "wodsync-plan/1" and data["revision"]["digest"].startswith("sha256")
    (host,) = data["hosts"]
    change = next(c for c in host["changes"] if c["address"] == "account:wodt3")
    assert change["data"]["uid"] == 50003 and change["data"]["home"].endswith("/homes/wodt3")
    assert set(host["digests"]) >= {"account", "file", "sysctl", "group"}
    applied = run(lab, "apply", str(saved))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert run(lab, "plan").returncode == 0


def test_a_saved_plan_is_refused_when_the_host_moved(lab, tmp_path):
    saved = tmp_path / "plan.json"
    assert run(lab, "plan", "--out", str(saved)).returncode == 2
    subprocess.run(["useradd", "-u", "50999", "-M", "wodt999"], check=True)
    refused = run(lab, "apply", str(saved))
    assert refused.returncode == 1
    assert "✗ lab1: refusing the saved plan: the facts of account changed" in refused.stderr
    assert "wodt3" not in Path("/etc/passwd").read_text()


def test_a_saved_plan_is_refused_when_the_catalog_moved(lab, tmp_path):
    saved = tmp_path / "plan.json"
    assert run(lab, "plan", "--out", str(saved)).returncode == 2
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 20", "last: 19"))
    refused = run(lab, "apply", str(saved))
    assert refused.returncode == 1
    assert "the catalog moved since the plan was made" in refused.stderr
    assert "wodt3" not in Path("/etc/passwd").read_text()


def test_verbose_plan_says_why_nothing_changes(lab):
    assert run(lab, "apply", "--yes").returncode == 0
    text = run(lab, "plan", "--verbose").stdout
    assert "= sysctl:net.ipv4.tcp_keepalive_time is " in text
    assert "= account:wodt7 is uid 50007" in text


def test_a_second_apply_waits_then_names_the_holder(lab, tmp_path):
    first = held_apply(lab, tmp_path)
    try:
        second = run(lab, "apply", "--yes", "--lock-timeout", "1")
        assert second.returncode == 1
        assert "host busy (apply by PID" in second.stderr and " since 20" in second.stderr
    finally:
        (tmp_path / "gate").touch()
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert run(lab, "plan").returncode == 0


def test_the_same_host_twice_is_handled_once(lab):
    done = run(lab, "apply", "--yes", "--host", "lab1", "--host", "lab1", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["host"] for r in json.loads(done.stdout)] == ["lab1"]


def _inventory(lab: Path) -> Path:
    return lab.parent / "state/inventory.json"


def test_a_corrupt_inventory_stops_the_host_and_changes_nothing(lab):
    assert run(lab, "apply", "--yes").returncode == 0
    subprocess.run(["chpasswd"], input="wodt5:Seat-In-Use-5\n", text=True, check=True)
    inventory = _inventory(lab)
    good = json.loads(inventory.read_text())
    assert len(good["resources"]["account"]) == 20 and good["schema"] == 2
    inventory.write_text(inventory.read_text()[:-5] + "{oops")
    shadow = lab_shadow()
    applied = run(lab, "apply", "--yes")
    assert applied.returncode == 1
    assert "inventory" in applied.stderr and "is unreadable" in applied.stderr
    assert f"cp {inventory}.bak {inventory}" in applied.stderr
    assert lab_shadow() == shadow, "nothing may change"
    assert inventory.read_text().endswith("{oops")
    backup = json.loads(Path(f"{inventory}.bak").read_text())
    assert len(backup["resources"]["account"]) == 20


def test_a_version_1_inventory_is_upgraded(lab):
    assert run(lab, "apply", "--yes").returncode == 0
    inventory = _inventory(lab)
    v2 = json.loads(inventory.read_text())
    v1 = {"accounts": v2["resources"]["account"], "files": v2["resources"]["file"],
          "pending": [], "hub_users": [], "hub_groups": []}
    inventory.write_text(json.dumps(v1))
    assert run(lab, "plan").returncode == 0
    students = lab / "catalog/students.yaml"
    students.write_text(students.read_text().replace("last: 20", "last: 19"))
    changes = plan_json(lab)[0]["plan"]["changes"]
    accounts = [(c["action"], c["address"]) for c in changes if c["address"].startswith("acc")]
    assert accounts == [("delete", "account:wodt20")], "the upgraded inventory still knows it"


def test_the_agent_answers_only_its_table_of_operations():
    from wodsync.agent import PROTOCOL
    from wodsync.engine import remote
    from wodsync.engine.transport import LocalTransport

    with pytest.raises(remote.HostError, match="unknown operation 'run'"):
        remote.call(LocalTransport(), "run", {"argv": ["id"]})
    with pytest.raises(remote.HostError, match="unknown operation '_apply'"):
        remote.call(LocalTransport(), "_apply", {})
    assert remote.call(LocalTransport(), "version", {})["protocol"] == PROTOCOL


def test_a_request_of_another_protocol_is_refused():
    from wodsync.agent import PROTOCOL
    from wodsync.engine import remote

    request = {"bundle": remote.bundle(),
               "request": {"protocol": 1, "op": "version", "payload": {}}}
    done = subprocess.run(["python3", "-c", remote.LOADER], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, timeout=30)
    answer = json.loads(done.stdout)
    assert not answer["ok"]
    assert f"protocol mismatch: the controller speaks version 1, this agent {PROTOCOL}" \
        in answer["error"]


def test_agent_modules_import_only_the_standard_library_and_each_other():
    """What the host imports: no third-party module, and no cycle among the agent's modules."""
    import ast
    import sys

    from wodsync.engine import remote

    allowed = set(sys.stdlib_module_names) | {"wodsync"}
    graph: dict[str, set[str]] = {}
    for name, (_, source) in json.loads(__import__("zlib").decompress(
            __import__("base64").b64decode(remote.bundle()))).items():
        imports = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imports |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imports.add(node.module)
        outside = {m for m in imports if m.split(".")[0] not in allowed}
        top_level_ok = all(_guarded(source, m) for m in outside)
        assert top_level_ok, f"{name} imports {outside} on the host"
        # `from wodsync.agent.kinds import file` in the package itself names its submodule
        graph[name] = {m for m in imports if m.startswith("wodsync.agent") and m != name}
    _assert_acyclic({k: v for k, v in graph.items() if k.startswith("wodsync.agent")})


def _guarded(source: str, module: str) -> bool:
    """A controller-only import is allowed inside a function or under TYPE_CHECKING only."""
    import ast

    tree = ast.parse(source)
    for node in tree.body:
        for sub in ast.walk(node):
            if (isinstance(sub, ast.ImportFrom) and sub.module == module) or \
                    (isinstance(sub, ast.Import) and module in {a.name for a in sub.names}):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    break
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    break
                return False
    return True


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' → '.join((*path, node))}"
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())
