"""Enrolment by one-time token: a technician makes a token for their store, the gateway spends it with a CSR.

Played as an attacker would: a forged token, a reused one (also two uses at once: exactly one enrols), an expired
and a revoked one, an oversized body, a CSR that is garbage or whose signature is not its key's, keys too weak.
Real parts: the hub app with its gate and audit, SQLite (and PostgreSQL for the race at the database), the CA's
files, the broker files the hub writes, and keys and CSRs made by the openssl command as the gateway makes them.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update

from hub.auth.models import AuditEntry
from hub.db.engine import create_engine, session_factory
from hub.db.models import EnrolmentToken, Gateway
from hub.fleet import enrolment
from hub.pki.authority import CertificateAuthority
from hub.pki.commands import pki_directory
from hub.pki.settings import BrokerSettings
from hub.settings import HubSettings
from storegate import wire
from storegate.csr import new_key_and_csr
from storegate.enrolment import ENROL_PATH, TokenFormatError, ca_pin, parse_link, parse_token
from tests.hub.conftest import RunningHub, running_hub
from tests.tls_broker import HOST

TOKENS = "/api/v1/enrolment-tokens"
STORE, OTHER_STORE, GATEWAY = "store-0001", "store-0002", "gw-7"


def with_ca(settings: HubSettings, broker_dir: Path) -> HubSettings:
    """``settings`` of a hub that runs the gateways' CA and writes the broker's files into ``broker_dir``."""
    CertificateAuthority.create(pki_directory(settings))
    broker = BrokerSettings(files_dir=broker_dir, port=8883, bind_address=HOST, persistence_dir=None)
    return settings.model_copy(
        update={"broker": broker, "accept_unknown_gateways": False, "enrolment": settings.enrolment}
    )


def csr_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: str = "anything") -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def forged_signature(pem: str) -> str:
    """The CSR with the last byte of its signature changed: a signature its key did not make."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


# --------------------------------------------------------------------------- pure parts


def test_token_text_link_and_pin_round_trip_and_garbage_is_named() -> None:
    token = enrolment_token_text()
    parsed = parse_token(f"  {token}\n")
    assert parsed.text == token
    assert parsed.secret not in repr(parsed)
    assert parse_link(f"https://hub.example.net/enrol#{token}") == ("https://hub.example.net", token)
    for bad in ("", "sge1.zz", token[:-1], token + "0", token.replace("sge1", "sge2"), "x" * 10_000):
        with pytest.raises(TokenFormatError, match="not an enrolment token"):
            parse_token(bad)
    with pytest.raises(TokenFormatError, match="not an enrolment link"):
        parse_link(f"https://hub.example.net/other#{token}")
    with pytest.raises(ValueError, match="no PEM certificate"):
        ca_pin("not a certificate")


def enrolment_token_text() -> str:
    return f"sge1.{'a' * 16}.{'B' * 43}.{'c' * 64}"


def test_a_csr_is_signed_only_when_sound_p256_or_rsa_2048_and_self_signed() -> None:
    made = new_key_and_csr("store-0001/gw-7")  # as the gateway makes it: the openssl command
    assert isinstance(enrolment.read_csr(made.csr_pem), ec.EllipticCurvePublicKey)
    assert isinstance(enrolment.read_csr(csr_pem(rsa.generate_private_key(65537, 2048))), rsa.RSAPublicKey)
    refusals = {
        "garbage": ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a PEM"),
        "another key's signature": (forged_signature(made.csr_pem), "signature does not match"),
        "P-384": (csr_pem(ec.generate_private_key(ec.SECP384R1())), "curve secp384r1"),
        "RSA 1024": (csr_pem(rsa.generate_private_key(65537, 1024)), "1024 bits"),
        "oversized": ("A" * 10_000, "larger than"),
    }
    for pem, message in refusals.values():
        with pytest.raises(enrolment.CsrError, match=message):
            enrolment.read_csr(pem)


# --------------------------------------------------------------------------- through the hub's API


