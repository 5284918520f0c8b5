"""The channel by which a `create` hook hands per-seat values back (a token it scraped, a port
it was given), to be rendered into that seat's files.

The agent makes an empty root-only file in the hook's own root-only folder and names it in
`$WOD_VALUES`; the hook writes `NAME=value` lines (blank lines and `#` comments ignored) or one
JSON object of strings. After the hook, the agent reads it without following a link, at most
`CAP` bytes, and accepts exactly the names the workshop declares (`seat_values: {NAME: {hook:
create}}`): an undeclared name, a declared one missing or a value that cannot be one (a NUL, a
line break, over `VALUE_CAP` characters) fails the CREATE, naming the name, never the value —
values may be tokens.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

VALUES_ENV = "WOD_VALUES"
CAP = 64 * 1024
VALUE_CAP = 4096
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class HookValuesError(Exception):
    """The hook's values file is not what the workshop declares; the message names no value."""


def make_file(folder: str) -> str:
    """An empty file root owns (0600) in the hook's folder, for the hook to fill."""
    path = os.path.join(folder, "values")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    return path


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HookValuesError("$WOD_VALUES is not a regular file")
        data = os.read(fd, CAP + 1)
    finally:
        os.close(fd)
    if len(data) > CAP:
        raise HookValuesError(f"$WOD_VALUES holds more than {CAP} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HookValuesError("$WOD_VALUES is not UTF-8") from None


def parse(text: str) -> dict[str, Any]:
    """`NAME=value` lines, or one JSON object when the text starts with `{`."""
    if text.lstrip().startswith("{"):
        try:
            found = json.loads(text)
        except ValueError as exc:
            line = getattr(exc, "lineno", "?")
            raise HookValuesError(f"$WOD_VALUES is not a JSON object (line {line})") from None
        if not isinstance(found, dict):
            raise HookValuesError("$WOD_VALUES is not a JSON object")
        return found
    values: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise HookValuesError(f"$WOD_VALUES line {n} is not NAME=value")
        values[name.strip()] = value
    return values


def check(values: dict[str, Any], declared: list[str]) -> dict[str, str]:
    """The declared values, each a string; anything else is a `HookValuesError`."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if not (isinstance(name, str) and NAME.match(name)):
            raise HookValuesError(f"$WOD_VALUES names {name[:64]!r}: not a variable name")
        if name not in declared:
            raise HookValuesError(f"$WOD_VALUES sets {name}, which the workshop does not "
                                  "declare (seat_values: {" + name + ": {hook: create}})")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise HookValuesError(f"$WOD_VALUES: {name} is not a string or a number")
        text = str(value)
        if len(text) > VALUE_CAP or "\0" in text or "\n" in text or "\r" in text:
            raise HookValuesError(f"$WOD_VALUES: {name} is longer than {VALUE_CAP} "
                                  "characters or holds a NUL or a line break")
        out[name] = text
    missing = [name for name in declared if name not in out]
    if missing:
        raise HookValuesError("the create hook did not write " + ", ".join(missing)
                              + " to $WOD_VALUES")
    return out


def collect(path: str, declared: list[str]) -> dict[str, str]:
    """The values the hook wrote to `path`, checked against the declared names."""
    return check(parse(_read(path)), declared)
