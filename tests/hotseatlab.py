"""A catalog for hot-seat tests and the hot-seat bench: pool `wodqe` (uids 41801-41840, homes
under /home/wodsync-test-hotseats), one local host `lab1`, workshop WKSHP-Hot (capacity 4 in
tests; the bench asks for more) and, when given, `catalog/events.yaml`."""

from __future__ import annotations

import json
import pwd
import shutil
from pathlib import Path

from helpers import remove_test_accounts

PREFIX, BASE = "wodqe", 41800
HOMES = Path("/home/wodsync-test-hotseats")
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {},
                       "source": ["# Seat {{ STDID }} of {{ WKSHP }}"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def range_taken() -> list[str]:
    """Accounts of others in the lab's uid range (the lab refuses to run over them)."""
    return [e.pw_name for e in pwd.getpwall()
            if BASE < e.pw_uid <= BASE + 40 and not e.pw_name.startswith(PREFIX)]


def cleanup() -> None:
    remove_test_accounts(PREFIX, BASE)
    shutil.rmtree(HOMES, ignore_errors=True)


def write_catalog(root: Path, tmp: Path, events: str, capacity: int = 4,
                  notebooks: int = 1, where: str = "location: lab\n") -> None:
    """The lab under `root` (host state under `tmp`); `events`: the text of
    catalog/events.yaml (none when empty); `where`: the workshop's location lines (the host
    is at `lab`; a location `far` with no host exists too)."""
    HOMES.mkdir(mode=0o755, exist_ok=True)
    files = {
        "catalog/locations.yaml": "locations:\n  - name: lab\n  - name: far\n",
        "catalog/students.yaml": f"pools:\n  {PREFIX}:\n    prefix: {PREFIX}\n    first: 1\n"
                                 f"    last: 40\n    uid_base: {BASE}\n    gid_base: {BASE}\n"
                                 f"    home_root: {HOMES}\n",
        "catalog/workshops/WKSHP-Hot/workshop.yaml":
            f"name: Hot\ncapacity: {capacity}\nseats: {{first: 1, last: 40}}\n{where}"
            "duration: 2\n",
        "hosts/lab1.yaml": f"address: localhost\ntransport: local\nlocation: lab\n"
                           f"pool: {PREFIX}\nstate_dir: {tmp}/state-lab1\n",
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
