"""sysctl, host half: kernel values read from and written to `/proc/sys` directly.

A value the kernel refuses fails that key alone, named, and the rest of the batch still
applies. The controller half (`engine.kinds.sysctl`) decides which values to write.
"""

from __future__ import annotations

from typing import TypedDict

from wodsync.agent.factspec import NAME, MapOf, Nullable, Record
from wodsync.agent.host import HostSide

KIND = "sysctl"


class Probe(TypedDict):
    keys: list[str]


class Facts(TypedDict):
    """Each key's value, whitespace collapsed; None when this kernel has no such key."""

    values: dict[str, str | None]


FACTS = Record({"values": MapOf(Nullable(NAME))})


class Part(TypedDict):
    values: dict[str, str]


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _read(key: str) -> str | None:
    try:
        with open(_path(key), encoding="utf-8") as f:
            return " ".join(f.read().split())
    except OSError:
        return None


def observe(probe: Probe, host: HostSide) -> Facts:
    return {"values": {key: _read(key) for key in probe["keys"]}}


def write_values(part: Part, host: HostSide) -> None:
    written = 0
    for key, value in sorted(part["values"].items()):
        try:
            with open(_path(key), "w", encoding="utf-8") as f:
                f.write(value)
            written += 1
        except OSError as exc:
            host.fail("sysctl.write", f"sysctl {key} = {value!r} refused by the kernel: "
                                      f"{exc.strerror or exc}")
    if written:
        host.say(f"set {written} sysctl values")


PHASES = ((20, "write", write_values),)
