"""The status file the agent keeps next to its outbox, and ``agent_status`` reading it for people."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from edge_agent.agent import EdgeAgent
from edge_agent.config import load_agent_config
from edge_agent.status import (
    AgentStatusFile,
    DeviceState,
    agent_status,
    describe_status,
    status_bytes,
    status_path,
    write_status,
)
from storegate.mqtt import MqttSettings
from storegate.wire import utc_now
from tests.edge_agent.conftest import GATEWAY, STORE, FakeHub, running, temperature
from tests.edge_agent.test_agent import connected, until


def write_config(
    tmp_path: Path, mqtt: MqttSettings, *, outbox: Path | str = "data/outbox.sqlite3", outbox_settings: str = ""
) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
store_id = "{STORE}"
gateway_id = "{GATEWAY}"

[mqtt]
host = "{mqtt.host}"
port = {mqtt.port}
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[outbox]
path = "{outbox}"
{outbox_settings}

[health]
interval_s = 0.2
"""
    )
    return path


def sample_status(**overrides: object) -> AgentStatusFile:
    fields: dict[str, object] = {
        "pid": 4242,
        "written_at": utc_now(),
        "running": True,
        "store_id": STORE,
        "gateway_id": GATEWAY,
        "broker": "10.0.0.5:1883",
        "connected": True,
        "health_interval_s": 30.0,
        "outbox_depth": 1200,
        "outbox_bytes": 360_000,
        "oldest_unacked_age_s": 42.0,
        "publish_rate": 1234.5,
        "ack_rate": 1200.0,
        "published_total": 9000,
        "acked_total": 7800,
        "resent_total": 150,
        "evicted_total": 7,
        "evicted_by_priority": {"security": 0, "sales": 0, "device": 0, "telemetry": 7},
        "reconnects_total": 2,
        "duplicates_total": 3,
        "rejected_total": 1,
        "problems": [],
    }
    return AgentStatusFile.model_validate({**fields, **overrides})


def test_a_healthy_agent_in_words() -> None:
    text, code = describe_status(sample_status(), now=utc_now() + timedelta(seconds=3))
    assert code == 0
    assert text.splitlines() == [
        f"gateway {STORE}/{GATEWAY}: agent running (pid 4242, status 3 s old)",
        "broker 10.0.0.5:1883: connected",
        "backlog: 1,200 events (0.4 MB), oldest unacknowledged 42 s",
        "rates over the last minute: published 1,234.5 events/s, acknowledged 1,200.0 events/s",
        "published 9,000, acknowledged 7,800, resent 150, reconnects 2",
        "evicted 7 (telemetry 7), duplicates dropped 3, invalid readings 1",
        "problems: none",
    ]


def test_problems_and_an_unreachable_broker() -> None:
    status = sample_status(
        connected=False, disconnected_for_s=125.0, problems=["broker 10.0.0.5:1883 unreachable for 125 s"]
    )
    text, code = describe_status(status, now=utc_now())
    assert code == 1
    assert "broker 10.0.0.5:1883: unreachable for 2 min" in text
    assert text.endswith("problems:\n  - broker 10.0.0.5:1883 unreachable for 125 s")


def test_an_unreachable_broker_says_how_long_it_has_been_trying_and_why() -> None:
    # Written 2 s after the start, read 23 s later: the agent has been trying for 25 s, not 2.
    written = utc_now()
    status = sample_status(
        written_at=written,
        health_interval_s=30.0,
        connected=False,
        disconnected_for_s=2.0,
        last_connection_error="nothing listens on 10.0.0.5:1883 (connection refused)",
    )
    text, code = describe_status(status, now=written + timedelta(seconds=23))
    started = (written - timedelta(seconds=2)).strftime("%H:%M:%S UTC")
    assert code == 0  # the problems are the agent's to say; none were written in this sample
    assert text.splitlines()[1] == (
        f"broker 10.0.0.5:1883: unreachable for 25 s (trying since {started}); "
        "last error: nothing listens on 10.0.0.5:1883 (connection refused)"
    )


def test_the_devices_are_listed_with_their_state() -> None:
    devices = [
        DeviceState(device_id="shelf-1", up=True),
        DeviceState(device_id="printer-1", up=True, attention="out of paper"),
        DeviceState(device_id="door-1", up=False, down_for_s=75.0, last_error="/dev/ttyUSB3: no such device"),
        DeviceState(device_id="scanner-1", up=False),
    ]
    text, _ = describe_status(sample_status(devices=devices), now=utc_now())
    lines = text.splitlines()
    at = lines.index("devices:")
    assert lines[at + 1 : at + 5] == [
        "  - shelf-1: up",
        "  - printer-1: up, needs attention: out of paper",
        "  - door-1: down for 1 min (/dev/ttyUSB3: no such device)",
        "  - scanner-1: opening",
    ]


