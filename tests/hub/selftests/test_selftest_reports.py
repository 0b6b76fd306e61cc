"""Self-test reports: a gateway sends its report with its own certificate to the hub's gateway listener; operators
read them per gateway, newest first, within their scope; the listener refuses another gateway's report and junk.

Real parts: Mosquitto with TLS and client certificates, the hub's gateway listener on uvicorn over TLS on loopback,
the gateway's own uploader (provisioning.selftest.upload_pending), SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from edge_agent.config import AgentConfig
from hub.auth.models import AuditEntry
from launcher.broker import free_port
from provisioning.selftest import pending_dir, upload_pending, write_report
from storegate import wire
from tests.hub.conftest import running_hub
from tests.hub.snapshots.test_gateway_snapshots import enrol, gateway_client, hub_settings_for
from tests.tls_broker import HOST, STORE_A, STORE_B, TlsBroker, running_tls_broker

PATH = "/api/v1/gateway/selftests"


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TlsBroker]:
    """The hub's CA with store-a/gw-1 and store-b/gw-1 issued, and Mosquitto on TLS with client certificates."""
    with running_tls_broker(tmp_path) as broker:
        yield broker


def report(store_id: str, gateway_id: str, *, failed: bool, minute: int) -> wire.SelftestReport:
    start = wire.utc_now().replace(microsecond=0) + timedelta(minutes=minute)
    outcome = wire.SelftestOutcome.FAILED if failed else wire.SelftestOutcome.PASSED
    return wire.SelftestReport(
        store_id=store_id,
        gateway_id=gateway_id,
        started_at=start,
        finished_at=start + timedelta(seconds=40),
        results=[
            wire.SelftestDeviceResult(
                device_id="till-1", profile="zebra-ds-cdc", kind="barcode", outcome=outcome, reason="in words"
            )
        ],
    )


def store_a_config(tls: TlsBroker, tmp_path: Path, port: int) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "store_id": STORE_A.store_id,
            "gateway_id": STORE_A.gateway_id,
            "mqtt": tls.gateway_settings(STORE_A).model_dump(),
            "outbox": {"path": tmp_path / "agent" / "outbox.sqlite3"},
            "snapshots": {"hub_url": f"https://{HOST}:{port}"},
        }
    )


async def test_a_gateway_sends_its_reports_and_operators_read_them_newest_first(
    tls: TlsBroker, database_url: str, tmp_path: Path
) -> None:
    port = free_port(HOST)
    gateway_home = tmp_path / "gateway"
    config = store_a_config(tls, tmp_path, port)
    write_report(report(STORE_A.store_id, STORE_A.gateway_id, failed=True, minute=0), gateway_home)
    # The hub is not up yet: the report waits.
    said = await asyncio.to_thread(upload_pending, config, gateway_home, timeout_s=2)
    assert len(said) == 1
    assert "not sent, kept for the next run" in said[0]
    async with running_hub(hub_settings_for(tls, database_url, tmp_path, port)) as hub:
        await enrol(hub, STORE_A, STORE_B)
        write_report(report(STORE_A.store_id, STORE_A.gateway_id, failed=False, minute=5), gateway_home)
        said = await asyncio.to_thread(upload_pending, config, gateway_home)
        assert [line.split(": ", 1)[1] for line in said] == ["sent to the hub", "sent to the hub"]
        assert list(pending_dir(gateway_home).iterdir()) == []
        assert len(list((gateway_home / "selftests" / "sent").iterdir())) == 2
        async with hub.runtime.sessions() as session:
            audited = (
                await session.execute(
                    select(AuditEntry.actor, AuditEntry.detail).where(AuditEntry.action == "selftest.received")
                )
            ).all()
        assert sorted(audited) == [
            ("gateway:store-a/gw-1", "failed: 1 of 1 devices failed"),
            ("gateway:store-a/gw-1", "passed: 0 of 1 devices failed"),
        ]

        async with gateway_client(tls, STORE_B, port) as store_b:
            forged = await store_b.post(PATH, content=wire.encode(report("store-a", "gw-1", failed=False, minute=9)))
            junk = await store_b.post(PATH, content=b'{"store_id": "store-b"}')
            too_large = await store_b.post(PATH, content=b" " * (512 * 1024 + 1))
        assert (forged.status_code, junk.status_code, too_large.status_code) == (403, 422, 413)

        listed = await hub.client.get("/api/v1/stores/store-a/gateways/gw-1/selftests")
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert [(item["passed"], item["failed"]) for item in items] == [(True, 0), (False, 1)]  # newest first
        assert items[1]["report"]["results"][0]["reason"] == "in words"
        async with await hub.client_as("viewer", store_ids=["store-b"]) as other_store:
            refused = await other_store.get("/api/v1/stores/store-a/gateways/gw-1/selftests")
        assert refused.status_code == 403
        async with await hub.client_as("viewer", store_ids=["store-a"]) as own_store:
            mine = await own_store.get("/api/v1/stores/store-a/gateways/gw-1/selftests", params={"limit": 1})
        assert [item["passed"] for item in mine.json()["items"]] == [True]
