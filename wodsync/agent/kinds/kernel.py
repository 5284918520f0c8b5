"""kernel, host half: the kernelspecs present (what `jupyter kernelspec list` reads), and
running the install commands the controller half (`engine.kinds.kernel`) planned, with
`python`/`jupyter` meaning the hub environment's.
"""

from __future__ import annotations

import glob
import os
from typing import TypedDict

from wodsync.agent.factspec import NAMES, Record
from wodsync.agent.host import HostSide
from wodsync.agent.run import BASE_PATH, run

KIND = "kernel"
KERNEL_DIRS = ("share/jupyter/kernels",)
SYSTEM_KERNEL_DIRS = ("/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels")


class Probe(TypedDict):
    prefix: str


class Facts(TypedDict):
    kernels: list[str]


FACTS = Record({"kernels": NAMES})


class Part(TypedDict):
    prefix: str
    install: list[list[str]]


def observe(probe: Probe, host: HostSide) -> Facts:
    dirs = [os.path.join(probe["prefix"], d) for d in KERNEL_DIRS] + list(SYSTEM_KERNEL_DIRS)
    names: set[str] = set()
    for d in dirs:
        names.update(os.path.basename(os.path.dirname(p))
                     for p in glob.glob(os.path.join(d, "*", "kernel.json")))
    return {"kernels": sorted(names)}


def install(part: Part, host: HostSide) -> None:
    prefix = part["prefix"]
    env = {"PATH": f"{prefix}/bin:{BASE_PATH}", "LANG": "C.UTF-8", "HOME": "/root"}
    for argv in part["install"]:
        tool = argv[0]
        if tool in ("python", "jupyter"):
            tool = os.path.join(prefix, "bin", tool)
        run([tool, *argv[1:]], env=env)
        host.say(f"ran kernel installer {' '.join(argv)}")


PHASES = ((65, "install", install),)
