"""The agent runs on the host's own `python3`, not the controller's: every module shipped to a
host must work on the oldest Python a host may have, `OLDEST` (Debian 11, RHEL 9).

No such interpreter can be installed by the test command (Debian 12 has only 3.11 and PyPI
ships no CPython), so the agent is *run* in the tests only on this machine's python3 and its
minimum is checked statically, on exactly what `remote.bundle()` ships (and the loader):
- vermin reads each module for syntax, standard-library names and keyword arguments newer than
  `OLDEST` (`match`, `except*`, `zip(strict=…)`, `typing.NotRequired`, …);
- vermin cannot tell a union type `X | Y` from a bitwise or, and its heuristic for it also
  flags annotations that `from __future__ import annotations` never evaluates, so
  `runtime_unions` finds the unions Python 3.9 would evaluate: in any annotation of a module
  without that import, and outside annotations where an operand is plainly a type.
The checkers themselves are tested on snippets with each construct, so neither can pass for
want of noticing anything.
"""

from __future__ import annotations

import ast
import base64
import builtins
import json
import zlib

import pytest
from vermin import Config, visit

from wodsync.engine import remote

OLDEST = (3, 9)

# Names whose `|` can only be a union of types at run time.
_TYPE_NAMES = frozenset(n for n, v in vars(builtins).items() if isinstance(v, type)) | {
    "Any", "Optional", "Union", "Callable", "Iterable", "Iterator", "Mapping", "Sequence"}


def shipped() -> dict[str, str]:
    """Module name → source of everything a host receives, the loader included."""
    raw = zlib.decompress(base64.b64decode(remote.bundle()))
    modules = {name: source for name, (_, source) in json.loads(raw).items()}
    modules["<loader>"] = remote.LOADER
    return modules


def newer_than_oldest(source: str, name: str) -> list[str]:
    """vermin's findings that need a Python newer than `OLDEST`, each with its line."""
    config = Config()
    config.set_parse_comments(False)  # a `# novermin` comment must not hide anything
    config.set_verbose(3)
    # `file` is the file kind's host half (`agent.kinds.file`), which vermin would read as
    # Python 2's builtin of that name and so as a module no Python 3 can run.
    config.add_exclusion("file")
    found = visit(source, config, name)
    if found.minimum_versions()[1] is None or found.minimum_versions()[1] <= OLDEST:
        return []
    too_new = [f"{name}: {line}" for line in found.output_text().splitlines()
               if "requires" in line and _required(line) > OLDEST]
    return too_new or [f"{name}: needs {found.minimum_versions()[1]}"]


def _required(line: str) -> tuple[int, ...]:
    """The Python 3 version a vermin line names (`… requires !2, 3.10`)."""
    version = line.rsplit(",", 1)[-1].strip().rstrip("+")
    return tuple(int(part) for part in version.split("."))


def runtime_unions(source: str, name: str) -> list[str]:
    """Every `X | Y` of types that Python 3.9 would evaluate, with its line."""
    tree = ast.parse(source)
    lazy = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names)
               for node in tree.body)
    annotations: set[int] = set()
    for node in ast.walk(tree):
        for part in _annotations_of(node):
            annotations.update(id(sub) for sub in ast.walk(part))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
            continue
        if id(node) in annotations:
            if not lazy:
                found.append(f"{name}:{node.lineno}: union in an evaluated annotation")
        elif _is_type(node.left) or _is_type(node.right):
            found.append(f"{name}:{node.lineno}: union of types at run time")
    return found


def _annotations_of(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = node.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs,
                 *(a for a in (args.vararg, args.kwarg) if a)]
        return [a.annotation for a in every if a.annotation] + \
            ([node.returns] if node.returns else [])
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    return []


def _is_type(node: ast.expr) -> bool:
    """`None`, a generic alias such as `list[str]`, or a name that is a type."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type(node.left) or _is_type(node.right)
    return isinstance(node, ast.Name) and node.id in _TYPE_NAMES


def test_the_shipped_modules_are_the_agent_and_its_loader():
    """What is checked below is what a host runs: the agent's entry point is in it."""
    modules = shipped()
    assert "wodsync.agent.main" in modules and "<loader>" in modules
    assert all(source.strip() or name.endswith("__init__") for name, source in modules.items())


def test_every_shipped_module_needs_no_newer_python_than_the_oldest_host():
    found = [line for name, source in sorted(shipped().items())
             for line in newer_than_oldest(source, name)]
    assert found == [], "\n".join(found)


def test_no_shipped_module_evaluates_a_union_type():
    found = [line for name, source in sorted(shipped().items())
             for line in runtime_unions(source, name)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "def f(x):\n    match x:\n        case 1:\n            return 2\n",
    "def f(a, b):\n    return list(zip(a, b, strict=True))\n",
    "from typing import NotRequired\n",
    "try:\n    pass\nexcept* OSError:\n    pass\n",
])
def test_vermin_finds_what_the_oldest_python_lacks(snippet):
    assert newer_than_oldest(snippet, "m") != []


@pytest.mark.parametrize(("snippet", "unions"), [
    ("X = int | None\n", 1),
    ("def f(x):\n    return isinstance(x, str | bytes)\n", 1),
    ("def f(x: int | None) -> None:\n    pass\n", 1),
    ("v: dict[str, int] | None = None\n", 1),
    ("from __future__ import annotations\ndef f(x: int | None) -> list[str] | None:\n"
     "    return None\n", 0),
    ("import os\nFLAGS = os.O_WRONLY | os.O_CREAT\nMASK = 0o700 | 0o022\n", 0),
    ("from __future__ import annotations\nY = list[int] | None\n", 1),
])
def test_runtime_unions_are_told_from_lazy_annotations_and_bit_masks(snippet, unions):
    assert len(runtime_unions(snippet, "m")) == unions


def test_the_oldest_python_also_accepts_the_grammar_of_every_shipped_module():
    """A second, independent reading: Python's own parser in its 3.9 grammar mode."""
    for name, source in shipped().items():
        ast.parse(source, filename=name, feature_version=OLDEST)
