"""`hub.tls` against a real JupyterHub and configurable-http-proxy: the proxy serves https with
a real certificate signed by a test CA, a seat logs in over it, the plan converges, a
certificate renewed in place is served after the next apply, and a key others may read or a
missing certificate is a plan error located at the host file's `hub.tls`.

Seats wodto1-50 (uids 54801-54850, group wodtogrp gid 54800); local transport.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import remove_test_accounts
from helpers import wodsync as run_wodsync
from hubs import PROXY, hub_ports, hub_prefix_lock, login, needs_hub, stop_hub, write_lab

pytestmark = needs_hub

PREFIX, UID_BASE, SEATS, GROUP = "wodto", 54800, 50, "wodtogrp"  # the lab workshop: 1-50
TOKEN = "wodsync-test-token-" + os.urandom(8).hex()
HOMES = Path("/home/wodsync-test-tls")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("wodsync test CA"))
            .issuer_name(_name("wodsync test CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], folder: Path) -> int:
    """A new server certificate for 127.0.0.1 and localhost at `folder`/{cert,key}.pem (the
    key root's, mode 0600), replaced in place as a renewal does; returns its serial."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_path = folder / "key.pem"
    fd = os.open(key_path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    key_path.with_suffix(".tmp").replace(key_path)
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").chmod(0o644)
    return cert.serial_number


def served_serial(port: int, ca_file: Path) -> int:
    """The serial of the certificate the proxy presents, verified against the test CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wodsync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_wodsync(*args, "--root", root, env=dict(os.environ, WODT_HUB_TOKEN=TOKEN))


def _cleanup() -> None:
    remove_test_accounts(PREFIX, UID_BASE, (GROUP,))
    shutil.rmtree(HOMES, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory):
    """A local host whose managed hub serves https with a certificate of a test CA."""
    taken = [p.pw_name for p in __import__("pwd").getpwall()
             if UID_BASE <= p.pw_uid <= UID_BASE + 60 and not p.pw_name.startswith(PREFIX)]
    if taken:
        pytest.skip(f"uids {UID_BASE}-{UID_BASE + 60} are taken by {taken}: not this test's")
    _cleanup()
    tmp = tmp_path_factory.mktemp("tls")
    tmp.chmod(0o755)
    root, data, certs = tmp / "repo", tmp / "hubdata", tmp / "certs"
    certs.mkdir(mode=0o755)
    ca = _ca()
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    serial = issue(ca, certs)
    ports = hub_ports()
    pool = (f"    prefix: {PREFIX}\n    first: 1\n    last: {SEATS}\n    uid_base: {UID_BASE}\n"
            f"    gid_base: {UID_BASE}\n    home_root: {HOMES}\n    group: {GROUP}\n")
    write_lab(root, tmp, pool, ports, f"  service: process\n  proxy: {PROXY}\n"
                                      f"  tls: {{cert: {certs}/cert.pem, key: {certs}/key.pem}}\n")
    try:
        with hub_prefix_lock():
            applied = wodsync(root, "apply", "--yes")
        yield {"root": root, "port": ports["port"], "ca": ca, "ca_file": ca_file,
               "certs": certs, "serial": serial, "first_apply": applied,
               "base": f"https://127.0.0.1:{ports['port']}"}
    finally:
        stop_hub(data, range(UID_BASE, UID_BASE + 61))
        _cleanup()


def _plan(root: Path) -> tuple[int, dict]:
    done = wodsync(root, "plan", "--json")
    return done.returncode, json.loads(done.stdout)[0]["plan"]


def _changes(root: Path) -> tuple[int, list]:
    code, plan = _plan(root)
    return code, plan["changes"]


def test_the_proxy_serves_https_and_a_seat_logs_in_with_the_ca(tls_hub, monkeypatch):
    first = tls_hub["first_apply"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert served_serial(tls_hub["port"], tls_hub["ca_file"]) == tls_hub["serial"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_hub["base"] + "/hub/login", timeout=30)  # without the CA: refused
    password = "Tls-" + os.urandom(6).hex()
    subprocess.run(["chpasswd"], input=f"{PREFIX}1:{password}\n", text=True, check=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_hub["ca_file"]))
    session, _ = login(tls_hub["base"], f"{PREFIX}1", password)
    assert session.get(tls_hub["base"] + "/hub/home", timeout=30).status_code == 200
    # The password set here by hand is drift wodsync puts back (a seat is locked until CREATE).
    assert wodsync(tls_hub["root"], "apply", "--yes").returncode == 0


def test_the_plan_converges_with_tls_and_students_get_the_https_url(tls_hub):
    assert _changes(tls_hub["root"]) == (0, [])
    from wodsync.catalog.loader import load_catalog

    host = load_catalog(tls_hub["root"]).hosts["lab"]
    assert host.hub_url() == f"https://localhost:{tls_hub['port']}/"


def test_a_certificate_renewed_in_place_is_served_after_the_next_apply(tls_hub):
    renewed = issue(tls_hub["ca"], tls_hub["certs"])
    code, plan = _plan(tls_hub["root"])
    assert code == 2, "a pending restart is drift"
    assert [(c["action"], c["address"]) for c in plan["changes"]] == [
        ("update", "service:jupyterhub")], plan
    assert "TLS certificate or key changed on disk" in plan["changes"][0]["detail"]
    assert served_serial(tls_hub["port"], tls_hub["ca_file"]) == tls_hub["serial"], \
        "the proxy serves what it read at its start until the apply"
    done = wodsync(tls_hub["root"], "apply", "--yes")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert served_serial(tls_hub["port"], tls_hub["ca_file"]) == renewed
    assert _changes(tls_hub["root"]) == (0, [])


def test_a_key_others_may_read_or_a_missing_certificate_is_a_located_plan_error(tls_hub):
    key, cert = tls_hub["certs"] / "key.pem", tls_hub["certs"] / "cert.pem"
    key.chmod(0o644)
    try:
        code, plan = _plan(tls_hub["root"])
        assert code != 0 and plan["changes"] == []
        assert any(e.startswith("hosts/lab.yaml:") and "hub.tls: key" in e
                   and "mode 0644" in e for e in plan["errors"]), plan["errors"]
    finally:
        key.chmod(0o600)
    cert.rename(cert.with_suffix(".away"))
    try:
        code, plan = _plan(tls_hub["root"])
        assert code != 0 and any(f"certificate {cert} does not exist" in e
                                 for e in plan["errors"]), plan["errors"]
    finally:
        cert.with_suffix(".away").rename(cert)
    assert _changes(tls_hub["root"]) == (0, [])
