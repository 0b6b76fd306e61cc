"""Turns at SQLite's write lock (hub.db.writegate): first come, first served; bounded for the API; wired in the hub."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from hub.db import writegate
from hub.db.writegate import WriteGate, WriteGateTimeout
from storegate import wire
from storegate.mqtt import Incoming
from tests.conftest import eventually
from tests.hub.conftest import RunningHub, batch_of, reading, until

WEBHOOK = {"url": "https://alarms.example.com/in"}


async def _take_turn(gate: WriteGate, writer: str, served: list[str], *, hold: asyncio.Event | None = None) -> None:
    async with gate.turn(writer):
        served.append(writer)
        if hold is not None:
            await hold.wait()


@contextlib.asynccontextmanager
async def turn_held(gate: WriteGate, writer: str, served: list[str] | None = None) -> AsyncIterator[None]:
    """``writer`` holds a turn (as a unit in progress would) until the block ends."""
    release = asyncio.Event()
    holder = asyncio.create_task(_take_turn(gate, writer, served if served is not None else [], hold=release))
    await until(lambda: gate.holder == writer, what=f"the {writer} writer holding its turn")
    try:
        yield
    finally:
        release.set()
        await holder


async def test_writers_get_their_turns_in_the_order_they_asked_not_the_consumer_first() -> None:
    gate = WriteGate(serialise=True)
    served: list[str] = []
    async with turn_held(gate, writegate.INGEST, served):
        change = asyncio.create_task(_take_turn(gate, writegate.API, served))
        await until(lambda: gate.waiting == 1, what="the API's change queued")
        next_unit = asyncio.create_task(_take_turn(gate, writegate.INGEST, served))
        await until(lambda: gate.waiting == 2, what="the consumer's next unit queued behind it")
        assert served == [writegate.INGEST]  # nobody writes while a turn is held
    await asyncio.gather(change, next_unit)

    assert served == [writegate.INGEST, writegate.API, writegate.INGEST]
    assert (gate.holder, gate.waiting) == (None, 0)


async def test_a_writer_without_a_turn_in_time_is_refused_in_words_and_the_gate_still_serves() -> None:
    waited: list[tuple[str, float]] = []
    gate = WriteGate(serialise=True, observe=lambda writer, seconds: waited.append((writer, seconds)))
    async with turn_held(gate, writegate.INGEST):
        with pytest.raises(
            WriteGateTimeout, match=r"the ingest writer held it and no turn to write came within 0\.05 s"
        ):
            async with gate.turn(writegate.API, timeout_s=0.05):
                pytest.fail("a turn was given while another was held")
        assert gate.waiting == 0
    async with gate.turn(writegate.API, timeout_s=0.05):
        assert gate.holder == writegate.API
    assert [writer for writer, _ in waited] == [writegate.INGEST, writegate.API]
    assert all(seconds >= 0 for _, seconds in waited)


async def test_a_failing_writer_gives_its_turn_back() -> None:
    gate = WriteGate(serialise=True)
    with pytest.raises(RuntimeError, match="statement failed"):
        async with gate.turn(writegate.RULES):
            raise RuntimeError("statement failed")
    assert gate.holder is None
    async with gate.turn(writegate.INGEST, timeout_s=0.05):
        assert gate.holder == writegate.INGEST


async def test_without_serialising_postgresql_writers_do_not_wait_for_each_other() -> None:
    gate = WriteGate(serialise=False)
    assert not gate.serialises
    async with gate.turn(writegate.INGEST), gate.turn(writegate.API, timeout_s=0.01):
        assert gate.waiting == 0  # both inside at once: PostgreSQL locks rows, not the database


# --------------------------------------------------------------------------- in the running hub (SQLite)


def _one_batch() -> Incoming:
    events = [reading(stream=uuid.uuid4(), seq=seq, device_id="fridge-1", value=3.5) for seq in (1, 2)]
    topic = wire.topic("store-0001", "gw-1", wire.Channel.EVENTS)
    return Incoming(topic, wire.encode(batch_of(events)), 1, False)


async def test_an_api_change_and_the_consumer_queue_at_the_same_gate_in_the_running_hub(hub: RunningHub) -> None:
    gate = hub.runtime.write_gate
    assert gate.serialises  # the hub fixture runs on SQLite
    async with turn_held(gate, "test"):
        change = asyncio.create_task(hub.client.post("/api/v1/webhooks", json=WEBHOOK))
        await until(lambda: gate.waiting == 1, what="the API's change waiting for its turn")
        unit = asyncio.create_task(hub.runtime.ingestor.process([_one_batch()]))
        await until(lambda: gate.waiting == 2, what="the consumer's unit waiting behind it")
        # Reads do not queue: the API still answers them.
        listed = await hub.client.get("/api/v1/webhooks")
        assert (listed.status_code, listed.json()["items"]) == (200, [])
        assert not change.done()
        assert not unit.done()
    response = await change
    result = await unit

    assert response.status_code == 201, response.text
    assert result.stored == 2
    metrics = (await hub.client.get("/metrics")).text
    assert 'storegate_hub_write_turn_wait_seconds_count{writer="api"} 1.0' in metrics
    assert 'storegate_hub_write_turn_wait_seconds_count{writer="ingest"}' in metrics


async def test_an_api_change_without_a_turn_in_time_is_503_in_words_and_changes_nothing(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.api.deps.WRITE_TURN_WAIT_S", 0.2)
    async with turn_held(hub.runtime.write_gate, writegate.INGEST):
        response = await hub.client.post("/api/v1/webhooks", json=WEBHOOK)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    detail = response.json()["detail"]
    assert "the ingest writer held it and no turn to write came within 0.2 s" in detail
    assert "nothing was changed" in detail
    assert "storegate_hub_api_database_unavailable_total 1.0" in (await hub.client.get("/metrics")).text
    assert (await hub.client.get("/api/v1/webhooks")).json()["items"] == []
    assert (await hub.client.post("/api/v1/webhooks", json=WEBHOOK)).status_code == 201


async def test_healthz_names_a_writer_stuck_in_its_turn_and_recovers_when_it_lets_go(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.api.checks.WRITE_TURN_STUCK_S", 0.0)  # any turn held counts as stuck
    async with turn_held(hub.runtime.write_gate, writegate.RULES):
        stuck = await hub.client.get("/healthz")

    assert stuck.status_code == 503
    body = stuck.json()
    assert body["checks"]["database"] == {"ok": False, "detail": body["checks"]["database"]["detail"]}
    assert body["checks"]["database"]["detail"].endswith("write turn held by rules")
    [problem] = body["problems"]
    assert problem.startswith("the rules writer has held the database's write turn for ")
    assert problem.endswith("changes through the API are answered 503 and events wait at the gateways")
    healthy = await hub.client.get("/healthz")
    assert (healthy.status_code, healthy.json()["problems"]) == (200, [])


async def test_the_overview_names_a_writer_stuck_in_its_turn_as_healthz_does(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.api.checks.WRITE_TURN_STUCK_S", 0.0)
    async with turn_held(hub.runtime.write_gate, writegate.INGEST):
        page = (await hub.client.get("/")).text

    assert '<p class="error" role="alert">the ingest writer has held the database' in page
    assert "write turn for " in page

    async def cleared() -> bool:  # the overview checks at most once a second for all its readers
        return "the ingest writer has held" not in (await hub.client.get("/")).text

    await eventually(cleared, timeout=5, what="the overview to stop naming the writer")


async def test_the_turn_lasts_as_long_as_the_writer_holds_it() -> None:
    now = [100.0]
    gate = WriteGate(serialise=True, clock=lambda: now[0])
    assert gate.held_for() is None
    async with gate.turn(writegate.INGEST):
        now[0] = 172.5
        assert gate.held_for() == 72.5
    assert gate.held_for() is None
