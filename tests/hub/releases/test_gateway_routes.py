"""The gateways' routes of updates on the real gateway listener (TLS, client certificates issued by the hub's CA):
a gateway downloads releases and reports the outcome of its own update commands only; the agent's updater
installs what it downloaded only when it is what the command said."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_agent.config import AgentConfig
from edge_agent.updates import Updater, current_release, read_record
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
        await _the_updater_installs_only_what_the_command_names(tls, port, tmp_path, wheel)


def update_command(**args: object) -> wire.Command:
    return wire.Command(
        command_id=uuid.uuid4(),
        store_id=STORE_A.store_id,
        gateway_id=STORE_A.gateway_id,
        name="update",
        args={"download_path": "/api/v1/gateway/releases/0.2.0/wheel", "probation_s": 60, **args},
        issued_at=wire.utc_now(),
    )


async def _the_updater_installs_only_what_the_command_names(
    tls: TlsBroker, port: int, tmp_path: Path, wheel: bytes
) -> None:
    home = tmp_path / "gateway-home"
    home.mkdir()
    config = AgentConfig.model_validate(
        {
            "store_id": STORE_A.store_id,
            "gateway_id": STORE_A.gateway_id,
            "mqtt": tls.gateway_settings(STORE_A).model_dump(),
            "outbox": {"path": home / "outbox.sqlite"},
            "snapshots": {"hub_url": f"https://{HOST}:{port}"},
        }
    )
    stop = asyncio.Event()
    progress: list[str] = []
    updater = Updater(config=config, home=home, request_stop=stop.set, running_version="0.1.0")
    good = hashlib.sha256(wheel).hexdigest()

    status, detail = await updater.handle(update_command(version="0.2.0", sha256="0" * 64), progress.append)
    assert status == "failed"
    assert detail == f"the download's SHA-256 is {good}, not {'0' * 64}: nothing was installed"
    status, detail = await updater.handle(update_command(version="0.2.1", sha256=good), progress.append)
    assert (status, detail) == ("failed", "the wheel is version 0.2.0, not 0.2.1: nothing was installed")
    status, detail = await updater.handle(update_command(version="0.1.0", sha256=good), progress.append)
    assert (status, detail) == ("done", "already running 0.1.0")
    status, detail = await updater.handle(update_command(version="0.2.0", sha256=good, probation_s=1), progress.append)
    assert status == "rejected"
    assert "probation_s" in detail
    assert current_release(home) is None
    assert read_record(home) is None
    assert not stop.is_set()
    assert progress == []

    switching = asyncio.create_task(updater.handle(update_command(version="0.2.0", sha256=good), progress.append))
    await asyncio.wait_for(stop.wait(), 10)  # installed and switched: the agent is asked to stop
    switching.cancel()  # as the agent's shutdown does; the next agent reports the outcome
    with contextlib.suppress(asyncio.CancelledError):
        await switching
    assert current_release(home) == "0.2.0"
    record = read_record(home)
    assert record is not None
    assert (record.state, record.from_version, record.to_version, record.probation_s) == (
        "switching",
        "0.1.0",
        "0.2.0",
        60,
    )
    assert progress == [
        "installed 0.2.0 beside 0.1.0; switching to it, with 60 s to reach the hub and its devices "
        "(the outcome follows)"
    ]
    assert updater.exit_code(0) == 75
