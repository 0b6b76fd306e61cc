"""The gateways' routes of updates on the real gateway listener (TLS, client certificates issued by the hub's CA):
a gateway downloads releases and reports the outcome of its own update commands only."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.db.models import OutgoingCommand
from hub.fleet import registry
from hub.pki.identity import GatewayIdentity
from hub.settings import load_hub_settings
from launcher.broker import free_port
from storegate import wire
from tests.hub.conftest import RunningHub, running_hub
from tests.hub.releases.wheels import fake_wheel
from tests.tls_broker import HOST, STORE_A, STORE_B, TlsBroker, running_tls_broker


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsBroker]:
    with running_tls_broker(tmp_path) as broker:
        yield broker


def client_of(tls: TlsBroker, gateway: GatewayIdentity | None, port: int) -> httpx.AsyncClient:
    context = ssl.create_default_context(cafile=str(tls.ca.ca_cert_path))
    if gateway is not None:
        directory = tls.bundles[gateway]
        context.load_cert_chain(directory / "gateway.crt", directory / "gateway.key")
    return httpx.AsyncClient(verify=context, base_url=f"https://{HOST}:{port}", timeout=10)


async def command_for(hub: RunningHub, gateway: GatewayIdentity, name: str = "update") -> str:
    command_id = str(uuid.uuid4())
    async with hub.runtime.sessions() as session:
        session.add(
            OutgoingCommand(
                command_id=command_id,
                store_id=gateway.store_id,
                gateway_id=gateway.gateway_id,
                device_id=None,
                name=name,
                args={},
                issued_at=wire.utc_now(),
                expires_at=None,
                status="sent",
                sent_at=wire.utc_now(),
                result_detail=None,
                result_at=None,
            )
        )
        await session.commit()
    return command_id


async def status_of(hub: RunningHub, command_id: str) -> tuple[str, str | None]:
    async with hub.runtime.sessions() as session:
        row = await session.get(OutgoingCommand, command_id)
        assert row is not None
        return row.status, row.result_detail


async def test_a_gateway_downloads_releases_and_reports_only_its_own_updates(tls: TlsBroker, tmp_path: Path) -> None:
    port = free_port(HOST)
    settings = load_hub_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}",
        mqtt=tls.hub_settings(),
        client_id="storegate-hub",
        secrets_dir=tmp_path / "secrets",
        snapshots={
            "listen_host": HOST,
            "listen_port": port,
            "tls_certfile": tls.ca.broker_cert_path,
            "tls_keyfile": tls.ca.broker_key_path,
            "directory": tmp_path / "stills",
        },
        releases={"directory": tmp_path / "releases"},
    )
    wheel = fake_wheel("0.2.0")
    async with running_hub(settings) as hub:
        async with hub.runtime.sessions() as session:
            for gateway in (STORE_A, STORE_B):
                await registry.enrol(session, gateway.store_id, gateway.gateway_id, by="tests", now=wire.utc_now())
            await session.commit()
        uploaded = await hub.client.post("/api/v1/releases", content=wheel)
        assert uploaded.status_code == 201, uploaded.text
        mine = await command_for(hub, STORE_A)
        not_an_update = await command_for(hub, STORE_A, name="ping")
        outcome = f"/api/v1/gateway/updates/{mine}/outcome"
        async with client_of(tls, STORE_A, port) as a, client_of(tls, STORE_B, port) as b:
            download = await a.get("/api/v1/gateway/releases/0.2.0/wheel")
            assert download.status_code == 200
            assert download.content == wheel
            assert (await a.get("/api/v1/gateway/releases/9.9.9/wheel")).status_code == 404
            assert (await a.get("/api/v1/gateway/releases/..%2F..%2Fetc/wheel")).status_code in {404, 422}

            # Another gateway cannot report (or learn about) this gateway's update; nothing changes.
            forged = await b.post(outcome, json={"status": "done", "detail": "all fine, trust me"})
            assert forged.status_code == 404
            assert await status_of(hub, mine) == ("sent", None)
            other = await a.post(
                f"/api/v1/gateway/updates/{not_an_update}/outcome", json={"status": "done", "detail": ""}
            )
            assert other.status_code == 404
            for body in (
                {"status": "rolled", "detail": "x"},
                {"status": "done", "detail": "x" * 2001},
                {"status": "done"},
            ):
                assert (await a.post(outcome, json=body)).status_code == 422
            assert await status_of(hub, mine) == ("sent", None)

            failed = "rolled back from 0.2.0 to 0.1.0: it exited with code 1 during its probation"
            assert (await a.post(outcome, json={"status": "failed", "detail": failed})).status_code == 200
            assert await status_of(hub, mine) == ("failed", failed)
            # The first final outcome stays (an outcome reported twice, or a forged second one, changes nothing).
            assert (await a.post(outcome, json={"status": "done", "detail": "later"})).status_code == 200
            assert await status_of(hub, mine) == ("failed", failed)

            async with hub.runtime.sessions() as session:
                await registry.revoke(session, STORE_B.store_id, STORE_B.gateway_id, by="tests", now=wire.utc_now())
                await session.commit()
            assert (await b.get("/api/v1/gateway/releases/0.2.0/wheel")).status_code == 403
        async with client_of(tls, None, port) as anonymous:
            with pytest.raises(httpx.HTTPError):
                await anonymous.get("/api/v1/gateway/releases/0.2.0/wheel")
