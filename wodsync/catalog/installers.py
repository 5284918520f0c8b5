"""What a catalog may make root run on a host: kernel installers and pip requirements.

A workshop's kernel `install` command and every pip requirement are executed as root on each
host of the workshop's location at the next apply. The catalog is reviewed in pull requests, so
these rules keep a reviewed line from meaning more than it reads: an installer is a module or a
Jupyter subcommand of the hub environment, never a shell, an interpreter given code, or a
second command; a requirement names a package of the index (or of the host's `find_links`),
never a URL, a path or a pip option. Each rule returns the problem as a message (and the index
of the offending item) so the models can turn it into a located error.
"""

from __future__ import annotations

import re
import sys

from packaging.requirements import InvalidRequirement, Requirement

DOTTED_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ARG_RE = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:=@%+,-]*$")
TRAITLETS_RE = re.compile(r"^--?[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_]")
CODE_OPTION_RE = re.compile(r"^(-c.*|--?(code|command|cmd|exec|execute|eval|run|script)(=.*)?)$")
INTERPRETER_RE = re.compile(r"^(python|pypy|perl|ruby|node|nodejs|php|lua|tclsh|java)[0-9.]*$")
COMMANDS = frozenset({
    "sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "csh", "tcsh", "fish", "busybox",
    "env", "sudo", "su", "doas", "runuser", "exec", "eval", "xargs", "nohup", "setsid",
    "chroot", "timeout", "nice", "ionice", "stdbuf", "awk", "gawk", "mawk",
})
# Modules that run code or fetch packages given on the command line, and tools with their own
# catalog field (pip: `pip:` lists). The standard library never installs a kernel.
DENIED_MODULES = frozenset({
    "pip", "setuptools", "pkg_resources", "wheel", "IPython", "ipython", "jupyter",
    "jupyter_core", "jupyter_client", "jupyter_server", "jupyterlab", "notebook", "nbclassic",
    "nbconvert", "nbclient", "papermill", "ipykernel_launcher", "pytest", "_pytest",
})
JUPYTER_SUBCOMMANDS = frozenset({"kernelspec", "labextension", "nbextension", "serverextension"})
ALLOWED = ("a kernel installer is `[python, -m, <module>, ...]` or "
           f"`[jupyter, <{'|'.join(sorted(JUPYTER_SUBCOMMANDS))}>, ...]` of the hub environment")
# pip treats a requirement ending like an archive as a file path.
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz",
                    ".txz", ".tlz", ".tar.lz", ".tar.lzma")


def install_problem(argv: list[str]) -> tuple[int, str] | None:
    """(index of the offending item, what is wrong) for a kernel `install` command, or None."""
    if not argv:
        return None
    if argv[0] == "python":
        problem = _python_problem(argv)
        first_arg = 3
    elif argv[0] == "jupyter":
        problem = _jupyter_problem(argv)
        first_arg = 2
    else:
        return 0, f"{argv[0]!r} is not allowed: {ALLOWED}"
    if problem:
        return problem
    for i, arg in enumerate(argv[first_arg:], start=first_arg):
        message = argument_problem(arg)
        if message:
            return i, message
    return None


def _python_problem(argv: list[str]) -> tuple[int, str] | None:
    if len(argv) < 3 or argv[1] != "-m":
        return min(1, len(argv) - 1), f"`python` must be followed by `-m <module>`: {ALLOWED}"
    module = argv[2]
    if not DOTTED_NAME_RE.match(module):
        return 2, f"module {module!r} is not a dotted name"
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return 2, (f"module {module!r} is part of the standard library, which installs no "
                   "kernel (and some of it runs code given as arguments)")
    if top in DENIED_MODULES:
        return 2, (f"module {module!r} runs code or installs packages given on the command "
                   "line; packages go in the kernel's `pip:` list")
    return None


def _jupyter_problem(argv: list[str]) -> tuple[int, str] | None:
    if len(argv) < 2:
        return 0, f"`jupyter` needs a subcommand: {ALLOWED}"
    if argv[1] not in JUPYTER_SUBCOMMANDS:
        return 1, f"`jupyter {argv[1]}` is not allowed: {ALLOWED}"
    return None


def argument_problem(arg: str) -> str | None:
    """Why an installer argument is refused: shell syntax, code, or the start of a command."""
    if not ARG_RE.match(arg):
        return (f"argument {arg!r} may only use letters, digits and . _ / : = @ % + , - "
                "(no spaces, quotes or shell syntax)")
    if CODE_OPTION_RE.match(arg):
        return f"argument {arg!r} passes code to run; installers take no code"
    if TRAITLETS_RE.match(arg):
        return f"argument {arg!r} sets a traitlets option, which can make the installer run code"
    name = arg.rstrip("/").rsplit("/", 1)[-1]
    # A kernel is often named after its interpreter (`--name python3`): only a path to one,
    # or a shell or command runner, is taken as a second command.
    if name in COMMANDS or ("/" in arg and INTERPRETER_RE.match(name)):
        return f"argument {arg!r} starts another command; an installer runs one program"
    return None


def requirement_problem(value: str) -> str | None:
    """Why a pip requirement is refused: not a requirement, a URL, a path or an option."""
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        first = str(exc).splitlines()[0]
        return (f"{value!r} is not a pip requirement ({first}); write a name with optional "
                "extras, version and markers, e.g. 'pandas[excel]>=2.2' (no URLs, paths or "
                "pip options)")
    if req.url:
        return (f"{value!r} installs from a URL; name a package of the index, and put local "
                "wheels in a folder of the host's hub.find_links")
    if req.name.lower().endswith(ARCHIVE_SUFFIXES):
        return (f"{value!r} would be read by pip as a file path; local wheels go in a folder "
                "of the host's hub.find_links")
    return None
