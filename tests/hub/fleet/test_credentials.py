"""A gateway's certificate follows its enrolment: the API and the CLI issue it with the enrolment and revoke it
with the gateway, and the broker running the hub's files lets the gateway in, then shuts it out."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from typer.testing import CliRunner

from hub.auth.models import AuditEntry
from hub.db.models import Gateway
from hub.pki.authority import CertificateAuthority
from hub.pki.commands import pki_directory
from hub.pki.identity import GatewayIdentity
from hub.pki.settings import BrokerSettings
from hub.settings import HubSettings
from launcher.cli import app as cli_app
from storegate.mqtt import MqttSettings
from storegate.private_files import is_private, write_private
from tests.conftest import wait_until
from tests.hub.conftest import running_hub
from tests.tls_broker import HOST, Client, TlsBroker, running_tls_broker

ENROL = "/api/v1/stores/store-0001/gateways"
REVOKE = "/api/v1/stores/store-0001/gateways/gw-1/revoke"


def _with_ca(settings: HubSettings, broker_dir: Path) -> HubSettings:
    """``settings`` of a hub that runs the gateways' CA and writes the broker's files into ``broker_dir``."""
    CertificateAuthority.create(pki_directory(settings))
    broker = BrokerSettings(files_dir=broker_dir, port=8883, bind_address=HOST, persistence_dir=None)
    return settings.model_copy(update={"broker": broker})


async def test_enrolling_by_the_api_issues_the_certificate_once_and_revoking_revokes_it(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    settings = _with_ca(hub_settings, tmp_path / "broker")
    ca = CertificateAuthority.open(pki_directory(settings))
    async with running_hub(settings) as hub:
        enrolled = await hub.client.post(ENROL, json={"gateway_id": "gw-1"})
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.headers["cache-control"] == "no-store"  # the key must not rest in a cache
        body = enrolled.json()
        issued = body["credentials"]
        certificate = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
        key = serialization.load_pem_private_key(issued["private_key_pem"].encode(), password=None)
        name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert name == "store-0001/gw-1"  # the broker takes the identity from it
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key().public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
        certificate.verify_directly_issued_by(ca.ca_certificate())  # raises unless the CA signed it
        assert issued["ca_certificate_pem"].encode() == ca.ca_cert_path.read_bytes()
        assert format(certificate.serial_number, "x") == issued["serial"]
        acl = (tmp_path / "broker" / "acl").read_text()
        assert "user store-0001/gw-1\n" in acl

        revoked = await hub.client.post(REVOKE)
        assert revoked.status_code == 200, revoked.text
        (record,) = [r for r in ca.records() if r.name == "store-0001/gw-1"]
        assert record.revoked_at is not None
        crl = x509.load_pem_x509_crl((tmp_path / "broker" / "crl.pem").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
        assert "user store-0001/gw-1\n" not in (tmp_path / "broker" / "acl").read_text()

        # The key was answered once and is kept nowhere: not in the audit log, not in the CA's directory.
        async with hub.runtime.sessions() as session:
            entries = (await session.scalars(select(AuditEntry))).all()
        assert any(e.target == "gateway:store-0001/gw-1" for e in entries)
        key_line = issued["private_key_pem"].splitlines()[1]
        assert not any(key_line in repr(vars(e)) for e in entries)
        assert not any(key_line.encode() in p.read_bytes() for p in pki_directory(settings).iterdir() if p.is_file())


async def test_without_a_ca_the_api_enrols_without_credentials(hub_settings: HubSettings) -> None:
    async with running_hub(hub_settings) as hub:
        enrolled = await hub.client.post(ENROL, json={"gateway_id": "gw-1"})
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.json()["credentials"] is None


async def test_a_name_too_long_for_a_certificate_enrols_nothing(hub_settings: HubSettings, tmp_path: Path) -> None:
    settings = _with_ca(hub_settings, tmp_path / "broker")
    async with running_hub(settings) as hub:
        long_id = "g" * 60  # store-0001/ + 60 characters: longer than a certificate's 64-character name
        refused = await hub.client.post(ENROL, json={"gateway_id": long_id})
        assert refused.status_code == 422
        assert "64" in refused.json()["message"]
        async with hub.runtime.sessions() as session:
            assert (await session.scalars(select(Gateway))).all() == []


def test_the_cli_adds_with_the_certificate_into_out_and_revokes_it(hub_settings: HubSettings, tmp_path: Path) -> None:
    settings = _with_ca(hub_settings, tmp_path / "broker")
    config = tmp_path / "hub.toml"
    write_private(
        config,
        f'database_url = "{settings.database_url}"\nsecrets_dir = "{settings.secrets_dir}"\n'
        f'[broker]\nfiles_dir = "{tmp_path / "broker"}"\npersistence_dir = "{tmp_path / "data"}"\n',
    )
    runner = CliRunner()

    no_out = runner.invoke(cli_app, ["hub", "gateways", "add", "store-0001/gw-1", "--config", str(config)])
    assert no_out.exit_code == 2, no_out.output
    assert "--out" in no_out.output

    out = tmp_path / "gw-1-credentials"
    added = runner.invoke(
        cli_app, ["hub", "gateways", "add", "store-0001/gw-1", "--config", str(config), "--out", str(out)]
    )
    assert added.exit_code == 0, added.output
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "gateway.crt", "gateway.key"]
    assert is_private(out / "gateway.key")
    assert "user store-0001/gw-1\n" in (tmp_path / "broker" / "acl").read_text()

    revoked = runner.invoke(cli_app, ["hub", "gateways", "revoke", "store-0001/gw-1", "--config", str(config)])
    assert revoked.exit_code == 0, revoked.output
    assert "certificates revoked: 1" in revoked.output
    assert "user store-0001/gw-1\n" not in (tmp_path / "broker" / "acl").read_text()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """Mosquitto on the files of a CA with store-a/gw-1 and store-b/gw-1 enrolled."""
    with running_tls_broker(tmp_path / "tls") as tls:
        yield tls


async def test_the_broker_lets_an_enrolled_gateway_in_and_shuts_it_out_when_revoked(
    hub_settings: HubSettings, tls_broker: TlsBroker, tmp_path: Path
) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{tls_broker.broker.process.pid}\n")
    broker = BrokerSettings(
        files_dir=tls_broker.files.directory,
        port=tls_broker.port,
        bind_address=HOST,
        persistence_dir=None,
        run_as=getpass.getuser(),
        pid_file=pid_file,
    )
    # The hub's CA is the one the running broker trusts.
    settings = hub_settings.model_copy(update={"secrets_dir": tls_broker.workdir / "secrets", "broker": broker})
    newcomer = GatewayIdentity("store-0001", "gw-1")
    async with running_hub(settings) as hub:
        enrolled = await hub.client.post(ENROL, json={"gateway_id": "gw-1"})
        assert enrolled.status_code == 201, enrolled.text
        issued = enrolled.json()["credentials"]
        bundle = tmp_path / "gateway"
        bundle.mkdir(mode=0o700)
        for name, field in (("ca.crt", "ca_certificate_pem"), ("gateway.crt", "certificate_pem")):
            (bundle / name).write_text(issued[field])
        write_private(bundle / "gateway.key", issued["private_key_pem"])
        gateway = MqttSettings(
            host=HOST,
            port=tls_broker.port,
            tls=True,
            ca_file=bundle / "ca.crt",
            cert_file=bundle / "gateway.crt",
            key_file=bundle / "gateway.key",
        )

        def accepted() -> bool:
            with Client(gateway) as attempt:
                return attempt.connected

        # The broker reloads on the SIGHUP the hub sent after writing the files: wait for it to take effect.
        wait_until(accepted, what=f"{newcomer} let in after its enrolment")

        assert (await hub.client.post(REVOKE)).status_code == 200
        wait_until(lambda: not accepted(), what=f"{newcomer} refused after its revocation")
        with Client(tls_broker.gateway_settings(next(iter(tls_broker.bundles)))) as control:
            assert control.connected  # the other gateways are still let in