async def make_token(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    answer = await client.post(TOKENS, json={"store_id": STORE, "gateway_id": GATEWAY, **body})
    assert answer.status_code == 201, answer.text
    made: dict[str, object] = answer.json()
    return made


async def enrol(hub: RunningHub, token: str, csr: str) -> httpx.Response:
    async with hub.anonymous() as anonymous:
        return await anonymous.post(ENROL_PATH, json={"token": token, "csr_pem": csr})


def refused_count(hub: RunningHub, reason: str) -> float:
    value = hub.runtime.metrics.registry.get_sample_value("storegate_hub_enrolments_refused_total", {"reason": reason})
    return value or 0.0


async def test_a_technician_makes_a_token_for_their_store_and_the_gateway_enrols_with_it_once(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    settings = with_ca(hub_settings, tmp_path / "broker")
    ca = CertificateAuthority.open(pki_directory(settings))
    async with running_hub(settings) as hub:
        technician = await hub.client_as("technician", store_ids=[STORE])
        viewer = await hub.client_as("viewer")
        async with technician, viewer:
            # Who may make one: a technician for their own store only; a viewer never.
            other = await technician.post(TOKENS, json={"store_id": OTHER_STORE, "gateway_id": GATEWAY})
            assert other.status_code == 403, other.text
            assert (await viewer.post(TOKENS, json={"store_id": STORE, "gateway_id": GATEWAY})).status_code == 403
            too_long = await technician.post(
                TOKENS, json={"store_id": STORE, "gateway_id": GATEWAY, "valid_hours": 700}
            )
            assert too_long.status_code == 422, too_long.text

            made = await make_token(technician)
            token = str(made["token"])
            assert made["state"] == "live"
            assert made["command"] == f"storegate provision enroll --hub http://127.0.0.1 --token {token}"
            assert made["link"] == f"http://127.0.0.1/enrol#{token}"
            async with hub.anonymous() as phone:  # where the link leads: words for anyone, the token never sent
                page = await phone.get("/enrol", headers={"accept-language": "zh-TW"})
            assert page.status_code == 200
            assert "storegate provision enroll --link" in page.text
            assert "一次性註冊連結" in page.text
            assert "content-security-policy" in page.headers
            parsed = parse_token(token)
            assert parsed.ca_pin == ca_pin(ca.ca_cert_path.read_bytes())  # the Pi checks the CA it gets against this
            listed = (await technician.get(TOKENS)).json()["items"]
            assert [item["token_id"] for item in listed] == [parsed.token_id]
            assert parsed.secret not in (await technician.get(TOKENS)).text

            # The gateway: a key made on it (openssl), its CSR with a subject of its own choosing (ignored).
            made_key = new_key_and_csr("evil/other-gateway")
            forged = f"sge1.{parsed.token_id}.{'A' * 43}.{parsed.ca_pin}"
            answer = await enrol(hub, forged, made_key.csr_pem)
            assert answer.status_code == 403
            assert "not one the hub made" in answer.json()["detail"]
            unknown = f"sge1.{'0' * 16}.{parsed.secret}.{parsed.ca_pin}"
            assert "not one the hub made" in (await enrol(hub, unknown, made_key.csr_pem)).json()["detail"]
            altered_pin = f"sge1.{parsed.token_id}.{parsed.secret}.{'0' * 64}"
            assert "not one the hub made" in (await enrol(hub, altered_pin, made_key.csr_pem)).json()["detail"]
            assert refused_count(hub, "forged") == 3

            bad_csr = await enrol(hub, token, forged_signature(made_key.csr_pem))
            assert bad_csr.status_code == 422
            assert "signature does not match" in bad_csr.text
            oversized = await enrol(hub, token, "A" * (2 * 1024 * 1024))
            assert oversized.status_code == 413

            answer = await enrol(hub, token, made_key.csr_pem)
            assert answer.status_code == 201, answer.text
            body = answer.json()
            certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
            assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{STORE}/{GATEWAY}"
            key = serialization.load_pem_private_key(made_key.key_pem, password=None)
            assert certificate.public_key() == key.public_key()  # the gateway's own key: it never left
            certificate.verify_directly_issued_by(ca.ca_certificate())
            assert ca_pin(body["ca_certificate_pem"]) == parsed.ca_pin
            assert (body["broker_host"], body["broker_port"]) == ("localhost", 8883)
            assert body["agent_config"]["store_id"] == STORE
            assert f"user {STORE}/{GATEWAY}\n" in (tmp_path / "broker" / "acl").read_text()  # the broker admits it

            again = await enrol(hub, token, new_key_and_csr("x").csr_pem)
            assert again.status_code == 403
            assert "used already" in again.json()["detail"]
            assert refused_count(hub, "used") == 1

            gateway = (await technician.get(f"/api/v1/stores/{STORE}/gateways/{GATEWAY}")).json()
            assert gateway["enrolment"] == "token"
            assert gateway["certificate_expires_at"] is not None
            listed = (await technician.get(TOKENS)).json()["items"]
            assert listed[0]["state"] == "used"
            assert listed[0]["certificate_serial"] == body["serial"]

            # A token for a gateway that is enrolled: refused until it is revoked.
            assert (await technician.post(TOKENS, json={"store_id": STORE, "gateway_id": GATEWAY})).status_code == 409

        # Kept nowhere: neither the secret nor its text is in the tokens' table or the audit log.
        async with hub.runtime.sessions() as session:
            rows = (await session.scalars(select(EnrolmentToken))).all()
            entries = (await session.scalars(select(AuditEntry))).all()
        assert all(parsed.secret not in repr(vars(row)) for row in rows)
        assert all(parsed.secret not in repr(vars(entry)) for entry in entries)
        assert any(e.action == "POST /api/v1/enrolment-tokens" and e.actor.startswith("token:") for e in entries)
        assert any(e.action == "POST /api/v1/enrol" and e.target == f"gateway:{STORE}/{GATEWAY}" for e in entries)


async def test_expired_and_revoked_tokens_say_so_and_two_uses_at_once_enrol_once(
    hub_settings: HubSettings, tmp_path: Path
) -> None:
    settings = with_ca(hub_settings, tmp_path / "broker")
    async with running_hub(settings) as hub:
        expired = await make_token(hub.client, gateway_id="gw-1")
        revoked = await make_token(hub.client, gateway_id="gw-2")
        raced = await make_token(hub.client, gateway_id="gw-3")
        async with hub.runtime.sessions() as session:
            await session.execute(
                update(EnrolmentToken)
                .where(EnrolmentToken.token_id == expired["token_id"])
                .values(expires_at=wire.utc_now() - timedelta(minutes=1))
            )
            await session.commit()
        deleted = await hub.client.delete(f"{TOKENS}/{revoked['token_id']}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["state"] == "revoked"
        assert (await hub.client.delete(f"{TOKENS}/{revoked['token_id']}")).status_code == 409
        assert (await hub.client.delete(f"{TOKENS}/0000000000000000")).status_code == 404
        scoped = await hub.client_as("technician", store_ids=[OTHER_STORE])
        async with scoped:  # another store's token: as if it did not exist
            assert (await scoped.delete(f"{TOKENS}/{raced['token_id']}")).status_code == 404
            assert (await scoped.get(TOKENS)).json()["items"] == []

        csr = new_key_and_csr("gw").csr_pem
        answer = await enrol(hub, str(expired["token"]), csr)
        assert answer.status_code == 403
        assert "expired at" in answer.json()["detail"]
        answer = await enrol(hub, str(revoked["token"]), csr)
        assert answer.status_code == 403
        assert "revoked at" in answer.json()["detail"]

        first, second = await asyncio.gather(enrol(hub, str(raced["token"]), csr), enrol(hub, str(raced["token"]), csr))
        assert sorted([first.status_code, second.status_code]) == [201, 403]
        assert "used already" in (first if first.status_code == 403 else second).text
        assert refused_count(hub, "expired") == refused_count(hub, "revoked") == refused_count(hub, "used") == 1
        async with hub.runtime.sessions() as session:
            enrolled = (await session.scalars(select(Gateway.gateway_id))).all()
        assert enrolled == ["gw-3"]


async def test_two_claims_at_once_on_postgresql_leave_exactly_one_winner(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    now = wire.utc_now()
    try:
        async with sessions() as session:
            made = await enrolment.create_token(
                session,
                store_id=STORE,
                gateway_id=GATEWAY,
                ca_pin="c" * 64,
                valid_for=timedelta(hours=1),
                by="tests",
                now=now,
            )
            await session.commit()

        async def claim() -> str:
            async with sessions() as session:
                try:
                    await enrolment.claim(session, made.text, ca_pin="c" * 64, client="192.0.2.1", now=now)
                except enrolment.TokenRefusedError as err:
                    return err.reason
                await session.commit()
                return "won"

        outcomes = await asyncio.gather(claim(), claim())
        assert sorted(outcomes) == ["used", "won"]
    finally:
        await engine.dispose()
