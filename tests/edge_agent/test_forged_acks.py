"""A forged ack, published straight to a real agent's ack topic on a real Mosquitto, deletes nothing.

The broker's ACL is the first gate (only the hub may publish acks); these tests play the
attacker who got past it, with a plain paho client: the agent must trust an ack only as far
as its own sending goes. Each test ends with a genuine ack as the positive control, so a
refusal that came from a broken link rather than from the check would fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.agent import EdgeAgent
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.edge_agent.conftest import GATEWAY, STORE, FakeHub, make_config, running, temperature

HubFactory = Callable[..., FakeHub]

STORED = 60  # events in the outbox
WINDOW = 5  # at most this many published before the hub answers


def forge_ack(settings: MqttSettings, payload: bytes) -> None:
    """Publish ``payload`` on the gateway's ack topic from an attacker's own plain paho client."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"attacker-{uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        info = client.publish(wire.topic(STORE, GATEWAY, wire.Channel.ACK), payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def ack_payload(
    stream: UUID, through_seq: int, *, gaps: list[wire.SeqRange] | None = None, gateway_id: str = GATEWAY
) -> bytes:
    """A well-formed ack, as a hub would word it."""
    ack = wire.Ack(
        store_id=STORE,
        gateway_id=gateway_id,
        stream=stream,
        through_seq=through_seq,
        stored=through_seq,
        duplicates=0,
        ts=wire.utc_now(),
        gaps=gaps or [],
    )
    return wire.encode(ack)


def refused(agent: EdgeAgent, reason: str) -> float:
    """The agent's ``storegate_agent_acks_refused_total`` for ``reason``, as Prometheus reads it."""
    value = agent.registry.get_sample_value("storegate_agent_acks_refused_total", {"reason": reason})
    assert value is not None, f"no acks_refused sample for {reason}"
    return value


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait for a synchronous condition without blocking the event loop."""

    async def probe() -> object:
        return condition()

    await eventually(probe, what=what)


async def waiting_seqs(agent: EdgeAgent) -> list[int]:
    """The seqs still in the agent's outbox."""
    assert agent.outbox is not None
    return [row.seq for row in await agent.outbox.read_after(0, STORED * 2)]


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structlog entries named ``event`` that reached the standard library's logging."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event]


@asynccontextmanager
async def a_full_window(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> AsyncIterator[tuple[EdgeAgent, FakeHub]]:
    """A running agent with STORED events in its outbox and the first WINDOW of them at a hub that stays silent."""
    config = make_config(tmp_path, mqtt_settings, outbox={"max_in_flight": WINDOW, "ack_timeout_s": 600})
    agent = EdgeAgent(config=config)
    with fake_hub_factory(auto_ack=False) as hub:
        async with running(agent):
            await until(lambda: agent.stats.connected, "agent connected")
            for n in range(STORED):
                await agent.record(temperature(n))
            await agent.flush()
            await until(lambda: len(hub.unique()) == WINDOW, "the first window at the hub")
            yield agent, hub


async def test_a_forged_ack_beyond_what_was_published_deletes_nothing(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack: 60 events stored, 5 published (the window is full, the hub silent),
    # and a forged ack through 50. Before, the agent deleted 50 events no hub had stored.
    async with a_full_window(tmp_path, mqtt_settings, fake_hub_factory) as (agent, hub):
        assert agent.stream is not None
        assert max(hub.unique()) == WINDOW < 50 <= STORED

        await asyncio.to_thread(forge_ack, mqtt_settings, ack_payload(agent.stream, 50))
        await until(lambda: refused(agent, "beyond_published") == 1, "the forged ack refused")
        assert await waiting_seqs(agent) == list(range(1, STORED + 1))
        assert (agent.stats.depth, agent.stats.acked, agent.stats.last_ack_seq) == (STORED, 0, 0)
        [entry] = logged(caplog, "ack_refused")
        assert entry["level"] == "warning"
        assert (entry["reason"], entry["through_seq"], entry["published_through"]) == ("beyond_published", 50, 5)
        assert entry["consequence"] == "nothing deleted"

        # Positive control: the hub's genuine ack for what it holds is applied.
        hub.ack(agent.stream, WINDOW)
        await until(lambda: agent.stats.last_ack_seq == WINDOW, "the genuine ack applied")
        assert await waiting_seqs(agent) == list(range(WINDOW + 1, STORED + 1))
        assert agent.stats.acked == WINDOW
        assert refused(agent, "beyond_published") == 1


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        # For another life of this gateway's outbox (another stream): not ours to apply.
        (lambda stream: ack_payload(uuid4(), 50), "other_stream"),
        # Within what was published, but naming gaps beyond it: the whole ack is untrustworthy.
        (lambda stream: ack_payload(stream, 3, gaps=[wire.SeqRange(first=40, last=45)]), "gaps_beyond_published"),
        # Another gateway's ack on this gateway's topic.
        (lambda stream: ack_payload(stream, 5, gateway_id="gw-9"), "other_gateway"),
        (lambda stream: b'{"through_seq": 50}', "invalid"),
    ],
)
async def test_other_forged_acks_are_refused_counted_and_delete_nothing(
    tmp_path: Path,
    mqtt_settings: MqttSettings,
    fake_hub_factory: HubFactory,
    forgery: Callable[[UUID], bytes],
    reason: str,
) -> None:
    async with a_full_window(tmp_path, mqtt_settings, fake_hub_factory) as (agent, hub):
        assert agent.stream is not None
        await asyncio.to_thread(forge_ack, mqtt_settings, forgery(agent.stream))
        await until(lambda: refused(agent, reason) == 1, f"the forged ack refused as {reason}")
        assert await waiting_seqs(agent) == list(range(1, STORED + 1))
        assert agent.stats.acked == 0

        hub.ack(agent.stream, 3)
        await until(lambda: agent.stats.last_ack_seq == 3, "the genuine ack applied")
        assert await waiting_seqs(agent) == list(range(4, STORED + 1))
        assert sum(count for _, count in agent.stats.acks_refused_by_reason) == 1


@pytest.mark.parametrize("second_window", [5000, 20], ids=["same-window", "smaller-window"])
async def test_the_hubs_ack_for_what_a_previous_run_published_does_not_stall_the_agent(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory, second_window: int
) -> None:
    # The refusal's price: after a restart the hub acknowledges through what the previous run sent,
    # beyond what this run has published. The agent must refuse that ack yet keep sending until the
    # hub's next ack is within its own sending; probing one small batch at a time would never get there.
    config = make_config(tmp_path, mqtt_settings, outbox={"ack_timeout_s": 600})
    with fake_hub_factory(auto_ack=False) as hub:
        first = EdgeAgent(config=config)
        async with running(first):
            await until(lambda: first.stats.connected, "first run connected")
            for n in range(STORED * 4):
                await first.record(temperature(n))
            await until(lambda: hub.unique(), "the first probe at the hub")
            assert first.stream is not None
            hub.ack(first.stream, 0)  # "listening, nothing stored yet": the window opens
            await until(lambda: len(hub.unique()) == STORED * 4, "every event at the hub, none acknowledged")

        hub.auto_ack = True  # from now on the hub acks through everything it holds
        # With a smaller window than the first run's, a whole window is not enough to pass what the hub holds.
        outbox = config.outbox.model_copy(update={"max_in_flight": second_window})
        second = EdgeAgent(config=config.model_copy(update={"outbox": outbox}))
        async with running(second):
            await until(lambda: second.stats.last_ack_seq == STORED * 4, "the hub's ack through everything believed")
            assert second.stats.depth == 0
            assert refused(second, "beyond_published") >= 1, "the first ack claimed more than this run had sent"


async def test_a_flood_of_forged_acks_is_counted_in_full_and_logged_sparingly(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with a_full_window(tmp_path, mqtt_settings, fake_hub_factory) as (agent, _):
        for n in range(12):
            await asyncio.to_thread(forge_ack, mqtt_settings, b'{"v": 1, "through_seq": %d}' % (50 + n))
        await until(lambda: refused(agent, "invalid") == 12, "every forged ack counted")
        assert [entry["refused_so_far"] for entry in logged(caplog, "ack_refused")] == [1, 10]
        assert await waiting_seqs(agent) == list(range(1, STORED + 1))
