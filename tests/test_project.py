"""Project hygiene that CI enforces: lint, the GitHub workflow's shape, the README's commands."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "wodsync", "tests", "bench"],
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
