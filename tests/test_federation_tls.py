"""A remote served over HTTPS with a self-signed certificate: refused with verification and no CA bundle,
accepted with its certificate as the CA bundle, and with verification off."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.vireo import VireoProcess

pytestmark = pytest.mark.timeout(180)
DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")


def self_signed(folder: Path) -> tuple[Path, Path, str]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate file, key file, PEM text)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vireo-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_text(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, pem


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VireoProcess, VireoProcess, str]]:
    root = tmp_path_factory.mktemp("tls")
    cert, key, pem = self_signed(root)
    a = VireoProcess(root / "site-a", VIREO_INSTANCE_NAME="site-a", VIREO_SSL_CERTFILE=str(cert), VIREO_SSL_KEYFILE=str(key))
    b = VireoProcess(root / "site-b", VIREO_INSTANCE_NAME="site-b")
    try:
        a.start()
        b.start()
        yield a, b, pem
    finally:
        b.stop()
        a.stop()


def test_ssl_verification_per_remote_with_a_ca_bundle(pair: tuple[VireoProcess, VireoProcess, str]) -> None:
    a, b, pem = pair
    with a.client() as ca, b.client() as cb:
        local_a, local_b = ca.get("/api/instances/local").json(), cb.get("/api/instances/local").json()
        assert local_a["protocol"] == "https"
        assert ca.post("/api/instances", json={k: local_b[k] for k in DEFINITION}).status_code == 201
        assert cb.post("/api/instances", json={**{k: local_a[k] for k in DEFINITION}, "ssl_verify": True}).status_code == 201

        refused = cb.post("/api/instances/sync").json()["site-a"]
        # the admin reads one plain reason; why exactly (here: the certificate) is in the server log only
        assert refused["ok"] is False and refused["error"] == "could not reach site-a (the server log has the details)", refused
        assert cb.get("/api/instances/site-a").json()["last_error"] == refused["error"]
        assert "CERTIFICATE_VERIFY_FAILED" not in refused["error"] and "CERTIFICATE_VERIFY_FAILED" in b.log()

        assert cb.put("/api/instances/site-a", json={"ca_bundle": pem}).json()["ca_bundle"] is True
        assert cb.post("/api/instances/sync").json()["site-a"]["ok"] is True

        assert cb.put("/api/instances/site-a", json={"ca_bundle": None, "ssl_verify": False}).status_code == 200
        assert cb.post("/api/instances/sync").json()["site-a"]["ok"] is True
        assert cb.get("/api/instances/site-a").json()["health"] == "online"
