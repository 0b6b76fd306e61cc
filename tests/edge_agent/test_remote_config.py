"""The agent's side of a pushed config and the gateway's commands: checks, probation, rollback, restart, resend.

The pure parts are plain unit tests; the runner runs in-process on a real Mosquitto with the plain-paho
:class:`FakeHub` acknowledging, and a paho client publishing the hub's commands and reading the results. The
whole path through the real hub is tests/end_to_end/test_remote_config_push.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.remote_config import PendingApply, RemoteConfig, candidate_problems, probation_problems
from edge_agent.runner import serve
from edge_agent.window import SendWindow
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually, wait_until
from tests.edge_agent.conftest import GATEWAY, STORE, FakeHub
from tests.hub.conftest import PlainGateway


def agent_toml(mqtt: MqttSettings, *, extra: str = "", device: str = "") -> str:
    """An agent.toml for the test's broker: hot-plug off, one simulated-sequence door unless ``device`` says."""
    device = device or (
        '[[devices]]\ndevice_id = "door-1"\ndriver = "simulated-sequence"\nkind = "door.contact"\n'
        "count = 30\nrate_per_s = 1000\n"
    )
    return (
        f'store_id = "{STORE}"\ngateway_id = "{GATEWAY}"\n\n[mqtt]\nhost = "{mqtt.host}"\nport = {mqtt.port}\n'
        "reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n\n"
        '[outbox]\npath = "outbox.sqlite"\nmax_batch = 5\nack_timeout_s = 3600\n\n'
        f"[health]\ninterval_s = 1\n\n[hotplug]\nenabled = false\n\n{extra}\n{device}"
    )


# ------------------------------------------------------------------ pure parts


def test_a_candidate_is_checked_as_the_agent_checks_its_file(tmp_path: Path) -> None:
    mqtt = MqttSettings(port=1883)
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(mqtt))
    running = load_agent_config(path)

    def problems(text: str) -> list[str]:
        return candidate_problems(text, running=running, config_path=path)

    assert problems(agent_toml(mqtt, extra="[snapshots]\nquota_mb = 5\n")) == []
    (typo,) = problems(agent_toml(mqtt).replace("max_batch", "max_batchh"))
    assert "outbox.max_batchh" in typo
    assert problems(agent_toml(mqtt).replace(f'"{GATEWAY}"', '"gw-9"')) == [
        "gateway_id: 'gw-9' is not this gateway 'gw-1'"
    ]
    assert (
        "store_id: 'store-0001' is not this gateway's store"
        in problems(agent_toml(mqtt).replace(STORE, "store-0001"))[0]
    )
    (inline,) = problems(agent_toml(mqtt).replace("[mqtt]\n", '[mqtt]\npassword = "hunter2"\n'))
    assert inline.startswith("mqtt.password is written inline")
    assert problems("store_id = \n")[0].startswith("not TOML")
    (moved,) = problems(agent_toml(mqtt).replace('path = "outbox.sqlite"', 'path = "elsewhere.sqlite"'))
    assert moved.startswith("outbox.path: a push may not move the outbox")
    (unknown_profile,) = problems(
        agent_toml(mqtt, device='[[devices]]\ndevice_id = "scale-1"\nprofile = "no-such"\naddress = "/dev/x"\n')
    )
    assert unknown_profile.startswith("devices.0.profile")
    assert "more than 65536" in problems("#" * 70_000)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.toml"], "no candidate file is left behind"


@dataclass
class Subject:
    """What the probation looks at, bare."""

    config: AgentConfig
    connected: bool = False
    acked: int = 0
    waiting: int = 0
    up: dict[str, bool] = field(default_factory=dict)

    def waiting_events(self) -> int:
        return self.waiting

    def device_up(self, device_id: str) -> bool | None:
        return self.up.get(device_id)


def test_probation_asks_for_the_broker_the_hubs_ack_and_the_fixed_devices(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(MqttSettings(host="hub.example", port=8883)))
    subject = Subject(config=load_agent_config(path), waiting=3)
    assert probation_problems(subject) == [
        "the broker at hub.example:8883 was not reached",
        "device(s) not connected: door-1",
    ]
    subject.connected, subject.up["door-1"] = True, True
    assert probation_problems(subject) == ["the hub acknowledged none of the events sent since the restart"]
    subject.acked = 1
    assert probation_problems(subject) == []
    # Nothing to send, nothing to acknowledge: connected is the test then.
    subject.acked, subject.waiting = 0, 0
    assert probation_problems(subject) == []


