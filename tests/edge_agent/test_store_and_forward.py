"""Store-and-forward guarantees, each on its own: against a real Mosquitto and a plain-paho hub stand-in.

Grouped commits, gap repair, events the hub lost after acknowledging them, the lane
ahead of the backlog, the quota, a full disk, and numbered device readings.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from device_drivers.base import Reading
from device_drivers.simulated.sequence import SimulatedSequenceConfig, SimulatedSequenceDevice, reading_number
from edge_agent.agent import EdgeAgent
from edge_agent.config import DeviceConfig
from edge_agent.outbox import NewEvent, Outbox
from launcher.broker import LocalBroker
from storegate import wire
from storegate.mqtt import MqttSettings
from storegate.wire import EventKind, SeqRange
from tests.edge_agent.conftest import T0, FakeHub, make_config, running, temperature
from tests.edge_agent.test_agent import connected, until


def door(n: int) -> Reading:
    return Reading(device_id="door-1", kind="door.contact", ts=T0 + timedelta(seconds=n), payload={"door": "back"})


def sale(n: int) -> Reading:
    return Reading(device_id="till-1", kind="sale.item", ts=T0 + timedelta(seconds=n), payload={"gtin": str(n)})


def big(n: int, kind: str = "security.clip") -> Reading:
    return Reading(device_id="cam-1", kind=kind, ts=T0 + timedelta(seconds=n), payload={"blob": "x" * 5000})


def outbox_of(agent: EdgeAgent) -> Outbox:
    assert agent.outbox is not None, "the agent is not running"
    return agent.outbox


async def test_readings_that_wait_together_are_committed_in_one_transaction(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, unreachable_mqtt, outbox={"commit_max_events": 1000}))
    async with running(agent):
        for n in range(2500):
            await agent.record(temperature(n))
        await agent.flush()
        assert agent.stats.depth == 2500
        assert outbox_of(agent).appends_total <= 4, "one fsync per group, not per reading"


async def test_a_gap_named_in_an_ack_is_resent_at_once_and_nothing_else(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    # A long ack timeout: only the gap repair can bring the lost events back within the test.
    config = make_config(tmp_path, mqtt_settings, outbox={"ack_timeout_s": 60, "max_batch": 5})
    agent = EdgeAgent(config=config)
    with FakeHub(mqtt_settings, auto_ack=True, drop={5, 6, 7}) as hub:
        async with running(agent):
            await connected(agent)
            for n in range(20):
                await agent.record(temperature(n))
            await until(lambda: agent.stats.acked == 20, "every event acknowledged despite the lost ones")
    assert [event.seq for event in hub.dropped] == [5, 6, 7]
    assert Counter(event.seq for event in hub.received()) == dict.fromkeys(range(1, 21), 1)
    assert agent.stats.resent == 3


@pytest.mark.parametrize(
    ("gaps", "lost"),
    [
        (None, [SeqRange(first=5, last=10)]),  # the restored hub holds nothing above 4
        (
            [SeqRange(first=5, last=6), SeqRange(first=9, last=9)],
            [SeqRange(first=5, last=6), SeqRange(first=9, last=9)],
        ),
    ],
)
async def test_events_the_hub_lost_after_acknowledging_them_are_reported_once_as_not_held(
    tmp_path: Path, mqtt_settings: MqttSettings, gaps: list[SeqRange] | None, lost: list[SeqRange]
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings))
    with FakeHub(mqtt_settings, auto_ack=False) as hub:
        async with running(agent):
            await connected(agent)
            for n in range(10):
                await agent.record(temperature(n))
            await until(lambda: len(hub.unique()) == 10, "ten events at the hub")
            stream = agent.stream
            assert stream is not None
            hub.ack(stream, 10)
            await until(lambda: outbox_of(agent).acked_through == 10, "the ack through 10")
            # The hub comes back from an older backup, and says so in every ack from now on.
            for _ in range(3):
                hub.ack(stream, 4, gaps=gaps)
            await until(lambda: hub.losses(), "the loss record")
            # Acks from one publisher arrive in order: once the one through 11 is applied, the
            # regressed ones before it have been handled (and reported nothing more).
            hub.ack(stream, 4, gaps=gaps)
            hub.ack(stream, 11)
            await until(lambda: agent.stats.last_ack_seq == 11, "the ack through the loss record")
            assert outbox_of(agent).last_seq == 11
    (loss,) = hub.losses()
    assert (loss.reason, loss.ranges, loss.count) == ("not_held", lost, sum(r.size for r in lost))
    assert "through 4" in loss.detail
    assert hub.unique()[11].device_id == "gw-1"


async def test_a_security_event_overtakes_a_telemetry_backlog(tmp_path: Path, mqtt_settings: MqttSettings) -> None:
    config = make_config(tmp_path, mqtt_settings, outbox={"max_batch": 100, "max_in_flight": 1000})
    backlog = 20_000
    async with Outbox(path=config.outbox.path) as outbox:  # what an outage left behind
        await outbox.append(
            [
                NewEvent.of(device_id="chiller-1", kind="environment.reading", ts=r.ts, payload=r.payload)
                for r in map(temperature, range(backlog))
            ]
        )
    agent = EdgeAgent(config=config)
    with FakeHub(mqtt_settings, auto_ack=True) as hub:
        async with running(agent):
            await until(lambda: len(hub.received()) >= 2000, "the drain under way")
            # Counted when the door opens, not when the wait above saw 2,000: on a loaded machine the
            # drain runs on meanwhile, and what matters is how far behind that point the door went out.
            before = len(hub.received())
            await agent.record(door(0))
            await until(lambda: any(e.kind == "door.contact" for e in hub.received()), "the security event")
            await until(lambda: agent.stats.acked == backlog + 1, "the backlog drained", timeout=30)
    kinds = [event.kind for event in hub.received()]
    position = kinds.index("door.contact")
    # It went out with the next round of the sender (after at most the 1,000 in flight and a round of
    # batches), not after the ~18,000 events still waiting.
    assert before <= position < before + 3000, (before, position)
    assert kinds.count("environment.reading") >= backlog
    assert sorted(hub.unique()) == list(range(1, backlog + 2))
    assert agent.stats.resent <= 100  # at most the probe after connecting


async def test_with_the_broker_down_a_full_outbox_evicts_telemetry_first_and_tells_the_hub_later(
    tmp_path: Path, mosquitto: LocalBroker, mqtt_settings: MqttSettings
) -> None:
    config = make_config(tmp_path, mqtt_settings, outbox={"max_events": 50}, health={"interval_s": 0.2})
    agent = EdgeAgent(config=config)
    with FakeHub(mqtt_settings, auto_ack=True) as hub:
        async with running(agent):
            await connected(agent)
            await asyncio.to_thread(mosquitto.stop)
            await until(lambda: not agent.stats.connected, "the agent noticing the outage")
            for n in range(40):
                await agent.record(temperature(n))
            for n in range(5):
                await agent.record(door(n))
                await agent.record(sale(n))
            for n in range(40, 70):
                await agent.record(temperature(n))
            await agent.flush()
            stats = agent.stats
            evicted = dict(stats.evicted_by_priority)
            assert evicted["telemetry"] >= 30
            assert (evicted["security"], evicted["sales"], evicted["device"]) == (0, 0, 0)
            assert stats.depth <= 50
            assert any(problem.startswith("outbox full (50 events") for problem in agent.health().problems)
            await asyncio.to_thread(mosquitto.restart)
            await until(lambda: agent.stats.depth == 0, "everything kept delivered after the outage", timeout=20)
            assert not any("outbox full" in problem for problem in agent.health().problems)
    events = hub.unique()
    losses = hub.losses()
    lost = {seq for loss in losses for r in loss.ranges for seq in range(r.first, r.last + 1)}
    delivered = {seq for seq, event in events.items() if event.kind != EventKind.OUTBOX_LOSS}
    records = {seq for seq, event in events.items() if event.kind == EventKind.OUTBOX_LOSS}
    # Every seq of the stream is accounted for: delivered, or named in a loss record, never both.
    assert not lost & delivered
    assert lost | delivered | records == set(range(1, max(events) + 1))
    assert {loss.reason for loss in losses} == {"evicted"}
    assert sum(loss.count for loss in losses) == agent.stats.evicted
    assert set().union(*(loss.by_kind for loss in losses)) == {"environment.reading"}
    # The oldest telemetry went: seqs 1..k, the first 40 readings' start.
    assert lost == set(range(1, len(lost) + 1))
    assert Counter(events[seq].kind for seq in delivered)["door.contact"] == 5
    assert Counter(events[seq].kind for seq in delivered)["sale.item"] == 5


async def test_a_full_disk_holds_readings_in_memory_and_the_agent_keeps_running(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, unreachable_mqtt, outbox={"queue_size": 10}))
    async with running(agent):
        await until(lambda: agent.outbox is not None, "the outbox open")
        await outbox_of(agent).cap_pages(1)  # the file may not grow, and there is nothing to evict
        for n in range(10):
            await agent.record(big(n))
        await until(lambda: any("outbox writes failing" in p for p in agent.health().problems), "the problem")
        blocked = asyncio.create_task(_record_all(agent, [big(n) for n in range(10, 30)]))
        await until(lambda: agent.stats.depth == 0 and agent._recorder._queue.full(), "the queue full")
        (problem,) = [p for p in agent.health().problems if "outbox writes failing" in p]
        assert "database or disk is full" in problem
        assert "readings held in memory, devices wait" in problem
        assert not blocked.done(), "a full queue makes the drivers wait"
        await outbox_of(agent).cap_pages(1_000_000)  # space again
        await asyncio.wait_for(blocked, timeout=20)
        await agent.flush()
        assert agent.stats.depth == 30
        assert not any("outbox writes failing" in p for p in agent.health().problems)


async def _record_all(agent: EdgeAgent, readings: list[Reading]) -> None:
    for reading in readings:
        await agent.record(reading)


async def test_a_full_disk_evicts_telemetry_to_make_room_for_new_events(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, unreachable_mqtt))
    async with running(agent):
        for n in range(30):
            await agent.record(big(n, kind="environment.sample"))
        await agent.flush()
        await outbox_of(agent).cap_pages(1)
        for n in range(30, 40):
            await agent.record(big(n))
        await agent.flush()
        stats = agent.stats
        assert dict(stats.evicted_by_priority)["telemetry"] >= 10
        assert stats.evicted == dict(stats.evicted_by_priority)["telemetry"]
        rows = await outbox_of(agent).read_after(0, 100)
    kinds = Counter(row.fields()["kind"] for row in rows)
    assert kinds["security.clip"] == 10
    losses = [
        wire.DataLoss.model_validate(row.fields()["payload"])
        for row in rows
        if row.fields()["kind"] == EventKind.OUTBOX_LOSS
    ]
    assert sum(loss.count for loss in losses) == stats.evicted
    assert all(loss.detail.startswith("disk full") for loss in losses)


async def test_numbered_readings_reach_the_outbox_exactly_once_across_restarts(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    device = {
        "device_id": "till-1",
        "driver": "simulated-sequence",
        "kind": "sale.item",
        "count": 30,
        "rate_per_s": 2000,
    }
    config = make_config(tmp_path, unreachable_mqtt, devices=[device])
    first = EdgeAgent(config=config)
    async with running(first):
        await until(
            lambda: first.outbox is not None and first.outbox.device_mark("till-1") == 30, "all 30 readings committed"
        )

    told: list[int | None] = []

    class ForgetfulDevice(SimulatedSequenceDevice):
        """Hears where to resume, and replays its whole history anyway."""

        def resume_after(self, source_seq: int | None) -> None:
            told.append(source_seq)

    def factory(device_config: DeviceConfig) -> ForgetfulDevice:
        assert isinstance(device_config, SimulatedSequenceConfig)
        return ForgetfulDevice(config=device_config)

    second = EdgeAgent(config=config, driver_factory=factory)
    async with running(second):
        await until(lambda: second.stats.duplicates == 30, "the replayed readings dropped")
        assert told == [30]
        assert second.stats.depth == 30
        rows = await outbox_of(second).read_after(0, 100)
    numbers = [reading_number(row.fields()["kind"], row.fields()["payload"]) for row in rows]  # type: ignore[arg-type]
    assert numbers == list(range(1, 31))
