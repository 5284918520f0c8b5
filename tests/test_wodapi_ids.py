"""The numbers wod-frontend's URLs carry (`wodsync/store/wodids.py`), in SQLite and
PostgreSQL: a fresh store numbers workshops in key order as WoD's seeder does, a number is
never moved nor given again, racing processes never share one; and the example catalog's
workshops in WoD's shape (`wodsync/wodapi/shapes.py`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from wodsync.catalog import validate
from wodsync.store import Store, open_store
from wodsync.store.models import utcnow
from wodsync.store.wodids import WodIds
from wodsync.wodapi import shapes

from pg import store_on

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    with store_on(request.param, tmp_path, monkeypatch) as opened:
        yield opened


def test_a_fresh_store_numbers_workshops_in_key_order_as_wods_seeder(store: Store) -> None:
    ids = WodIds(store.engine).workshops({"WKSHP-B": "b", "WKSHP-A": "a", "WKSHP-C": "c"})
    assert {k: i.id for k, i in ids.items()} == {"WKSHP-A": 1, "WKSHP-B": 2, "WKSHP-C": 3}


def test_numbers_never_move_nor_come_back(store: Store) -> None:
    wod = WodIds(store.engine)
    wod.workshops({"WKSHP-M": "m", "WKSHP-N": "n"})
    later = wod.workshops({"WKSHP-A": "a", "WKSHP-N": "n"})  # M removed, A sorts first
    assert {k: i.id for k, i in later.items()} == {"WKSHP-A": 3, "WKSHP-N": 2}
    back = wod.workshops({"WKSHP-M": "m", "WKSHP-Z": "z"})
    assert {k: i.id for k, i in back.items()} == {"WKSHP-M": 1, "WKSHP-Z": 4}
    assert wod.key_of("workshop", 2) == "WKSHP-N" and wod.key_of("workshop", 9) is None


def test_updated_at_moves_only_when_the_definition_changes(store: Store) -> None:
    wod, then = WodIds(store.engine), utcnow() - timedelta(days=1)
    first = wod.workshops({"WKSHP-A": "a", "WKSHP-B": "b"}, now=then)
    same = wod.workshops({"WKSHP-A": "a", "WKSHP-B": "b2"})
    assert same["WKSHP-A"].updated_at == first["WKSHP-A"].updated_at
    assert same["WKSHP-B"].updated_at > first["WKSHP-B"].updated_at
    assert same["WKSHP-B"].created_at == first["WKSHP-B"].created_at


def test_each_kind_counts_on_its_own_and_a_key_keeps_its_number(store: Store) -> None:
    wod = WodIds(store.engine)
    wod.workshops({"WKSHP-A": "a"})
    assert [wod.id_of("customer", k) for k in ("r:1", "s:2", "r:1")] == [1, 2, 1]
    assert wod.id_of("student", "lab1/4") == 1 and wod.key_id("student", "lab1/5") is None


def test_racing_processes_never_share_a_number(store: Store) -> None:
    """Eight threads, each its own connections, asking numbers for keys that overlap."""
    wod, found, failures = WodIds(store.engine), [], []

    def ask(n: int) -> None:
        try:
            found.extend((k, wod.id_of("customer", k)) for k in (f"k{n}", f"k{n % 4}"))
        except Exception as exc:  # the assertion below names it
            failures.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    by_key = {}
    for key, number in found:
        assert by_key.setdefault(key, number) == number, key  # one number per key
    assert sorted(by_key.values()) == list(range(1, 9))  # eight keys, eight numbers


def test_the_example_catalogs_workshops_have_wods_types(tmp_path: Path) -> None:
    catalog, found = validate(PROJECT)
    assert [d for d in found if d.is_error] == []
    store = open_store(state_dir=tmp_path / "state")
    try:
        ids = WodIds(store.engine).workshops(
            {k: shapes.digest(w) for k, w in catalog.workshops.items()})
    finally:
        store.close()
    for key, w in catalog.workshops.items():
        row = shapes.workshop(key, w, ids[key], w.capacity, False, None)
        assert isinstance(row["id"], int) and row["notebook"] == key
        assert isinstance(row["duration"], int | float) and isinstance(row["category"], list)
        assert row["updatedAt"].endswith("Z") and row["range"] == [w.seats.first, w.seats.last]
