"""Model-level checks, each mapped to the file, line and column of the mistake."""

from __future__ import annotations

import base64
import struct
import subprocess

import paramiko
import pytest

from wodsync.catalog import validate

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


# -- Kernel installers: what root runs at apply ------------------------------------------------

def _kernel(repo, install: list[str]) -> str:
    """Give Python101 a kernel with `install` as a block list; return the file."""
    items = "".join(f"      - '{arg}'\n" for arg in install)
    repo.replace(PY, "kernels: [python3]", f"kernels:\n  - python3\n  - name: extra\n"
                                           f"    install:\n{items}")
    return PY


def _item_position(repo, rel: str, value: str) -> tuple[int, int]:
    line = repo.line_of(rel, f"- '{value}'")
    return line, repo.read(rel).splitlines()[line - 1].index(f"'{value}'") + 1


@pytest.mark.parametrize(("install", "bad", "says"), [
    (["sh", "-c", "id"], "sh", "not allowed"),
    (["/bin/bash", "x.sh"], "/bin/bash", "not allowed"),
    (["python", "-c", "import os"], "-c", "-m <module>"),
    (["python", "-m", "os.path"], "os.path", "standard library"),
    (["python", "-m", "timeit", "x"], "timeit", "standard library"),
    (["python", "-m", "pip", "install", "evil"], "pip", "pip:"),
    (["python", "-m", "IPython", "x.py"], "IPython", "runs code"),
    (["python", "-m", "ipykernel", "install", "--name", "x;reboot"], "x;reboot", "shell"),
    (["python", "-m", "ipykernel", "install", "&&", "reboot"], "&&", "shell"),
    (["python", "-m", "ipykernel", "install", "--display-name", "A B"], "A B", "spaces"),
    (["python", "-m", "bash_kernel.install", "/bin/sh"], "/bin/sh", "another command"),
    (["python", "-m", "bash_kernel.install", "sudo"], "sudo", "another command"),
    (["python", "-m", "ipykernel", "install", "-cprint"], "-cprint", "code"),
    (["python", "-m", "ipykernel", "--IPKernelApp.exec_lines=x"],
     "--IPKernelApp.exec_lines=x", "traitlets"),
    (["jupyter", "nbconvert", "--execute", "x.ipynb"], "nbconvert", "not allowed"),
    (["jupyter", "run", "x.py"], "run", "not allowed"),
])
def test_a_kernel_installer_is_limited_to_modules_and_jupyter_subcommands(repo, install, bad,
                                                                          says):
    _kernel(repo, install)
    d = only_error(repo.root, "kernel-install")
    assert (d.path, d.line, d.col) == (PY, *_item_position(repo, PY, bad))
    assert says in d.message


@pytest.mark.parametrize("install", [
    ["python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
    ["python", "-m", "bash_kernel.install", "--sys-prefix"],
    ["jupyter", "kernelspec", "install", "/opt/kernels/octave", "--sys-prefix"],
    ["python", "-m", "ipykernel", "install", "--name=lab-1", "--display-name=Lab_1"],
])
def test_usual_kernel_installers_are_accepted(repo, install):
    _kernel(repo, install)
    assert errors_of(repo.root) == []


# -- pip requirements: names of packages, nothing else ----------------------------------------

@pytest.mark.parametrize("req", [
    "pandas @ https://evil.example.org/pandas-9.0-py3-none-any.whl",
    "pandas @ file:///tmp/pandas.whl",
    "git+https://evil.example.org/pandas",
    "evil-1.0-py3-none-any.whl",
    "evil.tar.gz",
    "./evil",
    "/tmp/evil",
    "--index-url=https://evil.example.org/simple",
    "-e .",
    "pandas --hash=sha256:00",
])
@pytest.mark.parametrize("where", ["workshop", "kernel", "host"])
def test_pip_requirements_are_package_names_only(repo, req, where):
    rel, line_needle = _requirement(repo, req, where)
    d = only_error(repo.root, "pip-requirement")
    line = repo.line_of(rel, line_needle)
    assert (d.path, d.line) == (rel, line)
    assert d.col == repo.read(rel).splitlines()[line - 1].index(f"'{req}'") + 1


def _requirement(repo, req: str, where: str) -> tuple[str, str]:
    if where == "host":
        repo.replace(HOST, "  pip: [pandas>=2.2]", f"  pip: ['{req}']")
        return HOST, "  pip: ["
    if where == "kernel":
        repo.replace(PY, "kernels: [python3]",
                     f"kernels:\n  - name: extra\n    pip: ['{req}']")
        return PY, "    pip: ["
    repo.replace(PY, "kernels: [python3]", f"kernels: [python3]\npackages:\n  pip: ['{req}']")
    return PY, "  pip: ["


def test_requirements_with_extras_versions_and_markers_are_accepted(repo):
    repo.replace(HOST, "  pip: [pandas>=2.2]",
                 "  pip: ['pandas[excel]>=2.2,<3; python_version >= \"3.9\"', 'numpy==2.1.*']")
    assert errors_of(repo.root) == []


def test_the_hub_lab_requirement_is_checked_too(repo):
    repo.replace(HOST, "  lab: jupyterlab>=4.4", "  lab: 'jupyterlab @ https://evil/x.whl'")
    d = only_error(repo.root, "pip-requirement")
    assert (d.path, d.line) == (HOST, repo.line_of(HOST, "  lab:"))


# -- Pinned host keys --------------------------------------------------------------------------

def _keygen(tmp_path, kind: str, bits: str) -> str:
    path = tmp_path / f"key-{kind}-{bits}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-b", bits, "-N", "", "-f", str(path)],
                   check=True)
    return " ".join((tmp_path / f"{path.name}.pub").read_text().split()[:2])


