"""Project hygiene that CI enforces: lint, the GitHub workflow's shape, the README's commands."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "wodsync", "tests", "bench"],
                            cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    """The whole package type-checks with the project's configuration (pydantic plugin; the
    agent, the wire's other end, under the strict checks)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "wodsync"],
                            cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_matches_the_github_workflow_schema():
    """check-jsonschema's vendored GitHub workflow schema, offline."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(PROJECT / ".github/workflows/validate.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_validate_schema_check_and_tests():
    text = (PROJECT / ".github/workflows/validate.yml").read_text()
    for step in ("wodsync validate --format github", "wodsync schema --check",
                 "./bootstrap test"):
        assert step in text


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT / "README.md").read_text()
    ci = (PROJECT / ".ci/run").read_text()
    assert "./bootstrap test" in readme and "./bootstrap test" in ci
    assert "./bootstrap demo" in readme


# --- the pull-request job ------------------------------------------------------------------------

WORKFLOW = PROJECT / ".github/workflows/validate.yml"
COMMENT_MARKER = "<!-- wodsync-plan -->"


def _workflow() -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(WORKFLOW.read_text())


def _pr_job() -> dict:
    jobs = [j for j in _workflow()["jobs"].values()
            if j.get("if") == "github.event_name == 'pull_request'"]
    assert len(jobs) == 1
    return jobs[0]


def _step(name: str) -> dict:
    return next(s for s in _pr_job()["steps"] if s.get("name") == name)


def test_workflow_checks_codeowners():
    assert "wodsync codeowners --check" in WORKFLOW.read_text()


def test_pull_request_job_reviews_previews_and_comments_with_least_privilege():
    job = _pr_job()
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert _workflow()["permissions"] == {"contents": "read"}
    assert set(_workflow()["on"]) == {"pull_request", "push"}   # never pull_request_target
    review = _step("Privileged changes")["run"]
    assert 'wodsync review --base "origin/$BASE_REF" --format github' in review
    assert '--format markdown > "$REVIEW_MD"' in review and "$GITHUB_STEP_SUMMARY" in review
    plan = _step("Plan preview")
    assert plan["env"]["WODSYNC_FACTS_URL"] == "${{ vars.WODSYNC_FACTS_URL }}"
    assert plan["env"]["WODSYNC_FACTS_TOKEN"] == "${{ secrets.WODSYNC_FACTS_TOKEN }}"
    assert 'wodsync plan --facts "$WODSYNC_FACTS_URL" --format markdown' in plan["run"]
    comment = _step("Sticky pull-request comment")
    assert comment["uses"].startswith("actions/github-script@")
    assert COMMENT_MARKER in comment["with"]["script"]


def test_no_expression_is_interpolated_into_a_shell_script():
    """`${{ }}` in `run:` is pasted into the script before bash parses it: a branch name like
    `$(curl …)` would run. Values go through `env:` instead."""
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step.get("name")


def _run_plan_step(tmp_path, env: dict[str, str]):
    summary = tmp_path / "summary.md"
    full = {"PATH": f"{PROJECT / '.venv/bin'}:/usr/bin:/bin", "RUNNER_TEMP": str(tmp_path),
            "GITHUB_STEP_SUMMARY": str(summary), "PLAN_MD": str(tmp_path / "plan.md"),
            "WODSYNC_FACTS_URL": "", "WODSYNC_FACTS_TOKEN": "", **env}
    # GitHub runs `run:` as `bash --noprofile --norc -eo pipefail {0}`.
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                           _step("Plan preview")["run"]], cwd=PROJECT, env=full,
                          capture_output=True, text=True)
    return done, summary.read_text() if summary.exists() else ""


def test_plan_preview_without_configuration_is_unavailable_and_passes(tmp_path):
    done, summary = _run_plan_step(tmp_path, {})
    assert done.returncode == 0, done.stderr
    assert summary.startswith("### wodsync plan preview\n")
    assert "plan preview unavailable: the repository variable WODSYNC_FACTS_URL and the " \
           "secret WODSYNC_FACTS_TOKEN are not both configured" in summary
    assert (tmp_path / "plan.md").read_text() == summary


def test_plan_preview_when_the_facts_cannot_be_read_is_unavailable_and_passes(tmp_path):
    done, summary = _run_plan_step(tmp_path, {"WODSYNC_FACTS_URL": str(tmp_path / "nothing"),
                                              "WODSYNC_FACTS_TOKEN": "t0ken"})
    assert done.returncode == 0, done.stderr
    assert "plan preview unavailable: `wodsync plan --facts` failed (exit " in summary
    assert "t0ken" not in summary


COMMENT_HARNESS = r"""
// Runs the workflow's github-script body against an in-memory issue thread.
const fs = require('fs');
const [stateFile, scriptFile] = process.argv.slice(2);
const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const issues = {
  listComments: async (a) => state.comments.filter((c) => c.issue === a.issue_number),
  createComment: async (a) => {
    state.comments.push({ id: state.comments.length + 1, issue: a.issue_number,
                          user: { login: 'github-actions[bot]' }, body: a.body });
  },
  updateComment: async (a) => {
    state.comments.find((c) => c.id === a.comment_id).body = a.body;
  },
};
const github = { rest: { issues }, paginate: async (method, args) => method(args) };
const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 } };
new AsyncFunction('require', 'github', 'context', fs.readFileSync(scriptFile, 'utf8'))(
  require, github, context).then(() => fs.writeFileSync(stateFile, JSON.stringify(state)));