def test_a_resend_rewinds_only_above_its_seq_and_never_below_the_hubs_ack() -> None:
    window = SendWindow(acked_seq=10, max_in_flight=100, ack_timeout_s=3600, now=0.0)
    window.published(list(range(11, 31)), 0.0)
    window.heard_from_hub()
    window.request_resend_after(19)
    assert window.rewind_if_due(1.0) == "connected"
    assert (window.cursor, window.probing) == (19, False)
    window.published(list(range(20, 31)), 1.0)
    window.request_resend_after(4)  # below the ack: what the hub acknowledged is gone, the rest goes
    window.rewind_if_due(2.0)
    assert window.cursor == 10
    window.request_rewind()  # a reconnect's full rewind wins over a resend asked meanwhile
    window.request_resend_after(25)
    window.rewind_if_due(3.0)
    assert (window.cursor, window.probing) == (10, True)


def apply_command(**args: Any) -> wire.Command:
    return wire.Command(
        command_id=uuid.uuid4(),
        store_id=STORE,
        gateway_id=GATEWAY,
        name="config.apply",
        args=args,
        issued_at=wire.utc_now(),
    )


async def test_apply_refuses_bad_arguments_and_a_second_push_during_probation(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    text = agent_toml(MqttSettings(port=1883))
    path.write_text(text)
    remote, restart = RemoteConfig(config_path=path), asyncio.Event()
    progress: list[str] = []
    running = load_agent_config(path)

    async def apply(command: wire.Command) -> tuple[str, str]:
        return await remote.apply(command, progress.append, running=running, restart=restart)

    status, detail = await apply(apply_command(version=0, toml=text))
    assert status == "rejected"
    assert detail.startswith("config.apply: version:")
    assert (await apply(apply_command(version=2, toml=text, probation_s=901)))[0] == "rejected"
    on_probation = PendingApply(
        command_id=uuid.uuid4(), store_id=STORE, gateway_id=GATEWAY, version=1, probation_s=60, phase="probation"
    )
    remote.pending_path.write_text(on_probation.model_dump_json())
    assert await apply(apply_command(version=2, toml=text)) == (
        "rejected",
        "version 1 is still on probation: push again once it has ended",
    )
    remote.pending_path.write_text("{not json")
    assert remote.pending() is None  # set aside, logged, and the agent goes on
    assert (tmp_path / "config-apply.json.corrupt").read_text() == "{not json"
    assert (progress, restart.is_set(), path.read_text()) == ([], False, text)


# ------------------------------------------------------------------ the runner on a real broker


class HubSide(PlainGateway):
    """The hub's commands and the gateway's results, on plain paho."""

    def command(self, name: str, *, device_id: str | None = None, **args: Any) -> uuid.UUID:
        command_id = uuid.uuid4()
        command = wire.Command(
            command_id=command_id,
            store_id=STORE,
            gateway_id=GATEWAY,
            device_id=device_id,
            name=name,
            args=args,
            issued_at=wire.utc_now(),
        )
        self.publish(wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS), wire.encode(command))
        return command_id

    def results(self, command_id: uuid.UUID) -> list[wire.CommandResult]:
        decoded = [
            wire.decode(wire.CommandResult, raw)
            for raw in self.received.on(wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS))
        ]
        return [result for result in decoded if result.command_id == command_id]

    async def final(self, command_id: uuid.UUID, *, timeout: float = 15.0) -> wire.CommandResult:
        async def ended() -> wire.CommandResult | None:
            return next((r for r in self.results(command_id) if r.status != "accepted"), None)

        result = await eventually(ended, timeout=timeout, what=f"the final result of {command_id}")
        assert result is not None
        return result


