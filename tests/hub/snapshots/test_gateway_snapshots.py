"""Camera stills end to end: an agent records a reading with a JPEG, its spool keeps it while the hub is away and
uploads it over HTTPS with the gateway's own certificate (issued by the hub's CA) once the hub's gateway listener
is up; ops fetch it, viewers and technicians are refused, and the listener refuses what is not its gateway's.

Real parts: Mosquitto with TLS and client certificates (tests/tls_broker.py), the agent in-process, the hub's
gateway listener on uvicorn over TLS on loopback, SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import random
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from device_drivers.base import Reading
from device_drivers.simulated.sequence import SimulatedSequenceConfig
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from edge_agent.snapshots import SnapshotSpool, SnapshotUploader, UploadRefusedError, client_ssl_context
from hub.auth.models import AuditEntry
from hub.db.models import StoredEvent
from hub.fleet import registry
from hub.pki.identity import GatewayIdentity
from hub.settings import HubSettings, load_hub_settings
from hub.snapshots.store import purge_expired
from launcher.broker import free_port
from storegate import wire
from storegate.clock import SystemClock
from tests.conftest import eventually
from tests.edge_agent.conftest import running
from tests.edge_agent.test_snapshots import CameraSettings, DriverDouble
from tests.edge_agent.test_snapshots import jpeg as camera_jpeg
from tests.hub.conftest import RunningHub, running_hub
from tests.tls_broker import HOST, STORE_A, STORE_B, TlsBroker, running_tls_broker

MAX_BYTES = 64 * 1024


def jpeg(shade: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A real JPEG (Pillow) of one shade."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, shade // 2)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsBroker]:
    """The hub's CA with store-a/gw-1 and store-b/gw-1 issued, and Mosquitto on TLS with client certificates."""
    with running_tls_broker(tmp_path) as broker:
        yield broker


def hub_settings_for(tls: TlsBroker, database_url: str, tmp_path: Path, port: int) -> HubSettings:
    """A hub on the TLS broker whose gateway listener serves ``port`` with the CA's server certificate."""
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=tls.hub_settings(),
        client_id="storegate-hub",
        secrets_dir=tmp_path / "secrets",  # where start_tls_broker made the CA: the listener trusts its gateways
        accept_unknown_gateways=False,
        snapshots={
            "listen_host": HOST,
            "listen_port": port,
            "tls_certfile": tls.ca.broker_cert_path,
            "tls_keyfile": tls.ca.broker_key_path,
            "directory": tmp_path / "stills",
            "max_bytes": MAX_BYTES,
        },
    )


def agent_config(tls: TlsBroker, tmp_path: Path, gateway: GatewayIdentity, hub_port: int) -> AgentConfig:
    """store-a's agent: MQTT over TLS and uploads with the same certificate."""
    return AgentConfig.model_validate(
        {
            "store_id": gateway.store_id,
            "gateway_id": gateway.gateway_id,
            "mqtt": tls.gateway_settings(gateway).model_dump(),
            "outbox": {"path": tmp_path / "agent" / "outbox.sqlite3"},
            "snapshots": {"hub_url": f"https://{HOST}:{hub_port}", "retry_max_s": 0.5},
        }
    )


async def enrol(hub: RunningHub, *gateways: GatewayIdentity) -> None:
    """Enrol the gateways as an admin would."""
    async with hub.runtime.sessions() as session:
        for gateway in gateways:
            await registry.enrol(session, gateway.store_id, gateway.gateway_id, by="tests", now=wire.utc_now())
        await session.commit()


def gateway_client(tls: TlsBroker, gateway: GatewayIdentity | None, port: int) -> httpx.AsyncClient:
    """An HTTPS client of the gateway listener with ``gateway``'s certificate (None: no certificate)."""
    context = ssl.create_default_context(cafile=str(tls.ca.ca_cert_path))
    if gateway is not None:
        directory = tls.bundles[gateway]
        context.load_cert_chain(directory / "gateway.crt", directory / "gateway.key")
    return httpx.AsyncClient(verify=context, base_url=f"https://{HOST}:{port}", timeout=10)


def upload_path(store_id: str, ref: str) -> str:
    return f"/api/v1/gateway/stores/{store_id}/snapshots/{ref}"


def refused(hub: RunningHub, reason: str) -> float:
    """The hub's count of uploads refused for ``reason``."""
    value = hub.runtime.metrics.registry.get_sample_value("storegate_hub_snapshots_refused_total", {"reason": reason})
    return value or 0.0


