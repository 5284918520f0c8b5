"""Cross-file rules: one failing fixture each, asserting the file and line reported."""

from __future__ import annotations

from helpers import errors_of, only_error

PY = "catalog/workshops/WKSHP-Python101/workshop.yaml"
GIT = "catalog/workshops/WKSHP-Git101/workshop.yaml"
API = "catalog/workshops/WKSHP-API101/workshop.yaml"
CHL = "catalog/workshops/WKSHP-Regex-Challenge/workshop.yaml"


def test_seats_outside_the_pool_of_a_host(repo):
    repo.write("catalog/students.yaml", repo.read("catalog/students.yaml") + (
        "  small:\n    prefix: lab\n    first: 1\n    last: 10\n    uid_base: 5000\n"
        "    gid_base: 5000\n    home_root: /lab\n"))
    repo.replace("hosts/hub-amer.yaml", "pool: student", "pool: small")
    found = errors_of(repo.root)
    # Regex-Challenge (1-20) lives in amer; Python101 and API101 fail over to amer.
    assert {(d.path, d.code) for d in found} == {
        (CHL, "seats-outside-pool"), (PY, "seats-outside-pool"), (API, "seats-outside-pool")}
    chl = next(d for d in found if d.path == CHL)
    assert chl.line == repo.line_of(CHL, "seats:") and "hub-amer" in chl.message


def test_overlapping_seats_in_one_location(repo):
    repo.replace(GIT, "seats: {first: 41, last: 70}", "seats: {first: 30, last: 70}")
    found = errors_of(repo.root)
    assert [(d.path, d.line, d.code) for d in found] == [
        (GIT, repo.line_of(GIT, "seats:"), "seats-overlap"),
        (PY, repo.line_of(PY, "seats:"), "seats-overlap")]
    assert "WKSHP-Python101" in found[0].message
    assert f"{PY}:{repo.line_of(PY, 'seats:')}" in found[0].message


def test_same_seats_in_different_locations_are_fine(repo):
    # Regex-Challenge (amer) and Python101 (emea) both use seats 1-20: no error.
    assert errors_of(repo.root) == []


def test_capacity_larger_than_the_seats_its_hosts_offer(repo):
    repo.replace(GIT, "capacity: 30", "capacity: 31")  # emea only: hub-emea's seats 41-70
    d = only_error(repo.root, "capacity")
    assert (d.path, d.line) == (GIT, repo.line_of(GIT, "capacity"))
    assert d.message == "capacity 31 exceeds the 30 seats 41-70"


def test_capacity_counts_every_host_of_its_location_and_alternates(repo):
    # Python101 (1-40 at emea) fails over to amer: 80 seats in all, so failover can serve
    # participants once emea is full.
    repo.replace(PY, "capacity: 40", "capacity: 80")
    assert errors_of(repo.root) == []
    repo.replace(PY, "capacity: 80", "capacity: 81")
    d = only_error(repo.root, "capacity")
    assert d.message.startswith("capacity 81 exceeds the 80 seats its hosts offer of")
    # A second host at emea adds its seats to Git101 (emea only).
    repo.write("hosts/hub-emea2.yaml", repo.read("hosts/hub-emea.yaml").replace(
        "address: hub-emea.wod.example.org", "address: hub-emea2.wod.example.org"))
    repo.replace(PY, "capacity: 81", "capacity: 40")
    repo.replace(GIT, "capacity: 30", "capacity: 60")
    assert errors_of(repo.root) == []


def test_unknown_replay(repo):
    repo.replace(PY, "replay: 1", "replay: 99")
    d = only_error(repo.root, "unknown-replay")
    assert (d.path, d.line) == (PY, repo.line_of(PY, "replay:"))


def test_unknown_location_and_alternate(repo):
    repo.replace(PY, "alternate_locations: [amer]", "alternate_locations: [apac]")
    d = only_error(repo.root, "unknown-location")
    assert (d.path, d.line) == (PY, repo.line_of(PY, "alternate_locations"))
    assert d.col == repo.read(PY).splitlines()[d.line - 1].index("apac") + 1


def test_host_location_and_pool_references(repo):
    repo.replace("hosts/hub-emea.yaml", "pool: student", "pool: nope")
    d = only_error(repo.root, "unknown-pool")
    assert (d.path, d.line) == ("hosts/hub-emea.yaml",
                                repo.line_of("hosts/hub-emea.yaml", "pool:"))


def test_replay_names_an_existing_workshop(repo):
    repo.replace("catalog/replays.yaml", "workshop: WKSHP-Git101", "workshop: WKSHP-Gone")
    d = only_error(repo.root, "unknown-workshop")
    assert d.line == repo.line_of("catalog/replays.yaml", "WKSHP-Gone")


def test_duplicate_replay_id(repo):
    repo.replace("catalog/replays.yaml", "  - id: 2", "  - id: 1")
    found = errors_of(repo.root)
    dup = next(d for d in found if d.code == "duplicate-id")
    assert dup.line == repo.line_of("catalog/replays.yaml", "title: Git 101") - 1
    assert dup.col == 9 and "entry 0" in dup.message


