"""Calling the agent on a host: one round trip, the agent's sources and the request on stdin.

The host runs its own `python3 -c LOADER`, a constant: it reads one JSON line holding the
agent's modules (zlib-compressed) and the request, installs an importer that serves those
modules from memory (so `wodsync.agent.*` are real modules there) and hands the request to
`wodsync.agent.main`. Only the `wodsync/agent` package is shipped (with an empty `wodsync`
package around it): the host never receives controller code. The request's envelope
(`agent.protocol.Request`) and the host part of every payload are built here, once. The agent
always matches the controller; the request still carries the protocol version, which the agent
checks. Compiling the agent costs
≈ 90 ms, more than a seat operation itself, so the compiled modules are kept in
`/var/cache/wodsync/agent-<python>-<digest of the sources>` — a root-only folder, used only when
it and the file are root's and writable by root alone; the digest changes with every release.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import zlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wodsync.agent import PROTOCOL
from wodsync.agent.protocol import PROGRESS_MARK, HostPayload, Request
from wodsync.engine.persistent import PersistentAgent, Step
from wodsync.engine.transport import Cancel, OnStderr, Transport

if TYPE_CHECKING:
    from wodsync.catalog.models import Host

PACKAGE = Path(__file__).resolve().parent.parent
SHIPPED = "agent"
# The package around the agent, as the host sees it: empty (no controller code runs there).
ROOT_PACKAGE = ("wodsync", '"""wodsync\'s agent, shipped alone (wodsync.agent)."""\n')

LOADER = (
    "import sys,os,json,zlib,base64,marshal,hashlib,importlib.abc,importlib.util\n"
    "r=json.loads(sys.stdin.buffer.readline())\n"
    "B=base64.b64decode(r['bundle'])\n"
    "d='/var/cache/wodsync'\n"
    "p=d+'/agent-'+sys.implementation.cache_tag+'-'+hashlib.sha256(B).hexdigest()[:32]\n"
    "def mine(x):\n"
    " s=os.lstat(x);return s.st_uid==os.getuid() and not s.st_mode&0o022\n"
    "try:\n"
    " assert mine(d) and mine(p)\n"
    " with open(p,'rb') as f:C=marshal.load(f)\n"
    "except Exception:\n"
    " S=json.loads(zlib.decompress(B))\n"
    " C={n:(v[0],compile(v[1],'wodsync:'+n,'exec')) for n,v in S.items()}\n"
    " try:\n"
    "  os.makedirs(d,0o700,exist_ok=True);t=p+'.%d'%os.getpid()\n"
    "  with open(os.open(t,os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600),'wb') as f:marshal.dump(C,f)\n"
    "  os.replace(t,p)\n"
    " except OSError:pass\n"
    "class F(importlib.abc.MetaPathFinder,importlib.abc.Loader):\n"
    " def find_spec(s,n,q,t=None):\n"
    "  return importlib.util.spec_from_loader(n,s,is_package=C[n][0]) if n in C else None\n"
    " def create_module(s,spec):return None\n"
    " def exec_module(s,m):exec(C[m.__name__][1],m.__dict__)\n"
    "sys.meta_path.insert(0,F())\n"
    "import wodsync.agent.main\n"
    "wodsync.agent.main.main(r.get('request'),hashlib.sha256(B).hexdigest())\n"
)


AGENT_MODE = "WODSYNC_AGENT"  # `oneshot`: no persistent agent


class HostError(Exception):
    """The host answered, but the agent reported a failure."""


def _module_name(rel: Path) -> tuple[str, bool]:
    parts = ["wodsync", *rel.with_suffix("").parts]
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def shipped_files() -> list[Path]:
    """The files sent to the host: every module of the agent package, and nothing else."""
    return sorted((PACKAGE / SHIPPED).rglob("*.py"))


@cache
def bundle() -> str:
    """The agent's modules, compressed once per process."""
    name, source = ROOT_PACKAGE
    modules: dict[str, list[Any]] = {name: [True, source]}
    for path in shipped_files():
        name, is_pkg = _module_name(path.relative_to(PACKAGE))
        modules[name] = [is_pkg, path.read_text(encoding="utf-8")]
    raw = json.dumps(modules).encode()
    return base64.b64encode(zlib.compress(raw, 6)).decode()


def host_payload(name: str, host: Host) -> HostPayload:
    """The host part of every payload: the host's state folder, and whose inventory it holds
    (the catalog's host of that name — a folder another host's inventory claims is refused)."""
    return {"state_dir": host.state_dir, "owner": f"host {name}"}


def call(transport: Transport, op: str, payload: HostPayload,
         cancel: Cancel | None = None, step: Step | None = None) -> Any:
    """One round trip — a request to the host's persistent agent (`engine.persistent`), or,
    with `WODSYNC_AGENT=oneshot`, a python3 of its own; the agent's own error becomes
    HostError with its message. With `step`, the agent reports what it is doing while it
    runs (its phases), and `step` is called with each report."""
    envelope: Request = {"protocol": PROTOCOL, "op": op, "payload": payload}
    if step:
        envelope["progress"] = True
    agent = persistent_agent(transport)
    answer = agent.call(envelope, cancel, step=step) if agent else \
        _one_shot(transport, envelope, cancel, step)
    if not answer["ok"]:
        raise HostError(answer["error"])
    return answer["result"]


def _progress_lines(step: Step) -> OnStderr:
    """A one-shot agent's stderr, piece by piece → its progress lines (`PROGRESS_MARK`),
    each parsed and handed to `step`."""
    mark = PROGRESS_MARK.encode()
    pending = bytearray()

    def feed(data: bytes) -> None:
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.startswith(mark):
                with contextlib.suppress(ValueError):
                    step(json.loads(line[len(mark):]))

    return feed


def _failure_text(stderr: bytes) -> str:
    """A one-shot agent's own failure output, without its progress lines."""
    lines = stderr.decode(errors="replace").splitlines()
    return "\n".join(ln for ln in lines if not ln.startswith(PROGRESS_MARK)).strip()[-500:]


def _one_shot(transport: Transport, envelope: Request, cancel: Cancel | None,
              step: Step | None = None) -> Any:
    request = {"bundle": bundle(), "request": envelope}
    result = transport.run(["python3", "-c", LOADER], json.dumps(request).encode() + b"\n",
                           cancel=cancel, on_stderr=_progress_lines(step) if step else None)
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise HostError(f"agent failed (exit {result.status}): "
                        f"{_failure_text(result.stderr)}") from None


_agents_lock = threading.Lock()


def persistent_agent(transport: Transport) -> PersistentAgent | None:
    """The transport's persistent agent, made on first use; None when they are turned off
    (`WODSYNC_AGENT=oneshot`: every call a python3 of its own, as before)."""
    if os.environ.get(AGENT_MODE) == "oneshot":
        return None
    with _agents_lock:
        if transport.agent is None:
            hello = json.dumps({"bundle": bundle()}).encode() + b"\n"
            transport.agent = PersistentAgent(transport.open_stream, ["python3", "-c", LOADER],
                                              hello, bundle_digest(), PROTOCOL)
        agent = transport.agent
    assert isinstance(agent, PersistentAgent)
    return agent


@cache
def bundle_digest() -> str:
    """What the agent reports it runs: the digest of the bundle it was sent."""
    return hashlib.sha256(base64.b64decode(bundle())).hexdigest()
