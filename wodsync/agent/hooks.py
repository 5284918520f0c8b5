"""A workshop's hooks (`create`, `post_copy`, `cleanup`, `reset`), run as root on the host.

Hook scripts are root's: they are written to a folder of root's (never into the home, which
the student controls) and run from there; their output is kept for the session's history, cut
to its last `OUTPUT_CAP` bytes.

A hook is never rendered: catalog text pasted into a root script would be code. The seat's
values (`hook_variables` of the payload, which came on stdin) reach it as data instead:

- each variable whose name is an identifier as `WOD_<NAME>` in its environment (strings as they
  are, other values as JSON). The prefix keeps catalog text from naming `PATH`, `LD_PRELOAD`,
  `BASH_ENV` or `BASH_FUNC_x%%`; a value that cannot be an environment value (a NUL byte, over
  `ENV_VALUE_CAP` bytes, past `ENV_TOTAL_CAP` in all) is left to the file;
- all of them, whatever their names, in a JSON object in a root-only file (0600, in the hook's
  own 0700 folder under `<state_dir>/run/`, removed with it) named by `WOD_VARIABLES`.

The fixed environment (`STUDENT`, `STDID`, `WKSHP`, `SESSION`, `STUDENT_HOME`, `PATH`, `LANG`,
`HOME`) comes after the variables and `WOD_VARIABLES` last, so neither can be shadowed. No value
is ever put on a command line or in a message wodsync writes.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

from wodsync.agent import hookvalues
from wodsync.agent.protocol import Seat
from wodsync.agent.run import BASE_PATH
from wodsync.agent.steps import Steps

OUTPUT_CAP = 64 * 1024
ENV_VALUE_CAP = 64 * 1024  # bytes; Linux refuses a single environment string over 128 KiB
ENV_TOTAL_CAP = 1024 * 1024  # and a whole environment past a quarter of the stack limit
ENV_PREFIX = "WOD_"
VARIABLES_ENV = "WOD_VARIABLES"
ETXTBSY_TRIES = 20  # 5 ms, 10 ms, …: about a second in all
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def run_dir(state_dir: str) -> str:
    """A root-only working folder under the state folder."""
    folder = os.path.join(state_dir, "run")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


def env_value(value: Any) -> str | None:
    """`value` as an environment string (strings as they are, others as JSON), or None when
    it cannot be one: a NUL byte, text that is not encodable, more than `ENV_VALUE_CAP`."""
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    if "\0" in text or size > ENV_VALUE_CAP:
        return None
    return text


def variables_env(variables: dict[str, Any]) -> dict[str, str]:
    """`WOD_<NAME>` for each variable whose name is an identifier and whose value fits, as
    long as the whole still fits (`ENV_TOTAL_CAP`): the file holds them all."""
    env: dict[str, str] = {}
    total = 0
    for name, value in variables.items():
        if not IDENTIFIER.match(name):
            continue
        text = env_value(value)
        if text is None:
            continue
        size = len(ENV_PREFIX + name) + len(text.encode("utf-8")) + 2
        if total + size > ENV_TOTAL_CAP:
            continue
        total += size
        env[ENV_PREFIX + name] = text
    return env


def write_variables(folder: str, variables: dict[str, Any]) -> str:
    """Every variable in a JSON object in a new root-only file (0600) under `folder`; its
    path. ASCII JSON, so any value survives, whatever its bytes."""
    fd, path = tempfile.mkstemp(prefix="variables-", suffix=".json", dir=folder)
    with open(fd, "w", encoding="ascii") as f:
        json.dump(variables, f, ensure_ascii=True, sort_keys=True)
    return path


def hook_env(payload: Seat, variables_path: str) -> dict[str, str]:
    """The hook's environment: the variables as `WOD_<NAME>`, then the fixed environment,
    then `WOD_VARIABLES` (a variable named VARIABLES is in the file only)."""
    return {**variables_env(payload.get("hook_variables") or {}),
            "PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **payload["env"],
            VARIABLES_ENV: variables_path}


def run_hook(payload: Seat, name: str, steps: Steps) -> dict[str, str]:
    """Run the hook `name` of the payload if it has one; a failure raises, after its output
    was recorded in `steps`. A hook the controller could not prepare fails here, naming why.
    The `create` hook of a workshop declaring values (`produces`) returns them, read from
    `$WOD_VALUES` (`hookvalues`); every other hook returns {}."""
    hook = (payload.get("hooks") or {}).get(name)
    declared = list(payload.get("produces") or []) if name == "create" else []
    if not hook:
        if declared:
            raise RuntimeError("the workshop declares values of a create hook it does not have")
        return {}
    if hook.get("error"):
        raise RuntimeError(f"hook {name} ({hook['path']}) was not run: {hook['error']}")
    folder = tempfile.mkdtemp(prefix="wodsync-hook-", dir=run_dir(payload["state_dir"]))
    try:
        script = os.path.join(folder, os.path.basename(hook["path"]))
        with open(os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700), "wb") as f:
            f.write(base64.b64decode(hook["data"]))
        env = hook_env(payload, write_variables(folder, payload.get("hook_variables") or {}))
        values_path = hookvalues.make_file(folder) if declared else ""
        if declared:
            env[hookvalues.VALUES_ENV] = values_path
        _execute(script, folder, env, name, hook["path"], payload.get("hook_timeout", 120),
                 steps)
        return hookvalues.collect(values_path, declared) if declared else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spawn(script: str, folder: str, env: dict[str, str],
           timeout: float) -> "subprocess.CompletedProcess[bytes]":
    """The hook run once. The agent makes seats in threads: another thread's fork can carry
    the script's write descriptor (open a moment to write it) until that child execs, and an
    exec meanwhile fails with ETXTBSY, before anything ran. Such an exec is tried again."""
    for attempt in range(ETXTBSY_TRIES):
        try:
            return subprocess.run([script], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except OSError as exc:
            if exc.errno != errno.ETXTBSY or attempt == ETXTBSY_TRIES - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def _execute(script: str, folder: str, env: dict[str, str], name: str, path: str,
             timeout: float, steps: Steps) -> None:
    try:
        done = _spawn(script, folder, env, timeout)
    except subprocess.TimeoutExpired as exc:
        steps.outputs.append({"hook": name, "status": None,
                              "output": (exc.output or b"")[-OUTPUT_CAP:].decode(
                                  errors="replace")})
        raise RuntimeError(f"hook {name} ({path}) did not finish within {timeout} s") from None
    output = done.stdout[-OUTPUT_CAP:].decode(errors="replace")
    steps.outputs.append({"hook": name, "status": done.returncode, "output": output})
    if done.returncode != 0:
        raise RuntimeError(f"hook {name} ({path}) exited {done.returncode}")
