"""Config pushes and the gateway's own commands through the hub's API (SQLite and PostgreSQL, real Mosquitto).

A plain paho client plays the gateway: it receives ``config.apply`` and answers as the agent does (``accepted``,
then ``done`` or ``failed`` "rolled back: ..."), so the hub's side is checked without an agent; the agent's side,
and the two together, are tests/edge_agent/test_remote_config.py and tests/end_to_end/test_remote_config_push.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final, Literal

import pytest
from sqlalchemy import select

from hub.commands.status import EXPIRED_UNSENT, set_command_status
from hub.db.models import GatewayConfig, OutgoingCommand
from hub.fleet.configs import MAX_CONFIG_BYTES, push_problems
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import PlainGateway, RunningHub, running_hub

STORE: Final = "store-0001"
OTHER_STORE: Final = "store-0002"
GATEWAY: Final = "gw-1"
CONFIG: Final = f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/config"
GATEWAY_COMMANDS: Final = f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/commands"
DEVICE_COMMANDS: Final = f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/devices/door-1/commands"
TOML: Final = f'store_id = "{STORE}"\ngateway_id = "{GATEWAY}"\n\n[outbox]\npath = "outbox.sqlite"\n'


def test_the_hub_refuses_what_it_can_tell_is_wrong() -> None:
    """The pure checks: the gateway's ids, an inline password, TOML at all, the size."""
    assert push_problems(TOML, store_id=STORE, gateway_id=GATEWAY) == []
    moved = TOML.replace(GATEWAY, "gw-2")
    assert push_problems(moved, store_id=STORE, gateway_id=GATEWAY) == [
        "gateway_id is 'gw-2': a push may not move a gateway, it must stay 'gw-1'"
    ]
    assert "store_id is missing" in push_problems('gateway_id = "gw-1"', store_id=STORE, gateway_id=GATEWAY)[0]
    inline = TOML + '[mqtt]\nhost = "hub"\npassword = "hunter2"\n'
    assert "mqtt.password is written inline" in push_problems(inline, store_id=STORE, gateway_id=GATEWAY)[0]
    assert push_problems("[devices]\n[devices]\n", store_id=STORE, gateway_id=GATEWAY)[0].startswith("not TOML")
    big = TOML + "# " + "x" * MAX_CONFIG_BYTES + "\n"
    assert "more than 65536" in push_problems(big, store_id=STORE, gateway_id=GATEWAY)[0]


@pytest.fixture
def hub_settings(database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
    )


@pytest.fixture
async def hub(hub_settings: HubSettings) -> AsyncIterator[RunningHub]:
    """A running hub with gw-1 of store-0001 enrolled."""
    async with running_hub(hub_settings) as running:
        assert await running.runtime.link.wait_connected(5.0)
        enrolled = await running.client.post(f"/api/v1/stores/{STORE}/gateways", json={"gateway_id": GATEWAY})
        assert enrolled.status_code == 201, enrolled.text
        yield running


async def rows(hub: RunningHub) -> list[GatewayConfig]:
    async with hub.runtime.sessions() as session:
        return list((await session.scalars(select(GatewayConfig).order_by(GatewayConfig.version))).all())


async def audit(hub: RunningHub, **params: str) -> list[dict[str, Any]]:
    response = await hub.client.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["items"]
    return entries


