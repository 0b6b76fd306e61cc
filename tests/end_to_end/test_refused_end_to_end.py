"""A real agent whose outbox holds one event the hub cannot take: the rest is stored, the stream does not stall.

The agent first runs without a broker, so its readings stay in its outbox; one of them is then made invalid on
disk (with a CRC that matches, as if the agent itself had written it: a bug of a driver, say). With the hub up
(the gateway enrolled, unknown gateways refused as in production), the agent sends everything: the hub stores
the valid events, sets the bad one aside, and its Ack moves past it, so the agent empties its outbox.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import zlib
from pathlib import Path

import pytest

from hub.fleet.commands import add_gateway
from launcher.broker import LocalBroker, free_port, start_mosquitto
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until
from tests.procs import agent_service, hub_rows, hub_service

COUNT = 40
BAD_SEQ = 7


def outbox_depth(outbox: Path) -> int | None:
    """Events in the agent's outbox, from its status file (the agent holds the outbox locked while it runs)."""
    try:
        return int(json.loads(outbox.with_name(outbox.name + ".status.json").read_text())["outbox_depth"])
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return None


def break_event(outbox: Path, seq: int) -> None:
    """Make the stored event at ``seq`` fail the wire contract, keeping the outbox consistent (size, CRC, bytes)."""
    connection = sqlite3.connect(outbox, timeout=10)
    try:
        (body,) = connection.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
        event = json.loads(body)
        # Not the unit of a temperature: the wire contract refuses it.
        event["payload"] = {"quantity": "temperature", "value": 4.2, "unit": "furlongs"}
        new_body = json.dumps(event, separators=(",", ":")).encode()
        grown = len(new_body) - len(body)
        connection.execute(
            "UPDATE events SET body = ?, crc = ?, size = size + ? WHERE seq = ?",
            (new_body, zlib.crc32(new_body), grown, seq),
        )
        connection.execute("UPDATE state SET bytes = bytes + ? WHERE id = 1", (grown,))
        connection.commit()
    finally:
        connection.close()


@pytest.mark.timeout(120)
def test_one_bad_event_in_a_real_outbox_is_set_aside_and_the_outbox_empties(tmp_path: Path) -> None:
    devices = [{"device_id": "fridge-1", "driver": "simulated-sequence", "count": COUNT, "rate_per_s": 1000.0}]
    outbox = tmp_path / "agent" / "outbox.sqlite3"
    nobody = MqttSettings(port=free_port(), reconnect_min_s=0.2, reconnect_max_s=1.0)
    offline = agent_service(tmp_path / "agent", nobody, devices=devices)
    offline.start()
    try:
        wait_until(lambda: (outbox_depth(outbox) or 0) >= COUNT, timeout=30, what=f"{COUNT} readings in the outbox")
    finally:
        offline.stop()
    break_event(outbox, BAD_SEQ)

    broker: LocalBroker = start_mosquitto(tmp_path / "broker", persistence=False)
    mqtt = MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=1.0)
    hub = hub_service(tmp_path / "hub", mqtt, http_port=free_port(), accept_unknown_gateways=False)
    database = tmp_path / "hub" / "hub.sqlite3"
    asyncio.run(add_gateway(f"sqlite+aiosqlite:///{database}", "store-0001/gw-1", by="test-operator"))
    agent = agent_service(tmp_path / "agent", mqtt, devices=devices)  # the same outbox, now with a broker
    try:
        hub.start()
        agent.start()
        try:
            wait_until(
                lambda: len(hub_rows(database, "SELECT seq FROM events")) == COUNT - 1 and outbox_depth(outbox) == 0,
                timeout=60,
                interval=0.2,
                what="every valid event at the hub and the agent's outbox empty",
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- agent ---\n{agent.log_tail()}\n--- hub ---\n{hub.log_tail()}") from None
        stored = hub_rows(database, "SELECT seq FROM events ORDER BY seq")
        refused = hub_rows(database, "SELECT seq, reason, detail FROM refused_events")
        marks = hub_rows(database, "SELECT store_id, gateway_id, through_seq FROM gateway_streams")
    finally:
        agent.kill()
        hub.kill()
        broker.stop(kill=True)

    assert [seq for (seq,) in stored] == [seq for seq in range(1, COUNT + 1) if seq != BAD_SEQ]
    assert [(seq, reason) for seq, reason, _ in refused] == [(BAD_SEQ, "invalid_event")]
    assert "furlongs" in refused[0][2] or "unit" in refused[0][2]
    assert marks == [("store-0001", "gw-1", COUNT)]
