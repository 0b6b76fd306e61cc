"""The CA's files, what it issues and revokes, and the identity a certificate carries."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.pki.authority import CRL_DAYS, CertificateAuthority, PkiError
from hub.pki.identity import GatewayIdentity, IdentityError, check_hub_name

A = GatewayIdentity("store-a", "gw-1")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "secrets" / "pki", broker_hosts=("broker.example", "10.0.0.5"))


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_identity_maps_one_to_one_and_refuses_names_that_could_alias() -> None:
    assert GatewayIdentity.parse("store-a/gw-1") == A
    assert A.common_name == "store-a/gw-1"
    for bad in ("store-a", "store-a/gw-1/x", "Store-A/gw-1", "store+/gw-1", "store-a/#", "/gw-1", "a/b c", ""):
        with pytest.raises(IdentityError):
            GatewayIdentity.parse(bad)
    with pytest.raises(IdentityError, match="64"):
        GatewayIdentity("s" * 40, "g" * 30)
    for bad_hub in ("store-a/gw-1", "", "hub#", "h" * 65):
        with pytest.raises(IdentityError):
            check_hub_name(bad_hub)


def test_the_ca_directory_is_0700_and_every_file_in_it_0600(ca: CertificateAuthority) -> None:
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    files = list(ca.directory.iterdir())
    assert {f.name for f in files} >= {"ca.key", "ca.crt", "broker.key", "broker.crt", "hub.key", "hub.crt", "crl.pem"}
    assert [f.name for f in files if stat.S_IMODE(f.stat().st_mode) != 0o600] == []


def test_a_gateway_certificate_names_its_gateway_is_a_client_and_is_signed_by_the_ca(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    issued = ca.issue_gateway(A)
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert common_name(cert) == "store-a/gw-1"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(ca.ca_certificate())
    assert issued.ca_pem == ca.ca_cert_path.read_bytes()
    assert b"PRIVATE KEY" not in repr(issued).encode()
    cert_path, key_path, ca_path = issued.write(tmp_path / "out", stem="gateway")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert cert_path.read_bytes() == issued.certificate_pem
    assert ca_path.read_bytes() == issued.ca_pem
    # The hub keeps no gateway key: only the CA's, the broker's and its own.
    assert sorted(p.name for p in ca.directory.glob("*.key")) == ["broker.key", "ca.key", "hub.key"]


def test_the_broker_certificate_is_a_server_for_its_names_and_the_hubs_a_client(ca: CertificateAuthority) -> None:
    broker = x509.load_pem_x509_certificate(ca.broker_cert_path.read_bytes())
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    hub = x509.load_pem_x509_certificate(ca.hub_cert_path.read_bytes())
    assert common_name(hub) == "storegate-hub"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in hub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert isinstance(hub.public_key(), ec.EllipticCurvePublicKey)


def test_revoking_lists_every_certificate_of_the_gateway_in_the_crl_and_only_those(ca: CertificateAuthority) -> None:
    first, second = ca.issue_gateway(A), ca.issue_gateway(A)
    other = ca.issue_gateway(GatewayIdentity("store-b", "gw-1"))
    assert ca.live_gateways() == [A, GatewayIdentity("store-b", "gw-1")]
    revoked = ca.revoke_gateway(A)
    assert {r.serial for r in revoked} == {first.record.serial, second.record.serial}
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    ca_key = ca.ca_certificate().public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_key)
    assert {r.serial_number for r in crl} == {first.record.serial, second.record.serial}
    assert crl.get_revoked_certificate_by_serial_number(other.record.serial) is None
    assert ca.live_gateways() == [GatewayIdentity("store-b", "gw-1")]
    assert ca.revoke_gateway(A) == []  # revoking again changes nothing


def test_the_crl_is_re_signed_with_a_fresh_next_update(ca: CertificateAuthority) -> None:
    later = datetime.now(UTC) + timedelta(days=200)
    ca.refresh_crl(now=later)
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > later + timedelta(days=CRL_DAYS - 1)


def test_the_index_survives_a_reopen_and_a_second_init_is_refused(ca: CertificateAuthority) -> None:
    issued = ca.issue_gateway(A)
    ca.revoke_gateway(A)
    reopened = CertificateAuthority.open(ca.directory)
    record = next(r for r in reopened.records() if r.serial == issued.record.serial)
    assert record.revoked_at is not None
    assert record.name == "store-a/gw-1"
    assert json.loads(ca.index_path.read_text())["certificates"][-1]["serial"] == format(issued.record.serial, "x")
    with pytest.raises(PkiError, match="already holds a CA"):
        CertificateAuthority.create(ca.directory)
    with pytest.raises(PkiError, match="pki init"):
        CertificateAuthority.open(ca.directory.parent / "elsewhere")


def test_renewing_replaces_the_broker_and_hub_pairs_in_place(ca: CertificateAuthority) -> None:
    old_broker, old_hub_key = ca.broker_cert_path.read_bytes(), ca.hub_key_path.read_bytes()
    record = ca.renew_broker(["mqtt.example"])
    broker = x509.load_pem_x509_certificate(ca.broker_cert_path.read_bytes())
    assert broker.serial_number == record.serial
    assert broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["mqtt.example"]
    assert ca.broker_cert_path.read_bytes() != old_broker
    hub = ca.renew_hub("storegate-hub")
    assert ca.hub_key_path.read_bytes() != old_hub_key
    assert x509.load_pem_x509_certificate(ca.hub_cert_path.read_bytes()).serial_number == hub.serial
    assert stat.S_IMODE(ca.hub_key_path.stat().st_mode) == 0o600
    assert ca.live_hubs() == ["storegate-hub"]