def _pin(repo, key: str) -> None:
    pinned = next(ln for ln in repo.read(HOST).splitlines() if ln.startswith("host_key"))
    repo.replace(HOST, pinned, f"host_key: {key}")


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", "256"), ("rsa", "2048"),
                                            ("ecdsa", "256"), ("ecdsa", "384"),
                                            ("ecdsa", "521")])
def test_real_host_keys_of_every_type_are_accepted(repo, tmp_path, kind, bits):
    key = _keygen(tmp_path, kind, bits)
    _pin(repo, key)
    assert errors_of(repo.root) == []
    kind_name, data = key.split(" ")
    assert paramiko.PKey.from_type_string(kind_name, base64.b64decode(data))


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


ED = b"ssh-ed25519"
# Keys `plan` used to crash on inside paramiko (transport: from_type_string(kind, b64decode)).
CRASHING = {
    "truncated base64": ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAID0QtXp2XV+CB64sWR6MkzxKmIo"),
    "type differs from the blob": ("ssh-rsa", _blob(ED, b"k" * 32)),
    "short ed25519 key": ("ssh-ed25519", _blob(ED, b"k" * 31)),
    "even rsa exponent": ("ssh-rsa", _blob(b"ssh-rsa", b"\x02", b"\x00" + b"\xc3" * 255)),
    "ecdsa point off the curve": ("ecdsa-sha2-nistp256", _blob(
        b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x01" * 64)),
    "ecdsa curve mismatch": ("ecdsa-sha2-nistp256", _blob(
        b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" + b"\x01" * 64)),
}
# Keys paramiko loads but no SSH server would present (OpenSSH refuses them too).
INVALID = {
    "bytes after the key": ("ssh-ed25519", base64.b64encode(
        base64.b64decode(_blob(ED, b"k" * 32)) + b"junk").decode()),
    "small rsa modulus": ("ssh-rsa", _blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc3" * 63)),
}


def _refused_at_the_key(repo, kind: str, data: str) -> None:
    _pin(repo, f"{kind} {data}")
    d = only_error(repo.root, "host-key")
    line = repo.line_of(HOST, "host_key:")
    assert (d.path, d.line, d.col) == (HOST, line, len("host_key: ") + 1)


@pytest.mark.parametrize("name", sorted(CRASHING))
def test_a_host_key_that_crashed_plan_is_a_located_error(repo, name):
    kind, data = CRASHING[name]
    with pytest.raises(Exception):  # noqa: B017 - what `plan` hit, whatever its type
        paramiko.PKey.from_type_string(kind, base64.b64decode(data))
    _refused_at_the_key(repo, kind, data)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_a_host_key_no_server_would_present_is_refused(repo, name):
    _refused_at_the_key(repo, *INVALID[name])


# -- The pool's shared group gid ---------------------------------------------------------------

STUDENTS = "catalog/students.yaml"


def test_the_shared_group_defaults_to_gid_base_which_no_seat_has(repo):
    catalog, found = validate(repo.root)
    pool = catalog.pools["student"]
    assert found == [] and pool.group_gid is None and pool.shared_gid == 2000
    assert pool.shared_gid not in range(pool.seat_gids[0], pool.seat_gids[1] + 1)


def test_a_shared_gid_inside_the_seat_gids_is_refused(repo):
    repo.replace(STUDENTS, "group: students", "group: students\n    group_gid: 2005")
    d = only_error(repo.root, "group-gid")
    assert (d.path, d.line, d.col) == (STUDENTS, repo.line_of(STUDENTS, "group_gid"), 16)
    assert "seat 5" in d.message


def test_a_default_shared_gid_below_1000_is_refused_at_the_group(repo):
    repo.replace(STUDENTS, "gid_base: 2000", "gid_base: 999")
    d = only_error(repo.root, "group-gid")
    assert (d.path, d.line) == (STUDENTS, repo.line_of(STUDENTS, "group: students"))
    assert "999" in d.message


def test_an_explicit_shared_gid_outside_the_seats_is_used(repo):
    repo.replace(STUDENTS, "group: students", "group: students\n    group_gid: 1500")
    catalog, found = validate(repo.root)
    assert found == [] and catalog.pools["student"].shared_gid == 1500


def test_a_group_gid_without_a_group_is_refused(repo):
    repo.replace(STUDENTS, "group: students", "group_gid: 1500")
    d = only_error(repo.root, "group-gid")
    assert d.line == repo.line_of(STUDENTS, "group_gid")