async def test_a_still_goes_from_the_gateway_spool_to_ops_and_never_to_a_viewer(
    tls: TlsBroker, database_url: str, tmp_path: Path
) -> None:
    port = free_port(HOST)
    agent = EdgeAgent(config=agent_config(tls, tmp_path, STORE_A, port), port_lister=None)
    still = jpeg(90)
    ref = hashlib.sha256(still).hexdigest()

    async def agent_running() -> bool:
        return agent.outbox is not None

    async def spooled() -> bool:
        return agent.spool.stats.spooled == 1

    async with running(agent):
        await eventually(agent_running, what="the agent running")
        await agent.record(
            Reading(
                device_id="cam-aisle-1",
                kind=wire.EventKind.CAMERA_MOTION,
                ts=wire.utc_now(),
                payload={"zone": "aisle-1"},
                attachment=still,
            )
        )
        await eventually(spooled, what="the still in the spool")
        # The hub is away: the still waits in the spool, its file there, nothing lost.
        assert (tmp_path / "agent" / "snapshots" / f"{ref}.jpg").read_bytes() == still
        assert agent.spool.stats.uploaded == 0

        async with running_hub(hub_settings_for(tls, database_url, tmp_path, port)) as hub:
            await enrol(hub, STORE_A, STORE_B)

            async def uploaded() -> bool:
                return agent.spool.stats.uploaded == 1

            await eventually(uploaded, timeout=20, what="the still uploaded once the hub is back")
            assert not (tmp_path / "agent" / "snapshots" / f"{ref}.jpg").exists(), "deleted once the hub had it"

            async def event_stored() -> list[dict[str, Any]]:
                async with hub.runtime.sessions() as session:
                    rows = await session.scalars(
                        select(StoredEvent.payload).where(StoredEvent.kind == wire.EventKind.CAMERA_MOTION)
                    )
                    return list(rows)

            [payload] = await eventually(event_stored, timeout=20, what="the event at the hub")
            assert payload["snapshot_ref"] == ref

            url = f"/api/v1/stores/{STORE_A.store_id}/snapshots/{ref}"
            async with await hub.client_as("ops") as ops:
                fetched = await ops.get(url)
            assert fetched.status_code == 200
            assert fetched.content == still
            assert fetched.headers["content-type"] == "image/jpeg"
            assert fetched.headers["cache-control"] == "no-store"
            for role in ("viewer", "technician"):
                async with await hub.client_as(role) as other:
                    assert (await other.get(url)).status_code == 403, role
            async with await hub.client_as("ops", store_ids=[STORE_B.store_id]) as elsewhere:
                assert (await elsewhere.get(url)).status_code == 403
            async with hub.anonymous() as anonymous:
                assert (await anonymous.get(url)).status_code == 401
            async with await hub.client_as("ops") as ops:
                missing = await ops.get(f"/api/v1/stores/{STORE_A.store_id}/snapshots/{'0' * 64}")
            assert missing.status_code == 404

            async def fetches() -> list[AuditEntry]:
                async with hub.runtime.sessions() as session:
                    found = await session.scalars(select(AuditEntry).where(AuditEntry.action == "snapshot.viewed"))
                    entries = list(found)
                return entries if len(entries) == 2 else []

            served, unknown = sorted(await eventually(fetches, what="the fetches audited"), key=lambda e: e.id)
            assert (served.outcome, served.store_id, served.target) == ("200", "store-a", f"snapshot {ref}")
            assert served.actor.startswith("token:test-ops")
            assert unknown.outcome == "404"