async def test_a_push_goes_out_and_each_answer_of_the_gateway_is_recorded_and_audited(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    commands_topic = wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS)
    results_topic = wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS)
    gateway_client.subscribe(commands_topic)

    async def answer(command: wire.Command, status: Literal["accepted", "done", "failed"], detail: str) -> None:
        result = wire.CommandResult(
            command_id=command.command_id,
            store_id=STORE,
            gateway_id=GATEWAY,
            status=status,
            detail=detail,
            ts=wire.utc_now(),
        )
        gateway_client.publish(results_topic, wire.encode(result))

    async def status_of(version: int, wanted: str) -> bool:
        return any(row.version == version and row.status == wanted for row in await rows(hub))

    async with await hub.client_as("technician", store_ids=[STORE]) as technician:
        pushed = await technician.put(CONFIG, json={"toml": TOML, "probation_s": 30})
        assert pushed.status_code == 202, pushed.text
        first = pushed.json()
        assert (first["version"], first["status"], first["probation_s"]) == (1, "pending", 30)
        # One at a time: the next waits for this one's outcome.
        waiting = await technician.put(CONFIG, json={"toml": TOML})
        assert waiting.status_code == 409
        assert "version 1 of store-0001/gw-1 is still pending" in waiting.json()["detail"]

        (payload,) = await eventually(lambda: _on(gateway_client, commands_topic), what="config.apply sent")
        command = wire.decode(wire.Command, payload)
        assert (command.name, command.device_id) == ("config.apply", None)
        assert command.args == {"version": 1, "toml": TOML, "probation_s": 30.0}

        await answer(command, "accepted", "version 1 written; restarting with it, then 30 s of probation")
        await eventually(lambda: status_of(1, "accepted"), what="version 1 on probation")
        why = "rolled back: after 30 s of probation of version 1: the broker at hub:1 was not reached"
        await answer(command, "failed", why)
        await eventually(lambda: status_of(1, "rolled_back"), what="version 1 rolled back")
        # A late accepted (redelivered) does not undo the outcome.
        await answer(command, "accepted", "again")

        second = await technician.put(CONFIG, json={"toml": TOML + "# v2\n"})
        assert second.status_code == 202, second.text
        assert second.json()["version"] == 2
        (_, payload2) = await eventually(lambda: _on(gateway_client, commands_topic, count=2), what="version 2 sent")
        await answer(wire.decode(wire.Command, payload2), "done", "applied version 2")
        await eventually(lambda: status_of(2, "applied"), what="version 2 applied")

        # A push that never reaches its gateway expires (as the command sender marks it): the hub's own entry.
        third = await technician.put(CONFIG, json={"toml": TOML + "# v3\n"})
        assert third.status_code == 202, third.text
        async with hub.runtime.sessions() as session, session.begin():
            await set_command_status(
                session, [third.json()["command_id"]], "expired", detail=EXPIRED_UNSENT, at=wire.utc_now()
            )
        shown = (await technician.get(CONFIG)).json()
    assert shown["history"][0]["status"] == "expired"
    shown["history"].pop(0)
    assert shown["current"]["version"] == 2
    assert shown["current"]["toml"] == TOML + "# v2\n"
    assert [(v["version"], v["status"]) for v in shown["history"]] == [(2, "applied"), (1, "rolled_back")]
    assert shown["history"][1]["detail"] == why
    assert shown["history"][1]["pushed_by"].startswith("token:test-technician")

    # The operator's pushes are entries of their requests; the gateway's outcomes system entries of their own.
    pushes = await audit(hub, action="PUT /api/v1/stores/{store_id}/gateways/{gateway_id}/config", outcome="202")
    assert sorted(e["target"] for e in pushes) == [
        f"gateway-config:{STORE}/{GATEWAY}/v1",
        f"gateway-config:{STORE}/{GATEWAY}/v2",
        f"gateway-config:{STORE}/{GATEWAY}/v3",
    ]
    assert all("toml" not in (e["after"] or {}) for e in pushes)
    rolled_back = await audit(hub, action="config.rolled_back")
    assert [(e["actor"], e["actor_kind"], e["detail"]) for e in rolled_back] == [
        (f"gateway:{STORE}/{GATEWAY}", "gateway", why)
    ]
    (expired,) = await audit(hub, action="config.expired")
    assert (expired["actor"], expired["actor_kind"], expired["detail"]) == ("hub", "system", EXPIRED_UNSENT)
    assert [e["target"] for e in await audit(hub, action="config.applied")] == [f"gateway-config:{STORE}/{GATEWAY}/v2"]


def _on(gateway: PlainGateway, topic: str, *, count: int = 1) -> Any:
    async def probe() -> list[bytes] | None:
        got = gateway.received.on(topic)
        return got if len(got) >= count else None

    return probe()


FORGED: Final = {
    "another gateway's ids": TOML.replace(GATEWAY, "gw-2"),
    "another store's ids": TOML.replace(STORE, OTHER_STORE),
    "an inline password": TOML + '[mqtt]\nhost = "hub"\npassword = "hunter2"\n',
    "not TOML": "store_id = \n",
}