"""


def _comment(tmp_path, state: dict, review: str, plan: str) -> dict:
    import json

    (tmp_path / "review.md").write_text(review)
    (tmp_path / "plan.md").write_text(plan)
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "script.js").write_text(_step("Sticky pull-request comment")["with"]["script"])
    (tmp_path / "harness.js").write_text(COMMENT_HARNESS)
    env = {"PATH": "/usr/bin:/bin", "REVIEW_MD": str(tmp_path / "review.md"),
           "PLAN_MD": str(tmp_path / "plan.md")}
    done = subprocess.run(["node", str(tmp_path / "harness.js"), str(tmp_path / "state.json"),
                           str(tmp_path / "script.js")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "state.json").read_text())


def test_the_pull_request_comment_is_one_sticky_comment_updated_in_place(tmp_path):
    someone = {"id": 100, "issue": 7, "user": {"login": "mallory"},
               "body": f"{COMMENT_MARKER}\nnot the bot's"}
    state = _comment(tmp_path, {"comments": [someone]}, "### review 1\n", "### plan 1\n")
    state = _comment(tmp_path, state, "### review 2\n", "### plan 2\n")
    mine = [c for c in state["comments"] if c["user"]["login"] == "github-actions[bot]"]
    assert len(mine) == 1
    assert mine[0]["body"] == f"{COMMENT_MARKER}\n### review 2\n\n### plan 2\n"
    assert someone in state["comments"]


def test_a_huge_plan_is_cut_to_fit_a_comment(tmp_path):
    state = _comment(tmp_path, {"comments": []}, "### review\n", "x" * 100_000)
    body = state["comments"][0]["body"]
    assert len(body) < 65536 and body.rstrip().endswith("the job summary has all of it.")


# --- the package's structure ---------------------------------------------------------------------

PACKAGE = PROJECT / "wodsync"


def _module_name(path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, object]:
    """Every module of the package: dotted name → its path."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test) -> bool:
    import ast

    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(path, name: str, is_package: bool, modules,
                       typing: bool = False) -> set[str]:
    """Modules `name` imports when it is imported: statements at module level (inside `if`,
    `try` and `with` too), not inside functions or classes, not under `if TYPE_CHECKING`
    (unless `typing`: what the type checker reads too).
    `from x import y` names `x.y` when that is a module, else `x`; a module's packages
    count too, since importing it runs their `__init__`."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def resolve(node) -> str:
        if not node.level:
            return node.module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def walk(body) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = resolve(node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    found.add(sub if sub in modules else source)
            elif isinstance(node, ast.If):
                if typing or not _is_type_checking(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, *(h.body for h in node.handlers), node.orelse,
                             node.finalbody):
                    walk(part)
            elif isinstance(node, ast.With):
                walk(node.body)

    walk(tree.body)
    # Importing `a.b.c` runs `a` and `a.b` first, unless they hold the importer (then they
    # are being imported already).
    for module in list(found):
        parts = module.split(".")
        found.update(parent for parent in (".".join(parts[:i]) for i in range(1, len(parts)))
                     if not f"{name}.".startswith(f"{parent}."))
    return {m for m in found if m in modules}


def _import_graph(typing: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _top_level_imports(path, name, path.name == "__init__.py", modules,
                                     typing) - {name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules in import order, the first repeated), or
    None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_finds_a_cycle_and_a_relative_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = _import_graph()
    assert "wodsync.engine.plan" in graph["wodsync.engine.reconcile"]
    assert "wodsync.catalog.models" in graph["wodsync.engine.desired"]
    assert "wodsync.catalog" in graph["wodsync.engine.desired"], "a package's __init__ runs"
    assert "wodsync.engine" not in graph["wodsync.engine.desired"], "its own: running already"


def test_no_import_cycle_inside_the_package():
    """Modules import each other in one direction only: a newcomer can read the package from
    the bottom up, and no module is ever used half-initialised."""
    cycle = _cycle(_import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_no_import_cycle_even_for_the_type_checker():
    """`if TYPE_CHECKING` imports counted too: a kind names the context it reads without
    importing what runs the kinds (`engine.context`, a Protocol where a shape is enough)."""
    cycle = _cycle(_import_graph(typing=True))
    assert cycle is None, "import cycle through type-only imports: " + " → ".join(cycle or [])


def _all_imports(path) -> set[str]:
    """Every module a file names in an import, wherever the statement is (functions and
    TYPE_CHECKING blocks too): the host has nothing else to import from."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            found.add(node.module or "")
    return found


