"""Operators send a gateway's devices commands through the hub: queued, published, answered, read back.

A running hub (real Mosquitto, SQLite and PostgreSQL) takes the POST; a plain paho client plays the gateway:
it receives the command on its commands topic and answers on command_results, which the hub's consumer
records. Roles, store scope, validation, the gateway's enrolment and the audit entry are checked through HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import func, select

from hub.db.models import OutgoingCommand
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import PlainGateway, RunningHub, running_hub

STORE: Final = "store-0001"
OTHER_STORE: Final = "store-0002"
GATEWAY: Final = "gw-1"
PRINTER: Final = "printer-1"
COMMANDS: Final = f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/devices/{PRINTER}/commands"
ACTION: Final = "POST /api/v1/stores/{store_id}/gateways/{gateway_id}/devices/{device_id}/commands"
TEST_PAGE: Final = {"name": "print", "args": {"document": "test_page"}}
RECEIPT: Final = {
    "name": "print",
    "args": {
        "document": "receipt",
        "title": "High Street",
        "lines": ["Order 1042"],
        "items": [{"name": "Biscuits", "quantity": 2, "amount": "3.00"}],
        "totals": [{"label": "TOTAL", "amount": "3.00"}],
        "footer": ["Thank you"],
    },
}


@pytest.fixture
def hub_settings(database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    """A hub as deployed (unknown gateways refused) on SQLite or PostgreSQL."""
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
    )


@pytest.fixture
async def hub(hub_settings: HubSettings) -> AsyncIterator[RunningHub]:
    """A running hub with gw-1 of store-0001 enrolled by an admin."""
    async with running_hub(hub_settings) as running:
        assert await running.runtime.link.wait_connected(5.0), "the hub did not connect to the test broker"
        enrolled = await running.client.post(f"/api/v1/stores/{STORE}/gateways", json={"gateway_id": GATEWAY})
        assert enrolled.status_code == 201, enrolled.text
        yield running


async def command_rows(hub: RunningHub) -> list[OutgoingCommand]:
    async with hub.runtime.sessions() as session:
        return list((await session.scalars(select(OutgoingCommand))).all())


async def audit_of(hub: RunningHub, **params: str) -> list[dict[str, Any]]:
    response = await hub.client.get("/api/v1/audit", params={"action": ACTION, **params})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["items"]
    return entries


async def test_a_technicians_test_page_is_sent_to_the_gateway_and_its_result_read_back(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    commands_topic = wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS)
    gateway_client.subscribe(commands_topic)
    async with await hub.client_as("technician", store_ids=[STORE]) as technician:
        queued = await technician.post(COMMANDS, json=TEST_PAGE)
        assert queued.status_code == 202, queued.text
        body = queued.json()
        command_id = body["command_id"]
        assert body["status"] == "pending"
        assert queued.headers["location"] == body["status_url"] == f"/api/v1/commands/{command_id}"

        # The hub publishes it on the gateway's commands topic, as the gateway's agent reads it.
        async def delivered() -> list[bytes]:
            return gateway_client.received.on(commands_topic)

        (payload,) = await eventually(delivered, what="the command on the gateway's topic")
        command = wire.decode(wire.Command, payload)
        assert (str(command.command_id), command.store_id, command.gateway_id, command.device_id) == (
            command_id,
            STORE,
            GATEWAY,
            PRINTER,
        )
        assert (command.name, command.args) == ("print", {"document": "test_page"})
        assert command.expires_at is not None
        assert command.expires_at - command.issued_at == timedelta(minutes=15)

        async def marked_sent() -> bool:
            return [row.status for row in await command_rows(hub)] == ["sent"]

        await eventually(marked_sent, what="the command marked sent")  # marked after the publish

        # The gateway answers; the consumer records it; the technician reads it.
        printed = "test_page for epson-tm-t20iii printed (1830 bytes)"
        result = wire.CommandResult(
            command_id=command.command_id,
            store_id=STORE,
            gateway_id=GATEWAY,
            status="done",
            detail=printed,
            ts=wire.utc_now(),
        )
        gateway_client.publish(wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS), wire.encode(result))

        async def done() -> dict[str, Any] | None:
            read = await technician.get(body["status_url"])
            assert read.status_code == 200, read.text
            shown: dict[str, Any] = read.json()
            return shown if shown["status"] == "done" else None

        shown = await eventually(done, what="the command done")
        assert shown is not None
        assert shown["result_detail"] == printed
        assert (shown["device_id"], shown["name"], shown["document"]) == (PRINTER, "print", "test_page")

    (entry,) = await audit_of(hub, outcome="202")
    assert entry["actor"].startswith("token:test-technician")
    assert entry["store_id"] == STORE
    assert entry["target"] == f"command:{command_id}"
    assert entry["after"]["command"] == "print:test_page"
    assert entry["after"]["device"] == f"device:{STORE}/{GATEWAY}/{PRINTER}"


async def test_ops_send_receipts_and_technicians_the_rest_each_refused_the_other(hub: RunningHub) -> None:
    async with (
        await hub.client_as("ops", store_ids=[STORE]) as ops,
        await hub.client_as("technician") as technician,
        await hub.client_as("viewer") as viewer,
    ):
        receipt = await ops.post(COMMANDS, json=RECEIPT)
        assert receipt.status_code == 202, receipt.text

        refused = await technician.post(COMMANDS, json=RECEIPT)
        assert refused.status_code == 403
        assert "'technician' may not send print:receipt (it needs 'operate')" in refused.json()["detail"]
        test_page = await ops.post(COMMANDS, json=TEST_PAGE)
        assert test_page.status_code == 403
        assert "it needs 'maintain'" in test_page.json()["detail"]
        for body in (TEST_PAGE, RECEIPT, {"name": "ping"}):
            seen = await viewer.post(COMMANDS, json=body)
            assert seen.status_code == 403
            assert "needs 'command'" in seen.json()["detail"]
        camera = COMMANDS.replace(PRINTER, "camera-1")
        for body in ({"name": "snapshot"}, {"name": "status"}, {"name": "ping"}):
            assert (await technician.post(camera, json=body)).status_code == 202

    rows = await command_rows(hub)
    assert sorted((r.name, r.device_id) for r in rows) == [
        ("ping", "camera-1"),
        ("print", PRINTER),
        ("snapshot", "camera-1"),
        ("status", "camera-1"),
    ]
    (stored_receipt,) = [r for r in rows if r.name == "print"]
    # Amounts travel as decimal strings: the driver reads them exactly.
    assert stored_receipt.args["items"] == [{"name": "Biscuits", "quantity": "2", "amount": "3.00"}]
    assert stored_receipt.expires_at is not None
    assert stored_receipt.expires_at - stored_receipt.issued_at == timedelta(hours=1)
    (snapshot,) = [r for r in rows if r.name == "snapshot"]
    assert snapshot.args == {"reason": "requested"}
    # Every refusal is in the audit log with who and where.
    refusals = await audit_of(hub, outcome="403")
    assert len(refusals) == 5
    # and counted with the gate's refusals: the viewer's three at the gate, the two others by the handler
    assert hub.runtime.metrics.access_refused.labels(status="403", cause="role")._value.get() == 5
    assert {e["store_id"] for e in refusals} == {STORE}


async def test_a_technician_of_another_store_can_neither_send_nor_read(hub: RunningHub) -> None:
    queued = await hub.client.post(COMMANDS, json=TEST_PAGE)
    assert queued.status_code == 202
    async with await hub.client_as("technician", store_ids=[OTHER_STORE]) as elsewhere:
        refused = await elsewhere.post(COMMANDS, json=TEST_PAGE)
        assert refused.status_code == 403
        assert STORE in refused.json()["detail"]
        read = await elsewhere.get(queued.json()["status_url"])
        assert read.status_code == 403
        assert (await elsewhere.get(f"/api/v1/commands/{uuid.uuid4()}")).status_code == 404
    assert len(await command_rows(hub)) == 1


BAD_BODIES: Final = {
    "unknown command": {"name": "reboot"},
    "unknown document": {"name": "print", "args": {"document": "pick_list"}},
    "print without a document": {"name": "print", "args": {}},
    "an argument no command takes": {"name": "ping", "args": {"delay": 5}},
    "a snapshot for another reason": {"name": "snapshot", "args": {"reason": "motion"}},
    "ESC in a receipt line": {"name": "print", "args": {"document": "receipt", "lines": ["open \x1bp drawer"]}},
    "a newline in a title": {"name": "print", "args": {"document": "receipt", "title": "A\nB"}},
    "C1 control in an item": {
        "name": "print",
        "args": {"document": "receipt", "items": [{"name": "x\x9by", "amount": "1"}]},
    },
    "a line too long": {"name": "print", "args": {"document": "receipt", "lines": ["x" * 201]}},
    "too many lines": {"name": "print", "args": {"document": "receipt", "lines": ["x"] * 201}},
    "too many items": {
        "name": "print",
        "args": {"document": "receipt", "items": [{"name": "x", "amount": "1"}] * 501},
    },
    "an amount past a billion": {
        "name": "print",
        "args": {"document": "receipt", "totals": [{"label": "TOTAL", "amount": "1000000001"}]},
    },
    "a blank receipt": {"name": "print", "args": {"document": "receipt", "lines": [""]}},
    "an expiry too short": {**TEST_PAGE, "expires_in_s": 1},
    "an expiry past a day": {**TEST_PAGE, "expires_in_s": 86401},
}


async def test_bad_commands_are_refused_in_words_and_nothing_is_queued(hub: RunningHub) -> None:
    for why, body in BAD_BODIES.items():
        response = await hub.client.post(COMMANDS, json=body)
        assert response.status_code == 422, f"{why}: {response.status_code} {response.text[:300]}"
        assert response.json()["detail"], why
    control = await hub.client.post(COMMANDS, json=BAD_BODIES["ESC in a receipt line"])
    assert "control character U+001B" in control.text
    bad_device = await hub.client.post(COMMANDS.replace(PRINTER, "-printer"), json=TEST_PAGE)
    assert bad_device.status_code == 422
    assert await command_rows(hub) == []


async def test_an_unknown_gateway_is_404_and_a_revoked_one_409(hub: RunningHub) -> None:
    unknown = await hub.client.post(COMMANDS.replace(GATEWAY, "gw-9"), json=TEST_PAGE)
    assert unknown.status_code == 404
    assert "store-0001 has no gateway gw-9" in unknown.json()["detail"]
    revoked = await hub.client.post(f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/revoke")
    assert revoked.status_code == 200, revoked.text
    refused = await hub.client.post(COMMANDS, json=TEST_PAGE)
    assert refused.status_code == 409
    assert "revoked" in refused.json()["detail"]
    async with hub.runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutgoingCommand)) == 0


async def test_the_caller_bounds_how_long_a_command_may_wait(hub: RunningHub) -> None:
    queued = await hub.client.post(COMMANDS, json={**TEST_PAGE, "expires_in_s": 60})
    assert queued.status_code == 202, queued.text
    (row,) = await command_rows(hub)
    assert row.expires_at is not None
    assert row.expires_at - row.issued_at == timedelta(seconds=60)
    shown = (await hub.client.get(queued.json()["status_url"])).json()
    assert shown["expires_at"] == queued.json()["expires_at"]


async def test_nobody_anonymous_sends_a_command(hub: RunningHub) -> None:
    async with hub.anonymous() as nobody:
        refused = await nobody.post(COMMANDS, json=TEST_PAGE)
        assert refused.status_code == 401
    assert await command_rows(hub) == []
