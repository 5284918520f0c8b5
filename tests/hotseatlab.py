"""A catalog for hot-seat tests and the hot-seat bench: pool `wodqe` for the tests (uids
41801-41840, homes under /home/wodsync-test-hotseats), `wodqh` for the bench (uids 42401-42440,
homes under /home/wodsync-bench-hotseats), one local host `lab1`, workshop WKSHP-Hot
(capacity 4 in tests; the bench asks for more) and, when given, `catalog/events.yaml`."""

from __future__ import annotations

import json
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from helpers import remove_test_accounts


@dataclass(frozen=True)
class Lab:
    """Whose accounts: the tests' or the bench's. The bench's smoke run is another xdist group
    than `test_hotseats.py`, so the two run side by side and must never share (or remove) an
    account."""

    prefix: str
    base: int
    homes: Path


TESTS = Lab("wodqe", 41800, Path("/home/wodsync-test-hotseats"))
BENCH = Lab("wodqh", 42400, Path("/home/wodsync-bench-hotseats"))
PREFIX, BASE, HOMES = TESTS.prefix, TESTS.base, TESTS.homes
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {},
                       "source": ["# Seat {{ STDID }} of {{ WKSHP }}"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def range_taken(lab: Lab = TESTS) -> list[str]:
    """Accounts of others in the lab's uid range (the lab refuses to run over them)."""
    return [e.pw_name for e in pwd.getpwall()
            if lab.base < e.pw_uid <= lab.base + 40 and not e.pw_name.startswith(lab.prefix)]


def cleanup(lab: Lab = TESTS) -> None:
    remove_test_accounts(lab.prefix, lab.base)
    shutil.rmtree(lab.homes, ignore_errors=True)


def write_catalog(root: Path, tmp: Path, events: str, capacity: int = 4,
                  notebooks: int = 1, where: str = "location: lab\n", lab: Lab = TESTS) -> None:
    """The lab under `root` (host state under `tmp`); `events`: the text of
    catalog/events.yaml (none when empty); `where`: the workshop's location lines (the host
    is at `lab`; a location `far` with no host exists too)."""
    lab.homes.mkdir(mode=0o755, exist_ok=True)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n  - name: far\n",
        "catalog/students.yaml": f"pools:\n  {lab.prefix}:\n    prefix: {lab.prefix}\n"
                                 f"    first: 1\n    last: 40\n    uid_base: {lab.base}\n"
                                 f"    gid_base: {lab.base}\n    home_root: {lab.homes}\n",
        "catalog/workshops/WKSHP-Hot/workshop.yaml":
            f"name: Hot\ncapacity: {capacity}\nseats: {{first: 1, last: 40}}\n{where}"
            "duration: 2\n",
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {lab.prefix}\nstate_dir: {tmp}/state-lab1\n",
    }
    for n in range(1, notebooks + 1):
        files[f"catalog/workshops/WKSHP-Hot/{n}-Part.ipynb"] = json.dumps(NOTEBOOK)
    if events:
        files["catalog/events.yaml"] = events
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def pam_login(user: str, password: str, service: str = "login") -> bool:
    """Whether PAM (`service`'s stack, as the hub's PAM authenticator and sshd ask it) accepts
    `password` for `user`: authentication and the account check, through libpam itself."""
    import ctypes
    import ctypes.util

    class Message(ctypes.Structure):
        _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]

    class Response(ctypes.Structure):
        _fields_ = [("resp", ctypes.c_char_p), ("resp_retcode", ctypes.c_int)]

    conv_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                               ctypes.POINTER(ctypes.POINTER(Message)),
                               ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)

    class Conv(ctypes.Structure):
        _fields_ = [("conv", conv_fn), ("appdata_ptr", ctypes.c_void_p)]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.calloc.restype = ctypes.c_void_p
    libc.strdup.restype = ctypes.c_void_p
    libc.strdup.argtypes = [ctypes.c_char_p]
    pam = ctypes.CDLL(ctypes.util.find_library("pam"))

    def answer(n: int, messages: object, responses: object, data: object) -> int:
        block = libc.calloc(n, ctypes.sizeof(Response))
        out = ctypes.cast(block, ctypes.POINTER(Response))
        for i in range(n):
            out[i].resp = ctypes.cast(libc.strdup(password.encode()), ctypes.c_char_p)
            out[i].resp_retcode = 0
        responses[0] = out  # type: ignore[index]
        return 0

    handle = ctypes.c_void_p()
    conv = Conv(conv_fn(answer), None)
    if pam.pam_start(service.encode(), user.encode(), ctypes.byref(conv),
                     ctypes.byref(handle)) != 0:
        raise RuntimeError("pam_start failed")
    try:
        return pam.pam_authenticate(handle, 0) == 0 and pam.pam_acct_mgmt(handle, 0) == 0
    finally:
        pam.pam_end(handle, 0)
