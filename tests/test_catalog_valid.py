"""The example catalog the project ships is valid and loads into the expected models."""

from __future__ import annotations

from wodsync.catalog import validate


def test_example_catalog_is_valid(repo):
    catalog, found = validate(repo.root)
    assert found == []
    assert set(catalog.workshops) == {"WKSHP-API101", "WKSHP-Git101", "WKSHP-Python101",
                                      "WKSHP-Regex-Challenge"}
    assert catalog.pools["student"].seats.size == 2000
    assert set(catalog.locations) == {"emea", "amer"}
    assert set(catalog.hosts) == {"hub-emea", "hub-amer"}
    assert [r.id for r in catalog.replays] == [1, 2]


def test_workshop_fields_are_read(repo):
    catalog, _ = validate(repo.root)
    api = catalog.workshops["WKSHP-API101"]
    assert api.varpass and api.compile == ["scripts/login.sh"]
    assert api.variables["API_TOKEN"].secret == "API101_TOKEN"
    assert api.packages.pip == ["requests>=2.31"]
    git = catalog.workshops["WKSHP-Git101"]
    assert git.hooks.create == "scripts/create.sh" and git.reset
    assert catalog.workshops["WKSHP-Regex-Challenge"].session_type == "Coding Challenge"


def test_workshop_files_exclude_nothing_but_are_listed(repo):
    catalog, _ = validate(repo.root)
    assert "scripts/create.sh" in catalog.folders["WKSHP-Git101"].files
    assert "workshop.yaml" in catalog.folders["WKSHP-Git101"].files
