"""A gateway clock decades off: its events are stored, flagged and counted, and the lists go by receipt time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.ingest.clock import ClockIssue
from hub.metrics import HubMetrics
from storegate import wire
from storegate.mqtt import Incoming
from tests.hub.conftest import RunningHub, reading

STREAM = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
OTHER_STREAM = uuid.UUID("00000000-0000-4000-8000-0000000000c2")


def events_of(*events: wire.Event, sent_at: datetime | None = None) -> Incoming:
    first = events[0]
    batch = wire.EventBatch(
        store_id=first.store_id,
        gateway_id=first.gateway_id,
        sent_at=sent_at or wire.utc_now(),
        events=list(events),
    )
    return Incoming(wire.topic(first.store_id, first.gateway_id, wire.Channel.EVENTS), wire.encode(batch), 1, False)


async def listed(hub: RunningHub, **params: Any) -> dict[str, Any]:
    response = await hub.client.get("/api/v1/events", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def seed(hub: RunningHub) -> dict[str, wire.Event]:
    """Three units, one after the other: a sane event; a 1970 one, a future one, one buffered two days, and a
    batch whose sent_at is an hour ahead (another gateway); a sane one again."""
    now = wire.utc_now()
    by_name = {
        "first": reading(stream=STREAM, seq=1, ts=now - timedelta(minutes=1)),
        "in_1970": reading(stream=STREAM, seq=2, ts=datetime(1970, 1, 1, 0, 3, tzinfo=UTC)),
        "future": reading(stream=STREAM, seq=3, ts=now + timedelta(days=365 * 20)),
        "buffered": reading(stream=STREAM, seq=4, ts=now - timedelta(days=2)),
        "sent_ahead": reading(gateway_id="gw-2", stream=OTHER_STREAM, seq=1, ts=now),
        "last": reading(stream=STREAM, seq=5, ts=now),
    }
    ingest = hub.runtime.ingestor
    await ingest.process([events_of(by_name["first"])])
    await ingest.process(
        [
            events_of(by_name["in_1970"], by_name["future"], by_name["buffered"]),
            events_of(by_name["sent_ahead"], sent_at=now + timedelta(hours=1)),
        ]
    )
    await ingest.process([events_of(by_name["last"])])
    return by_name


async def test_skewed_events_are_flagged_counted_and_listed_by_receipt(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    events = await seed(hub)
    name_of = {str(event.event_id): name for name, event in events.items()}

    page = await listed(hub)
    assert [name_of[item["event_id"]] for item in page["items"]] == [
        "last",
        "sent_ahead",
        "buffered",
        "future",
        "in_1970",
        "first",
    ]
    issues = {name_of[item["event_id"]]: item["clock_issue"] for item in page["items"]}
    assert issues == {
        "last": None,
        "sent_ahead": "gateway_clock_ahead",
        "buffered": None,
        "future": "ahead_of_hub",
        "in_1970": "before_earliest",
        "first": None,
    }

    by_device = await listed(hub, time="device")
    assert [name_of[item["event_id"]] for item in by_device["items"]] == [
        "future",
        "last",
        "sent_ahead",
        "first",
        "buffered",
        "in_1970",
    ]

    registry = hub.runtime.metrics.registry
    for gateway, issue, count in [
        ("gw-1", ClockIssue.BEFORE_EARLIEST, 1.0),
        ("gw-1", ClockIssue.AHEAD_OF_HUB, 1.0),
        ("gw-2", ClockIssue.GATEWAY_CLOCK_AHEAD, 1.0),
        ("gw-1", ClockIssue.OLDER_THAN_OUTBOX, None),
    ]:
        labels = {"store": "store-0001", "gateway": gateway, "issue": issue.value}
        assert registry.get_sample_value("storegate_hub_events_clock_suspect_total", labels) == count

    # Sent again (the Ack was lost): a duplicate is not counted twice. A new one is counted, not logged again.
    again_1970 = reading(stream=STREAM, seq=6, ts=datetime(1970, 1, 1, 0, 4, tzinfo=UTC))
    await hub.runtime.ingestor.process([events_of(events["in_1970"], again_1970)])
    labels = {"store": "store-0001", "gateway": "gw-1", "issue": "before_earliest"}
    assert registry.get_sample_value("storegate_hub_events_clock_suspect_total", labels) == 2.0
    logged = [r.getMessage() for r in caplog.records if "device_clock_suspect" in r.getMessage()]
    assert [("'gw-1'" in line, "'gw-2'" in line) for line in logged] == [(True, False), (False, True)]


def test_a_revoked_gateways_clock_series_go_with_it() -> None:
    metrics = HubMetrics()
    metrics.count_clock_suspects("store-0001", "gw-1", ClockIssue.BEFORE_EARLIEST, 3)
    labels = {"store": "store-0001", "gateway": "gw-1", "issue": "before_earliest"}
    assert metrics.registry.get_sample_value("storegate_hub_events_clock_suspect_total", labels) == 3.0
    metrics.forget_gateway("store-0001", "gw-1")
    assert metrics.registry.get_sample_value("storegate_hub_events_clock_suspect_total", labels) is None


async def test_since_and_until_bound_the_time_asked_for(hub: RunningHub) -> None:
    events = await seed(hub)
    received = {item["event_id"]: item["received_at"] for item in (await listed(hub))["items"]}
    second_unit = received[str(events["in_1970"].event_id)]

    page = await listed(hub, since=second_unit, store_id="store-0001", gateway_id="gw-1")
    assert {item["seq"] for item in page["items"]} == {2, 3, 4, 5}  # the 1970 event was received then

    page = await listed(hub, time="device", since="2000-01-01T00:00:00Z", until="2030-01-01T00:00:00Z")
    assert {item["seq"] for item in page["items"] if item["gateway_id"] == "gw-1"} == {1, 4, 5}


async def test_a_cursor_is_refused_in_the_other_order(hub: RunningHub) -> None:
    await seed(hub)
    by_device = await listed(hub, time="device", limit=2)
    assert by_device["next_cursor"]

    response = await hub.client.get("/api/v1/events", params={"limit": 2, "cursor": by_device["next_cursor"]})

    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["query", "cursor"]
    assert "time=device" in detail["msg"]
    following = await listed(hub, time="device", limit=2, cursor=by_device["next_cursor"])
    assert len(following["items"]) == 2
