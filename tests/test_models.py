"""Model-level checks, each mapped to the file, line and column of the mistake."""

from __future__ import annotations

import pytest

from helpers import errors_of, only_error

PY = "catalog/workshops/WKSHP-Python101/workshop.yaml"
HOST = "hosts/hub-emea.yaml"


def test_unknown_key_is_located_with_a_suggestion(repo):
    repo.replace(PY, "capacity: 40", "capcity: 40")
    found = errors_of(repo.root)
    unknown = next(d for d in found if d.code == "extra_forbidden")
    assert (unknown.path, unknown.line, unknown.col) == (PY, repo.line_of(PY, "capcity"), 1)
    assert "did you mean 'capacity'" in unknown.message
    missing = next(d for d in found if d.code == "missing")
    assert "capacity" in missing.message and missing.path == PY


def test_strict_types_refuse_strings_for_numbers(repo):
    repo.replace(PY, "capacity: 40", "capacity: '40'")
    d = only_error(repo.root, "int_type")
    assert (d.path, d.line, d.col) == (PY, repo.line_of(PY, "capacity"), 11)


def test_nested_value_error_points_at_the_value(repo):
    repo.replace(PY, "seats: {first: 1, last: 40}", "seats:\n  first: 1\n  last: -4")
    d = errors_of(repo.root)[0]
    assert d.path == PY and d.line == repo.line_of(PY, "last: -4") and d.col == 9


def test_seat_range_order(repo):
    repo.replace(PY, "seats: {first: 1, last: 40}", "seats: {first: 40, last: 1}")
    d = only_error(repo.root, "value_error")
    assert d.line == repo.line_of(PY, "seats:") and "before first" in d.message


@pytest.mark.parametrize("path", ["../outside.sh", "/etc/passwd", "scripts/../../x.sh",
                                  "scripts/$(reboot).sh"])
def test_script_paths_stay_inside_the_folder(repo, path):
    repo.replace(PY, "kernels: [python3]", f"kernels: [python3]\nhooks:\n  create: '{path}'")
    found = errors_of(repo.root)
    assert found and all(d.path == PY for d in found)
    assert found[0].line == repo.line_of(PY, "create:")


def test_image_must_be_url_or_path(repo):
    repo.replace(PY, "workshop_image: https://wod.example.org/img/python101.png",
                 "workshop_image: 'not an image; rm -rf /'")
    d = only_error(repo.root, "string_pattern_mismatch")
    assert d.line == repo.line_of(PY, "workshop_image")


def test_secret_reference_shape(repo):
    repo.replace(HOST, "token: {secret: HUB_EMEA_TOKEN}", "token: {secret: 'a b'}")
    d = only_error(repo.root, "string_pattern_mismatch")
    assert (d.path, d.line) == (HOST, repo.line_of(HOST, "token:"))


def test_ssh_host_needs_pinned_key(repo):
    text = "\n".join(ln for ln in repo.read(HOST).splitlines() if not ln.startswith("host_key"))
    repo.write(HOST, text + "\n")
    d = only_error(repo.root, "value_error")
    assert d.path == HOST and "host_key" in d.message


def test_pool_never_reaches_system_uids(repo):
    repo.replace("catalog/students.yaml", "uid_base: 2000", "uid_base: 0")
    d = only_error(repo.root, "value_error")
    assert d.path == "catalog/students.yaml" and "1000..59999" in d.message


def test_pool_prefix_is_a_linux_name(repo):
    repo.replace("catalog/students.yaml", "prefix: student", "prefix: 'stu;dent'")
    d = only_error(repo.root, "string_pattern_mismatch")
    assert d.line == repo.line_of("catalog/students.yaml", "prefix:")


def test_missing_required_file(repo):
    repo.path("catalog/locations.yaml").unlink()
    found = errors_of(repo.root)
    assert any(d.code == "missing-file" and d.path == "catalog/locations.yaml" for d in found)


def test_no_catalog_directory(tmp_path):
    d = only_error(tmp_path, "missing-file")
    assert d.path == "catalog"
