"""Pull-request commands: review (which changes are privileged) and codeowners (who approves).

`review` informs and always exits 0 on valid inputs; `codeowners --check` is what CI fails on,
so the operators' review is enforced by GitHub rather than by a script a PR could edit.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from wodsync.cli.common import err, main, root_option

REVIEW_FORMATS = ["text", "github", "markdown", "json"]


@main.command("review")
@root_option
@click.option("--base", required=True, help="Git revision to compare with, e.g. origin/main.")
@click.option("--head", help="Compare this revision instead of the work tree.")
@click.option("--format", "fmt", type=click.Choice(REVIEW_FORMATS), default="text",
              show_default=True, help="github: ::warning annotations and a ::notice summary; "
              "markdown: a job summary / PR comment section.")
def review_cmd(root: Path, base: str, head: str | None, fmt: str) -> None:
    """Classify every changed path and key against BASE: content or privileged.

    Privileged changes run as root on the hosts or reach their system (hosts/, templates/,
    catalog/system.yaml, catalog/students.yaml, a workshop's packages, kernels, hooks, compile
    and their scripts, variables holding secrets). Exit 0; 1 when the inputs are invalid.
    """
    from wodsync.authoring.review import ReviewError, format_review, review

    try:
        result = review(root, base, head)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_review(result, fmt))


@main.command("codeowners")
@root_option
@click.option("--check", is_flag=True, help="Exit 1 if .github/CODEOWNERS is stale instead of "
              "writing it.")
@click.option("--owners", multiple=True, help="Owner of privileged paths (@org/team, @user); "
              "repeatable. Default: the owners already in the generated block.")
def codeowners_cmd(root: Path, check: bool, owners: tuple[str, ...]) -> None:
    """Write .github/CODEOWNERS so every privileged path needs the owners' review.

    The generated block goes last (lines outside it are kept) and also holds a fingerprint of
    the privileged keys inside catalog files, so changing one makes `--check` fail until this
    file is regenerated: a change to .github/ the owners must approve.
    """
    from wodsync.authoring.review import CODEOWNERS, ReviewError, codeowners

    try:
        current, wanted = codeowners(root, list(owners))
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from None
    if check:
        if current != wanted:
            click.echo("".join(difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                f"{CODEOWNERS} (now)", f"{CODEOWNERS} (generated)")), nl=False)
            err().print(f"✗ {CODEOWNERS} is stale: run `wodsync codeowners` and commit it "
                        "(privileged paths or keys changed; the owners review that change)")
        sys.exit(1 if current != wanted else 0)
    _write(root / CODEOWNERS, current, wanted)


def _write(path: Path, current: str, wanted: str) -> None:
    if current == wanted:
        err().print(f"{path} is up to date")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot be written ({exc.strerror or exc})") \
            from None
    err().print(f"wrote {path}")
