"""wodsync's inventory on a host: what it made there, so it only ever deletes its own.

The inventory is `<state_dir>/inventory.json`, versioned (`schema`), changed only by the agent
call that holds the host's lock (`hostlock`), replaced atomically through a uniquely named
temporary file, with the previous good copy kept as `inventory.json.bak`. A file that does not
parse is never read as empty — that would make every seat look unmanaged (a seat in use would
lose its password) and the next save would forget everything: reading it raises, the host stops
with the way to restore the backup, and nothing is changed.

Names a call is about to create are recorded as intents first and become resources only once
made, so the inventory never lists what was not made, and a run cut in between still knows
what it may have made (the kind adopts an intent it finds on the host).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

FILE = "inventory.json"
BACKUP = FILE + ".bak"
SCHEMA = 2
EMPTY = {"schema": SCHEMA, "resources": {}, "intents": {}, "pending": {}, "seats": {}}
# `owner` (the catalog's host name) is set by the first call that names one.


class InventoryError(Exception):
    """The inventory cannot be trusted; the host is left alone."""


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (flat lists, a list of pending argv) to schema 2."""
    if data.get("schema") == SCHEMA:
        return data
    if "schema" in data:
        raise InventoryError(f"inventory schema {data['schema']} is newer than this wodsync "
                             f"understands ({SCHEMA}): upgrade wodsync")
    resources = {kind: list(data.get(old, [])) for kind, old in
                 (("account", "accounts"), ("file", "files"), ("hub_user", "hub_users"),
                  ("hub_group", "hub_groups"))}
    pending = {"argv:" + json.dumps(argv): {"argv": argv} for argv in data.get("pending", [])}
    seats = {name: {"session": "demo", **info}
             for name, info in (data.get("seats_in_use") or {}).items()}
    return {"schema": SCHEMA, "resources": resources, "intents": {}, "pending": pending,
            "seats": seats}


class Inventory:
    """The parsed inventory with small, named operations on it."""

    def __init__(self, state_dir: str, owner: str | None = None) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILE)
        self.data = self._read()
        self._claim(owner)

    def _claim(self, owner: str | None) -> None:
        """One state folder, one catalog host: another one's inventory is never taken as ours
        (its accounts would look like ours to delete)."""
        if owner is None:
            return
        mine = self.data.setdefault("owner", owner)
        if mine != owner:
            raise InventoryError(f"{self.state_dir} holds the inventory of {mine}, not of "
                                 f"{owner}: give each catalog's host its own state_dir")

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            empty: dict[str, Any] = json.loads(json.dumps(EMPTY))
            return empty
        except OSError as exc:
            raise InventoryError(f"cannot read {self.path}: {exc}") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return _upgrade(data)
        except ValueError as exc:
            backup = os.path.join(self.state_dir, BACKUP)
            hint = (f"; the last good copy is {backup}: check it, then "
                    f"`cp {backup} {self.path}`" if os.path.exists(backup)
                    else "; no backup exists: rebuild it by hand or remove it to start over "
                         "(wodsync then deletes nothing it does not find listed)")
            raise InventoryError(f"inventory {self.path} is unreadable ({exc}): this host is "
                                 f"left alone{hint}") from None

    def names(self, kind: str) -> set[str]:
        return set(self.data["resources"].get(kind, []))

    def intents(self, kind: str) -> set[str]:
        return set(self.data["intents"].get(kind, []))

    def intend(self, kind: str, names: Iterable[str]) -> None:
        """Record names about to be made (saved before the work starts)."""
        if names:
            self.data["intents"][kind] = sorted(self.intents(kind) | set(names))
            self.save()

    def made(self, kind: str, names: Iterable[str]) -> None:
        """Names made: resources now, intents no longer."""
        self.data["resources"][kind] = sorted(self.names(kind) | set(names))
        self.data["intents"][kind] = sorted(self.intents(kind) - set(names))
        self.save()

    def settle(self, kind: str, present: Iterable[str]) -> None:
        """Intents resolved by what is there: present ones adopted, absent ones forgotten."""
        intents = self.intents(kind)
        if intents:
            self.data["resources"][kind] = sorted(self.names(kind) | (intents & set(present)))
            self.data["intents"][kind] = []

    def forget(self, kind: str, names: Iterable[str]) -> None:
        self.data["resources"][kind] = sorted(self.names(kind) - set(names))
        self.save()

    def save(self) -> None:
        """Atomic replace through a unique temporary file; the previous copy becomes the backup."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".inventory-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(self.path):
                backup = os.path.join(self.state_dir, BACKUP)
                if os.path.exists(backup):
                    os.unlink(backup)
                os.link(self.path, backup)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