async def test_the_listener_takes_only_its_gateways_jpegs_for_their_own_store(
    tls: TlsBroker, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port(HOST)
    async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
        await enrol(hub, STORE_A, STORE_B)
        still = jpeg(10)
        ref = hashlib.sha256(still).hexdigest()
        async with gateway_client(tls, STORE_B, port) as store_b:
            wrong = await store_b.put(upload_path(STORE_A.store_id, ref), content=still)
        assert wrong.status_code == 403
        assert refused(hub, "wrong_store") == 1
        async with gateway_client(tls, STORE_A, port) as store_a:
            first = await store_a.put(upload_path(STORE_A.store_id, ref), content=still, params={"device_id": "cam-1"})
            again = await store_a.put(upload_path(STORE_A.store_id, ref), content=still)
            assert (first.status_code, again.status_code) == (201, 200), "stored once, then confirmed again"
            large = jpeg(20, size=(1200, 900))
            large = large + b"\x00" * max(0, MAX_BYTES + 1 - len(large))
            too_large = await store_a.put(
                upload_path(STORE_A.store_id, hashlib.sha256(large).hexdigest()), content=large
            )
            text = b"\xff\xd8\xffnot really a jpeg"
            not_jpeg = await store_a.put(upload_path(STORE_A.store_id, hashlib.sha256(text).hexdigest()), content=text)
            plain = b"hello"
            not_image = await store_a.put(
                upload_path(STORE_A.store_id, hashlib.sha256(plain).hexdigest()), content=plain
            )
            mismatch = await store_a.put(upload_path(STORE_A.store_id, "1" * 64), content=jpeg(30))
            other = jpeg(35)
            bad_device = await store_a.put(
                upload_path(STORE_A.store_id, hashlib.sha256(other).hexdigest()),
                content=other,
                params={"device_id": "Cam <script>"},
            )
        assert too_large.status_code == 413
        assert (not_jpeg.status_code, not_image.status_code) == (415, 415)
        assert mismatch.status_code == 422
        assert bad_device.status_code == 422
        assert refused(hub, "bad_parameter") == 1
        assert (refused(hub, "too_large"), refused(hub, "not_jpeg"), refused(hub, "hash_mismatch")) == (1, 2, 1)
        files = sorted(p.name for p in (tmp_path / "stills").rglob("*.jpg"))
        assert files == [f"{ref}.jpg"], "nothing refused reached the disk"
        # The hub's own certificate is no gateway's, and no certificate gets no further than the handshake.
        async with gateway_client(tls, None, port) as nobody:
            with pytest.raises(httpx.HTTPError):
                await nobody.put(upload_path(STORE_A.store_id, ref), content=still)
        async with hub.runtime.sessions() as session:
            await registry.revoke(session, STORE_A.store_id, STORE_A.gateway_id, by="tests", now=wire.utc_now())
            await session.commit()
        async with gateway_client(tls, STORE_A, port) as revoked:
            other = jpeg(40)
            refused_upload = await revoked.put(
                upload_path(STORE_A.store_id, hashlib.sha256(other).hexdigest()), content=other
            )
        assert refused_upload.status_code == 403
        assert refused(hub, "revoked_gateway") == 1


async def test_retention_purges_expired_stills_and_their_files(tls: TlsBroker, sqlite_url: str, tmp_path: Path) -> None:
    port = free_port(HOST)
    async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
        await enrol(hub, STORE_A)
        stills = [jpeg(shade) for shade in (50, 60)]
        async with gateway_client(tls, STORE_A, port) as store_a:
            for still in stills:
                answer = await store_a.put(upload_path("store-a", hashlib.sha256(still).hexdigest()), content=still)
                assert answer.status_code == 201
        service = hub.runtime.snapshots
        assert service is not None
        assert len(list((tmp_path / "stills").rglob("*.jpg"))) == 2
        async with hub.runtime.sessions() as session:
            assert await purge_expired(session, service.files, now=wire.utc_now()) == 0, "none expired yet"
            later = wire.utc_now() + timedelta(days=31)
            assert await purge_expired(session, service.files, now=later) == 2
        assert list((tmp_path / "stills").rglob("*.jpg")) == []
        async with await hub.client_as("admin") as admin:
            gone = await admin.get(f"/api/v1/stores/store-a/snapshots/{hashlib.sha256(stills[0]).hexdigest()}")
        assert gone.status_code == 404


STORES_CSV = "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun\nstore-a,Corner,UTC,GBP,,,,,,,\n"
SKUS_CSV = "sku_id,gtin,name,unit_weight_g,pack_size,price,currency\nA,,Razor blades,50,1,9.99,GBP\n"
PLANOGRAM_CSV = "store_id,shelf_id,slot,sku_id,capacity,min_quantity,camera_id\nstore-a,shelf-7,3,A,20,2,cam-aisle\n"


async def test_a_shelf_sweep_alert_carries_the_still_of_the_camera_that_watches_the_shelf(
    tls: TlsBroker, sqlite_url: str, tmp_path: Path
) -> None:
    """The whole chain: picks on a shelf → the agent asks the shelf's camera for a still → the still reaches the
    hub over the listener and its event over MQTT → the sweep alert names that still (not the door camera's,
    taken nearer in time) → ops fetch it, a viewer is refused."""
    port = free_port(HOST)
    doubles = {
        "shelf-7": DriverDouble("shelf-7"),
        "cam-aisle": DriverDouble("cam-aisle", CameraSettings(watches_shelves=("shelf-7",))),
        "cam-door": DriverDouble("cam-door", CameraSettings(watches_shelves=())),
    }
    config = agent_config(tls, tmp_path, STORE_A, port).model_copy(
        update={
            "devices": [
                SimulatedSequenceConfig(
                    driver="simulated-sequence", device_id=device_id, kind="test.placeholder", count=1, rate_per_s=1
                )
                for device_id in doubles
            ]
        }
    )
    agent = EdgeAgent(config=config, driver_factory=lambda device: doubles[device.device_id], port_lister=None)
    async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
        await enrol(hub, STORE_A)
        for kind, text in (("stores", STORES_CSV), ("skus", SKUS_CSV), ("planogram", PLANOGRAM_CSV)):
            answer = await hub.client.post(
                f"/api/v1/catalog/{kind}/import", content=text, headers={"Content-Type": "text/csv"}
            )
            assert answer.status_code == 200, answer.text

        async def devices_open() -> bool:
            return len(agent.devices.supervisors) == 3 and all(s.driver is not None for s in agent.devices.supervisors)

        async def sweep_alert_with_still() -> dict[str, Any] | None:
            listed = await hub.client.get("/api/v1/alerts", params={"store_id": "store-a"})
            sweeps = [a for a in listed.json()["items"] if a["rule_id"] == "shelf-sweep"]
            return sweeps[0] if sweeps and sweeps[0]["snapshot_ref"] else None

        async with running(agent):
            await eventually(devices_open, what="the devices open")
            now = wire.utc_now()
            door_still = jpeg(200)
            doubles["cam-door"].queue.put_nowait(
                Reading(
                    device_id="cam-door",
                    kind=wire.EventKind.CAMERA_MOTION,
                    ts=now,
                    payload={"zone": "door"},
                    attachment=door_still,
                )
            )
            doubles["shelf-7"].queue.put_nowait(
                Reading(
                    device_id="shelf-7",
                    kind=wire.EventKind.SHELF_PICK,
                    ts=now,
                    payload={"slot": 3, "sku": "A", "delta": -6, "count": 4, "weight_g": 200.0},
                )
            )
            alert = await eventually(sweep_alert_with_still, timeout=20, what="the sweep alert with its still")
            assert alert is not None

            async def both_uploaded() -> bool:
                return agent.spool.stats.uploaded == 2

            await eventually(both_uploaded, timeout=20, what="both stills at the hub")
        [request] = doubles["cam-aisle"].commands
        assert request.args == {"reason": "shelf_pick", "shelf_id": "shelf-7", "slot": 3}
        assert alert["subject"] == "slot:shelf-7/3"
        assert alert["snapshot_ref"] != hashlib.sha256(door_still).hexdigest()
        url = f"/api/v1/stores/store-a/snapshots/{alert['snapshot_ref']}"
        async with await hub.client_as("ops") as ops:
            fetched = await ops.get(url)
        assert fetched.status_code == 200
        assert fetched.content == camera_jpeg(40 + 10 * len(doubles["cam-aisle"].commands)), "the aisle camera's"
        async with await hub.client_as("viewer") as viewer:
            assert (await viewer.get(url)).status_code == 403


async def test_the_uploader_drops_what_the_hub_refuses_for_good_and_keeps_what_it_may_take_later(
    tls: TlsBroker, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port(HOST)
    spool = SnapshotSpool(directory=tmp_path / "spool", quota_bytes=10 * MAX_BYTES).open()
    good, oversized = jpeg(70), jpeg(80, size=(1600, 1200)) + b"\x00" * MAX_BYTES
    refs = [spool.store(good, device_id="cam-1"), spool.store(oversized, device_id="cam-1")]
    bundle = tls.bundles[STORE_A]
    context = client_ssl_context(
        ca_file=tls.ca.ca_cert_path, cert_file=bundle / "gateway.crt", key_file=bundle / "gateway.key"
    )

    def uploader_for(store_id: str) -> SnapshotUploader:
        return SnapshotUploader(
            spool=spool,
            store_id=store_id,
            hub_url=f"https://{HOST}:{port}",
            ssl_context=context,
            clock=SystemClock(),
            rng=random.Random(0),
        )

    async with running_hub(hub_settings_for(tls, sqlite_url, tmp_path, port)) as hub:
        await enrol(hub, STORE_A)
        async with httpx.AsyncClient(verify=context, timeout=10) as client:
            # A gateway configured for the wrong store: 403, which a fixed config may cure: kept, and said so.
            with pytest.raises(UploadRefusedError, match="403"):
                await uploader_for("store-b").upload_all(client)
            assert [p.ref for p in spool.pending()] == refs
            assert await uploader_for("store-a").upload_all(client) == 1
    assert spool.pending() == []
    assert (spool.stats.uploaded, spool.stats.refused) == (1, 1), "the oversized still is dropped, not retried"
    assert not list((tmp_path / "spool").glob("*.jpg"))