def test_the_agent_imports_only_the_standard_library_and_itself():
    """The host runs `wodsync/agent` alone, on its own python3: an import of anything else
    (the catalog, pydantic, the engine) would fail there, even under TYPE_CHECKING for mypy's
    sake — so none is allowed anywhere in the package."""
    outside = {}
    for path in sorted((PACKAGE / "agent").rglob("*.py")):
        foreign = {m for m in _all_imports(path)
                   if m.split(".")[0] not in sys.stdlib_module_names
                   and m != "wodsync.agent" and not m.startswith("wodsync.agent.")}
        if foreign:
            outside[str(path.relative_to(PROJECT))] = sorted(foreign)
    assert outside == {}


def test_only_the_agent_package_is_shipped():
    """What `remote.bundle()` sends is `wodsync/agent` and an empty `wodsync` around it; the
    engine tests over the real sshd (`test_engine.py`) and the agent's answers to a local
    `python3 -c LOADER` (`test_engine_plans.py`) run on exactly that."""
    import base64
    import json
    import zlib

    from wodsync.engine import remote

    agent = sorted((PACKAGE / "agent").rglob("*.py"))
    assert remote.shipped_files() == agent
    modules = json.loads(zlib.decompress(base64.b64decode(remote.bundle())))
    assert set(modules) == {"wodsync"} | {_module_name(p) for p in agent}
    assert "import" not in modules["wodsync"][1], "the package around the agent is empty"


def test_every_agent_operation_is_typed_by_the_protocol():
    """Each entry of the agent's table takes a payload that starts with the host part and
    answers a typed mapping: the wire has one description, `agent/protocol.py`."""
    import typing

    from wodsync.agent import main, protocol

    host_part = set(protocol.HostPayload.__annotations__)
    for op, fn in main.OPERATIONS.items():
        hints = typing.get_type_hints(fn)
        request, answer = hints["payload"], hints["return"]
        assert typing.is_typeddict(request), f"{op}: request {request}"
        assert host_part <= request.__required_keys__, f"{op}: no host part"
        assert typing.is_typeddict(answer), f"{op}: answer {answer}"
