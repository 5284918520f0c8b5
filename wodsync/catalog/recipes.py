"""Kernel recipes: how wodsync installs the Jupyter kernels WoD's notebooks use.

A recipe is data shipped in the package, not catalog text: a workshop names it
(`kernels: [bash, {recipe: rust, version: 0.17.0}]`) and may choose its version, nothing more.
What it installs is read here, in review, like any other code of wodsync: the pip packages of
the hub environment (pinned to the version), the Debian packages of a toolchain, one build
command (for kernels that are not Python packages) and the kernelspec registration — a
`kernel.json` written by the agent, never a command a catalog line could change. The version
is checked against the recipe's own pattern, so it can only ever be a version in an argv.

Kernelspec names are the ones WoD's notebooks carry in `metadata.kernelspec.name`: `bash`,
`ssh`, `gophernotes` (go), `rust`, `python3` (python).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

VERSION_RE = r"^[0-9]+\.[0-9]+\.[0-9]+$"
CONNECTION_FILE = "{connection_file}"


@dataclass(frozen=True)
class Recipe:
    """How one kernel is installed: `{version}`, `{prefix}` (the hub environment) and
    `{cache}` (a root-only build cache under the host's state folder) are filled in by
    `RecipeUse`; `kernel` is the kernelspec name notebooks ask for."""

    name: str
    kernel: str
    default: str
    about: str
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)


def _python_spec(module: str, display: str, language: str, **extra: Any) -> dict[str, Any]:
    return {"argv": ["{prefix}/bin/python", "-m", module, "-f", CONNECTION_FILE],
            "display_name": display, "language": language, **extra}


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("python", "python3", "6.29.5", "ipykernel from PyPI",
           pip=("ipykernel=={version}",),
           spec=_python_spec("ipykernel_launcher", "Python 3 (ipykernel)", "python")),
    Recipe("bash", "bash", "0.10.0", "bash_kernel from PyPI",
           pip=("bash_kernel=={version}",),
           spec=_python_spec("bash_kernel", "Bash", "bash", codemirror_mode="shell",
                             env={"PS1": "$"})),
    Recipe("ssh", "ssh", "0.11.1", "sshkernel from PyPI (the seat's own ~/.ssh key logs in)",
           pip=("sshkernel=={version}",),
           spec=_python_spec("sshkernel", "SSH", "bash")),
    Recipe("go", "gophernotes", "0.7.5",
           "gophernotes built by `go install` with Debian's golang-go",
           apt=("golang-go",),
           build=("/usr/bin/go", "install", "github.com/gopherdata/gophernotes@v{version}"),
           env=(("GOBIN", "{prefix}/bin"), ("GOPATH", "{cache}/go"),
                ("GOCACHE", "{cache}/go-build"), ("GOFLAGS", "-modcacherw")),
           spec={"argv": ["{prefix}/bin/gophernotes", CONNECTION_FILE],
                 "display_name": "Go", "language": "go"}),
    Recipe("rust", "rust", "0.17.0",
           "evcxr_jupyter built by `cargo install --locked` with Debian's cargo",
           apt=("cargo",),
           build=("/usr/bin/cargo", "install", "evcxr_jupyter", "--version", "{version}",
                  "--locked", "--root", "{prefix}"),
           env=(("CARGO_HOME", "{cache}/cargo"), ("CARGO_TARGET_DIR", "{cache}/cargo-target")),
           spec={"argv": ["{prefix}/bin/evcxr_jupyter", "--control_file", CONNECTION_FILE],
                 "display_name": "Rust", "language": "rust", "interrupt_mode": "message"}),
)}
BY_KERNEL = {r.kernel: r for r in RECIPES.values()}
# The kernel every managed hub has: JupyterLab depends on ipykernel, which ships `python3`.
DEFAULT_KERNELS = frozenset({"python3"})


def version_problem(recipe: str, version: str) -> str | None:
    """Why `version` cannot pin `recipe`, or None."""
    if recipe not in RECIPES:
        return f"no kernel recipe {recipe!r}; recipes: {', '.join(sorted(RECIPES))}"
    if not re.match(VERSION_RE, version):
        return f"version {version!r} of recipe {recipe} is not MAJOR.MINOR.PATCH (e.g. " \
               f"{RECIPES[recipe].default})"
    return None


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def _fill_spec(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value if value == CONNECTION_FILE else _fill(value, values)
    if isinstance(value, list):
        return [_fill_spec(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill_spec(v, values) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class RecipeUse:
    """A recipe at a version, as a workshop asks for it."""

    recipe: Recipe
    version: str

    @property
    def name(self) -> str:
        """The kernelspec name it registers."""
        return self.recipe.kernel

    @property
    def label(self) -> str:
        """What the kernelspec records and a plan shows: `rust 0.17.0`."""
        return f"{self.recipe.name} {self.version}"

    @property
    def pip(self) -> list[str]:
        return [_fill(p, {"version": self.version}) for p in self.recipe.pip]

    @property
    def apt(self) -> list[str]:
        return list(self.recipe.apt)

    def build(self, prefix: str, cache: str) -> list[str]:
        """The build command (argv; empty for a Python package), for this environment."""
        values = {"version": self.version, "prefix": prefix, "cache": cache}
        return [_fill(a, values) for a in self.recipe.build]

    def env(self, prefix: str, cache: str) -> dict[str, str]:
        values = {"prefix": prefix, "cache": cache}
        return {k: _fill(v, values) for k, v in self.recipe.env}

    def kernelspec(self, prefix: str) -> dict[str, Any]:
        """The `kernel.json` written into the environment, marked with the recipe and version
        so the next observe knows what installed it."""
        spec = _fill_spec(self.recipe.spec, {"prefix": prefix})
        spec["metadata"] = {"wodsync": {"recipe": self.label}}
        return spec

    def describe(self) -> str:
        """What it installs as root, in a reviewer's words."""
        parts = [f"pip {', '.join(self.pip)}"] if self.pip else []
        parts += [f"apt {', '.join(self.apt)}"] if self.apt else []
        parts += [f"runs {' '.join(self.build('<prefix>', '<cache>'))}"] if self.recipe.build \
            else []
        return f"kernel recipe {self.label}: {'; '.join(parts)}; registers kernelspec " \
               f"'{self.name}'"


def use(recipe: str, version: str | None = None) -> RecipeUse:
    """The recipe named `recipe` at `version` (its pinned default when None)."""
    found = RECIPES[recipe]
    return RecipeUse(found, version or found.default)


def recipe_of(entry: Any) -> RecipeUse | None:
    """The recipe a raw `kernels` entry (a plain value, not yet validated) names, or None: for
    review, which reads both sides of a pull request without the models."""
    name, version = (entry, None) if isinstance(entry, str) else \
        (entry.get("recipe"), entry.get("version")) if isinstance(entry, dict) else (None, None)
    if not isinstance(name, str) or name not in RECIPES:
        return None
    if version is not None and (not isinstance(version, str) or version_problem(name, version)):
        return None
    return use(name, version)
