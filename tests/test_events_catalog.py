"""`catalog/events.yaml`: scheduled events validated with located errors, their defaults and
the hot-seat window they give (`wodsync.sessions.hotseats` keeps seats inside it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wodsync.catalog import validate


def _events(repo, text: str) -> tuple:
    (repo.root / "catalog/events.yaml").write_text("events:\n" + text)
    catalog, found = validate(repo.root)
    return catalog, [f"{d.path}:{d.line}:{d.col}: {d.severity}[{d.code}]" for d in found]


EVENT = ("  - name: kubecon\n    workshop: WKSHP-API101\n"
         "    start: 2027-03-02T09:00:00+01:00\n")


def test_an_event_gets_its_defaults_and_its_window(repo):
    catalog, found = _events(repo, EVENT + "    hours: 3\n    expected: 40\n")
    assert found == []
    (event,) = catalog.events
    assert (event.warm, event.lead, event.hot_target) == (0.65, 60, 26)
    start = datetime(2027, 3, 2, 8, tzinfo=UTC)
    assert event.ends == start + timedelta(hours=3)
    assert not event.warm_at(start - timedelta(minutes=61))
    assert event.warm_at(start - timedelta(minutes=60))
    assert event.warm_at(start + timedelta(hours=2, minutes=59))
    assert not event.warm_at(start + timedelta(hours=3))


def test_an_unknown_workshop_is_a_located_error(repo):
    _, found = _events(repo, EVENT.replace("WKSHP-API101", "WKSHP-Nope")
                       + "    hours: 3\n    expected: 4\n")
    assert found == ["catalog/events.yaml:3:15: error[unknown-workshop]"]


def test_a_start_without_its_zone_is_refused(repo):
    _, found = _events(repo, EVENT.replace("+01:00", "") + "    hours: 3\n    expected: 4\n")
    assert found == ["catalog/events.yaml:4:12: error[timezone_aware]"]


def test_exactly_one_of_end_and_hours_and_an_end_after_the_start(repo):
    _, both = _events(repo, EVENT + "    hours: 3\n    end: 2027-03-02T12:00:00+01:00\n"
                      "    expected: 4\n")
    _, neither = _events(repo, EVENT + "    expected: 4\n")
    _, before = _events(repo, EVENT + "    end: 2027-03-02T08:00:00Z\n    expected: 4\n")
    assert both == neither == before == ["catalog/events.yaml:2:5: error[event-end]"]


def test_bad_counts_and_a_duplicate_name_are_located(repo):
    _, found = _events(repo, EVENT + "    hours: 3\n    expected: 0\n    warm: 1.5\n"
                       + EVENT + "    hours: 1\n    expected: 2\n")
    assert found == ["catalog/events.yaml:6:15: error[greater_than_equal]",
                     "catalog/events.yaml:7:11: error[less_than_equal]"]
    _, dup = _events(repo, EVENT + "    hours: 3\n    expected: 2\n"
                     + EVENT + "    hours: 1\n    expected: 2\n")
    assert dup == ["catalog/events.yaml:7:11: error[duplicate-event]"]


def test_more_hot_seats_than_the_capacity_is_a_warning(repo):
    _, found = _events(repo, EVENT + "    hours: 3\n    expected: 400\n")
    assert found == ["catalog/events.yaml:6:15: warning[hot-seats-capacity]"]