@pytest.fixture
def hub_side(mqtt_settings: MqttSettings) -> Iterator[HubSide]:
    client = HubSide(mqtt_settings, client_id=f"test-hub-{uuid.uuid4().hex[:8]}")
    wait_until(client.client.is_connected, timeout=5, what="hub side connected")
    client.subscribe(wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[asyncio.Event]:
    """Runs ``serve`` on tmp_path/agent.toml once the test has written it (set the event); stops it at the end."""
    go, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        await go.wait()
        await serve(tmp_path / "agent.toml", stop)

    task = asyncio.create_task(run())
    try:
        yield go
    finally:
        stop.set()
        go.set()
        await asyncio.wait_for(task, timeout=20)


def seqs_of(hub: FakeHub) -> list[int]:
    return [event.seq for event in hub.events if event.device_id == "door-1"]


async def test_an_agent_killed_during_probation_rolls_back_when_it_starts(
    tmp_path: Path, mqtt_settings: MqttSettings, hub_side: HubSide, runner: asyncio.Event
) -> None:
    """As if the process died with version 2 on probation: it starts on version 1 and says why."""
    good, tried = agent_toml(mqtt_settings), agent_toml(mqtt_settings, extra="[snapshots]\nquota_mb = 7\n")
    remote = RemoteConfig(config_path=tmp_path / "agent.toml")
    (tmp_path / "agent.toml").write_text(tried)
    (tmp_path / "agent.toml.previous").write_text(good)
    command_id = uuid.uuid4()
    record = PendingApply(
        command_id=command_id, store_id=STORE, gateway_id=GATEWAY, version=2, probation_s=60, phase="probation"
    )
    remote.pending_path.write_text(record.model_dump_json())
    with FakeHub(mqtt_settings, auto_ack=True) as hub:
        runner.set()
        result = await hub_side.final(command_id)
        assert (result.status, result.detail) == (
            "failed",
            "rolled back: the agent stopped during the probation of version 2",
        )
        assert (tmp_path / "agent.toml").read_text() == good
        await eventually(lambda: _true(not remote.pending_path.exists()), what="the record forgotten once published")
        await eventually(lambda: _true(sorted(set(seqs_of(hub))) == list(range(1, 31))), what="events flow")
    assert (tmp_path / "agent.toml").stat().st_mode & 0o777 == 0o600


async def _true(value: bool) -> bool:
    return value


async def test_restart_a_driver_and_resend_from_a_seq(
    tmp_path: Path, mqtt_settings: MqttSettings, hub_side: HubSide, runner: asyncio.Event
) -> None:
    (tmp_path / "agent.toml").write_text(agent_toml(mqtt_settings))
    with FakeHub(mqtt_settings, auto_ack=False) as hub:
        runner.set()
        # Until the hub answers, the agent sends one probe batch (5 events); the hub takes them.
        await eventually(lambda: _true(set(range(1, 6)) <= set(seqs_of(hub))), what="the probe batch")
        stream = hub.events[0].stream
        hub._publish_ack(stream, 5)
        # Then the rest goes, and nothing is resent by itself (ack_timeout_s is an hour).
        await eventually(lambda: _true(set(range(1, 31)) <= set(seqs_of(hub))), what="every event once")
        before = seqs_of(hub)

        resent = hub_side.command("resend", from_seq=20)
        result = await hub_side.final(resent)
        assert (result.status, result.detail) == ("done", "resending seqs 20..30")
        await eventually(lambda: _true(len(seqs_of(hub)) == len(before) + 11), what="20..30 again")
        assert sorted(seqs_of(hub)[len(before) :]) == list(range(20, 31))

        below = await hub_side.final(hub_side.command("resend", from_seq=3))
        assert below.detail == "resending seqs 6..30 (up to 5 the hub has acknowledged them: deleted here)"
        beyond = await hub_side.final(hub_side.command("resend", from_seq=31))
        assert beyond.detail == "nothing to resend: no event from seq 31 on is still on the gateway"
        forged = await hub_side.final(hub_side.command("resend", from_seq=0))
        assert forged.status == "rejected"
        assert "from_seq" in forged.detail
        junk = await hub_side.final(hub_side.command("resend", from_seq=1, everything=True))
        assert junk.status == "rejected"

        restarted = await hub_side.final(hub_side.command("restart", device_id="door-1"))
        assert (restarted.status, restarted.detail) == ("done", "door-1 restarted and connected again")
        nothing = await hub_side.final(hub_side.command("restart", device_id="door-9"))
        assert nothing.status == "rejected"
        assert "no device 'door-9'" in nothing.detail
        # The device resumed after what the outbox holds: no number twice, none lost.
        hub.auto_ack = True
        hub._publish_ack(stream, 5)
        await eventually(lambda: _true(sorted(set(seqs_of(hub))) == list(range(1, 31))), what="still 1..30")