def test_a_status_with_many_failing_devices_still_fits_its_file() -> None:
    devices = [DeviceState(device_id=f"d{n}", up=False, down_for_s=1.0, last_error="e" * 200) for n in range(256)]
    text = status_bytes(sample_status(devices=devices))
    assert len(text) == 16 * 1024
    kept = AgentStatusFile.model_validate_json(text).devices
    assert 0 < len(kept) < 256


def test_a_stale_or_dead_or_stopped_agent_is_not_running() -> None:
    old = sample_status(written_at=utc_now() - timedelta(minutes=5))
    text, code = describe_status(old, now=utc_now())
    assert code == 1
    assert text.startswith(f"gateway {STORE}/{GATEWAY}: agent not running (status 5 min old)")
    assert "  - the agent is not running" in text
    text, code = describe_status(sample_status(), now=utc_now(), pid_alive=False)
    assert (code, "agent not running (status 0 s old)" in text) == (1, True)
    text, code = describe_status(sample_status(running=False), now=utc_now())
    assert (code, "agent not running (stopped cleanly; status 0 s old)" in text) == (1, True)


def test_no_status_or_no_config_is_exit_2(tmp_path: Path, unreachable_mqtt: MqttSettings) -> None:
    text, code = agent_status(tmp_path / "absent.toml")
    assert (code, "file not found" in text) == (2, True)
    config = write_config(tmp_path, unreachable_mqtt)
    text, code = agent_status(config)
    assert code == 2
    assert (
        text
        == f"no status file {tmp_path / 'data' / 'outbox.sqlite3.status.json'}: the agent has not run with this config"
    )
    path = status_path(load_agent_config(config).outbox.path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    text, code = agent_status(config)
    assert (code, text.startswith(f"status file {path} is not a valid status")) == (2, True)
    text, code = agent_status(config, as_json=True)
    assert code == 2
    assert json.loads(text)["error"].startswith(f"status file {path} is not a valid status")


def test_the_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3.status.json"
    write_status(path, sample_status(outbox_depth=1))
    write_status(path, sample_status(outbox_depth=2))
    assert AgentStatusFile.model_validate_json(path.read_text()).outbox_depth == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


async def test_the_running_agent_keeps_its_status_file_and_agent_status_reads_it(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: Callable[..., FakeHub]
) -> None:
    config_path = write_config(tmp_path, mqtt_settings)
    agent = EdgeAgent(config=load_agent_config(config_path))
    assert agent.status_path == tmp_path / "data" / "outbox.sqlite3.status.json"
    with fake_hub_factory(auto_ack=True):
        async with running(agent):
            await connected(agent)
            for n in range(5):
                await agent.record(temperature(n))
            await until(lambda: agent.stats.acked == 5, "the events acknowledged")

            def reported() -> bool:
                text, code = agent_status(config_path)
                return code == 0 and "acknowledged 5," in text

            await until(reported, "a status with the acknowledgements")
            text, _ = agent_status(config_path)
            assert f"broker {mqtt_settings.address}: connected" in text
            assert "backlog: 0 events" in text
            assert text.endswith("problems: none")
            written = json.loads(agent.status_path.read_text())
            assert (written["pid"], written["running"], written["acked_total"]) == (os.getpid(), True, 5)
    text, code = agent_status(config_path)
    assert code == 1
    assert f"gateway {STORE}/{GATEWAY}: agent not running (stopped cleanly;" in text


async def test_agent_status_of_an_agent_that_cannot_reach_its_broker(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    device = '\n[[devices]]\ndevice_id = "chiller-2"\ndriver = "simulated-temperature"\nzone = "chiller-2"\n'
    config_path = write_config(tmp_path, unreachable_mqtt, outbox_settings=device)
    agent = EdgeAgent(config=load_agent_config(config_path))
    async with running(agent):
        await agent.record(temperature(0))

        def reported() -> bool:
            text = agent_status(config_path)[0]
            return text.count("unreachable for") == 2 and "backlog: 0 events" not in text

        await until(reported, "a status saying the broker is unreachable")
        await until(lambda: "last error" in agent_status(config_path)[0], "the connection error in the status")
        text, code = agent_status(config_path)
        report = json.loads(agent_status(config_path, as_json=True)[0])
    assert code == 1
    assert f"broker {unreachable_mqtt.address}: unreachable for" in text
    assert f"last error: nothing listens on {unreachable_mqtt.address} (connection refused)" in text
    assert report["exit_code"] == 1
    assert report["broker"]["last_error"] == f"nothing listens on {unreachable_mqtt.address} (connection refused)"
    assert report["broker"]["unreachable_for_s"] >= 0
    assert report["status"]["outbox_depth"] >= 1
    assert [device["device_id"] for device in report["devices"]] == ["chiller-2"]