async def test_bad_pushes_are_refused_and_gateway_commands_queued(hub: RunningHub) -> None:
    """Forged, oversized and unauthorised pushes queue nothing; resend, ping and restart are queued with their args."""
    for why, text in FORGED.items():
        refused = await hub.client.put(CONFIG, json={"toml": text})
        assert refused.status_code == 422, f"{why}: {refused.text[:300]}"
        assert "hunter2" not in refused.text, "the refusal must not echo a password"
    moved = await hub.client.put(CONFIG, json={"toml": FORGED["another gateway's ids"]})
    assert "a push may not move a gateway" in moved.json()["message"]
    oversized = await hub.client.put(CONFIG, json={"toml": "#" * (MAX_CONFIG_BYTES + 1)})
    assert oversized.status_code == 422
    for body in ({"toml": TOML, "probation_s": 0}, {"toml": TOML, "probation_s": 901}, {"toml": TOML, "x": 1}):
        assert (await hub.client.put(CONFIG, json=body)).status_code == 422, body
    unknown = {"toml": TOML.replace(GATEWAY, "gw-9")}
    assert (await hub.client.put(CONFIG.replace(GATEWAY, "gw-9"), json=unknown)).status_code == 404

    async with (
        await hub.client_as("viewer") as viewer,
        await hub.client_as("ops", store_ids=[STORE]) as ops,
        await hub.client_as("technician", store_ids=[OTHER_STORE]) as elsewhere,
    ):
        for who in (viewer, ops, elsewhere):
            assert (await who.put(CONFIG, json={"toml": TOML})).status_code == 403
            assert (
                await who.post(GATEWAY_COMMANDS, json={"name": "resend", "args": {"from_seq": 1}})
            ).status_code == 403
        assert (await viewer.get(CONFIG)).status_code == 200  # reading is every role's (no secret is in it)
        assert (await elsewhere.get(CONFIG)).status_code == 403
    async with hub.anonymous() as nobody:
        assert (await nobody.put(CONFIG, json={"toml": TOML})).status_code == 401
    assert await rows(hub) == []
    async with hub.runtime.sessions() as session:
        assert list((await session.scalars(select(OutgoingCommand))).all()) == []
    refusals = await audit(hub, outcome="403")
    assert len(refusals) == 6
    assert {e["store_id"] for e in refusals} == {STORE}

    # On the same hub (one start saved): the gateway's commands, and a device's restart, queued as asked.
    async with await hub.client_as("technician", store_ids=[STORE]) as technician:
        resend = await technician.post(GATEWAY_COMMANDS, json={"name": "resend", "args": {"from_seq": 42}})
        assert resend.status_code == 202, resend.text
        ping = await technician.post(GATEWAY_COMMANDS, json={"name": "ping"})
        assert ping.status_code == 202, ping.text
        restart = await technician.post(DEVICE_COMMANDS, json={"name": "restart"})
        assert restart.status_code == 202, restart.text
        for bad in (
            {"name": "resend", "args": {"from_seq": 0}},
            {"name": "resend", "args": {"from_seq": 2**63}},
            {"name": "resend"},
            {"name": "config.apply", "args": {"version": 1, "toml": TOML}},  # only through PUT .../config
            {"name": "restart"},  # a device's, not the gateway's
        ):
            assert (await technician.post(GATEWAY_COMMANDS, json=bad)).status_code == 422, bad
        assert (
            await technician.post(DEVICE_COMMANDS, json={"name": "restart", "args": {"hard": True}})
        ).status_code == 422
    async with hub.runtime.sessions() as session:
        stored = {row.name: row for row in (await session.scalars(select(OutgoingCommand))).all()}
    assert set(stored) == {"resend", "ping", "restart"}
    assert (stored["resend"].device_id, stored["resend"].args) == (None, {"from_seq": 42})
    assert (stored["ping"].device_id, stored["restart"].device_id) == (None, "door-1")
    entries = await audit(hub, action="POST /api/v1/stores/{store_id}/gateways/{gateway_id}/commands", outcome="202")
    (entry,) = [e for e in entries if e["target"] == f"command:{resend.json()['command_id']}"]
    assert entry["after"]["command"] == "resend"
    assert entry["after"]["gateway"] == f"gateway:{STORE}/{GATEWAY}"