def test_duplicate_location(repo):
    repo.replace("catalog/locations.yaml", "name: amer", "name: emea")
    d = next(d for d in errors_of(repo.root) if d.code == "duplicate-id")
    assert (d.path, d.line) == ("catalog/locations.yaml", 5)


def test_hook_script_must_exist(repo):
    repo.replace(GIT, "reset: scripts/reset.sh", "reset: scripts/missing.sh")
    d = only_error(repo.root, "missing-script")
    assert (d.path, d.line) == (GIT, repo.line_of(GIT, "missing.sh"))


def test_compile_script_must_exist(repo):
    repo.path("catalog/workshops/WKSHP-API101/scripts/login.sh").unlink()
    d = only_error(repo.root, "missing-script")
    assert (d.path, d.line) == (API, repo.line_of(API, "compile:"))


def test_alternate_cannot_be_primary(repo):
    repo.replace(PY, "alternate_locations: [amer]", "alternate_locations: [emea]")
    d = only_error(repo.root, "alternate-is-primary")
    assert d.path == PY


def test_broken_file_causes_no_follow_on_noise(repo):
    repo.replace("catalog/locations.yaml", "locations:", "locatons:")
    found = errors_of(repo.root)
    assert {d.path for d in found} == {"catalog/locations.yaml"}


def test_a_managed_hub_needs_its_configuration_template(repo):
    (repo.root / "templates/hub/jupyterhub_config.py.j2").unlink()
    found = errors_of(repo.root)
    assert {(d.path, d.code) for d in found} == {("hosts/hub-emea.yaml", "missing-template"),
                                                 ("hosts/hub-amer.yaml", "missing-template")}
    d = next(d for d in found if d.path == "hosts/hub-emea.yaml")
    assert d.line == repo.line_of("hosts/hub-emea.yaml", "hub:")


def test_hub_ports_must_differ(repo):
    repo.replace("hosts/hub-emea.yaml", "hub:\n", "hub:\n  port: 81\n")
    d = only_error(repo.root, "value_error")
    assert d.path == "hosts/hub-emea.yaml" and d.line == repo.line_of(d.path, "hub:") + 1
    assert d.message == ("hub: port, hub_port and proxy_api_port must be three different "
                         "ports")


STUDENTS = "catalog/students.yaml"


def _pool(repo, body: str) -> None:
    repo.write(STUDENTS, repo.read(STUDENTS) + "  lab:\n    prefix: lab\n" + body)


def test_a_shared_gid_inside_another_pools_seats_is_refused(repo):
    _pool(repo, (
        "    first: 1\n    last: 100\n    uid_base: 1950\n"
        "    gid_base: 1950\n    home_root: /lab\n    group: labs\n    group_gid: 1900\n"))
    d = only_error(repo.root, "group-gid")
    assert (d.path, d.line) == (STUDENTS, repo.line_of(STUDENTS, "group: students"))
    assert "seat 50 of pool 'lab'" in d.message


def test_one_group_name_has_one_gid_across_pools(repo):
    _pool(repo, (
        "    first: 1\n    last: 10\n    uid_base: 5000\n"
        "    gid_base: 5000\n    home_root: /lab\n    group: students\n"))
    found = errors_of(repo.root)
    assert [d.code for d in found] == ["group-gid", "group-gid"]
    assert {d.line for d in found} == {repo.line_of(STUDENTS, "group: students"),
                                       len(repo.read(STUDENTS).splitlines())}


def test_two_groups_never_share_a_gid(repo):
    _pool(repo, "    first: 1\n    last: 10\n    uid_base: 5000\n    gid_base: 5000\n"
                "    home_root: /lab\n    group: labs\n    group_gid: 2000\n")
    found = errors_of(repo.root)
    assert [d.code for d in found] == ["group-gid", "group-gid"]
    assert "also the gid of group 'labs'" in found[0].message


def test_a_hub_port_students_may_take_is_a_warning(repo):
    repo.replace("hosts/hub-emea.yaml", "hub:\n", "hub:\n  port: 8000\n")
    _, found = __import__("wodsync.catalog", fromlist=["validate"]).validate(repo.root)
    (d,) = [d for d in found if d.code == "hub-port-unprivileged"]
    assert not d.is_error and d.path == "hosts/hub-emea.yaml"
    assert d.line == repo.line_of(d.path, "port: 8000")
    assert "hub.port 8000 is not below 1024" in d.message


def test_locations_without_a_name_are_not_reported_as_duplicates(repo):
    repo.write("catalog/locations.yaml", repo.read("catalog/locations.yaml")
               + "  - description: first without a name\n"
               + "  - description: second without a name\n")
    found = [d for d in errors_of(repo.root) if d.path == "catalog/locations.yaml"]
    assert found and all(d.code != "duplicate-id" for d in found)
    assert [(d.line, d.code) for d in found] == [(7, "missing"), (8, "missing")]
