"""Footfall events applied by the ingest's unit of work, on SQLite and PostgreSQL: a row per camera, line and
minute; replays and re-applying change nothing; a new line is a new row; a period stamped by a clock the hub
does not believe is not counted; bad counts never reach the hub."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from hub.db.engine import session_factory
from hub.db.models import StoredEvent
from hub.footfall import apply as footfall_apply
from hub.footfall.apply import apply_footfall
from hub.inventory.models import LedgerRow
from storegate import wire
from tests.hub.footfall.conftest import NOW, Feed, footfall, utc


async def test_counts_are_kept_per_camera_line_and_minute(feed: Feed) -> None:
    minute = utc("2025-11-10 09:00")
    await feed.send(
        feed.counts("berlin", minute, 4, 1),
        feed.counts("berlin", minute + timedelta(minutes=1), 2, 3),
        feed.counts("berlin", minute, 5, 0, camera="side-door-cam"),
        # A line the hub never saw before (the same camera, a second line drawn in its config) is just a new line.
        feed.counts("berlin", minute, 1, 1, line="staff-door"),
    )
    rows = [(r.device_id, r.line, r.period_start, r.entered, r.exited) for r in await feed.footfall_rows()]
    assert rows == [
        ("entrance-cam", "entrance", minute, 4, 1),
        ("entrance-cam", "entrance", minute + timedelta(minutes=1), 2, 3),
        ("entrance-cam", "staff-door", minute, 1, 1),
        ("side-door-cam", "entrance", minute, 5, 0),
    ]


async def test_a_replayed_event_or_a_reapplied_one_counts_once(feed: Feed) -> None:
    minute = utc("2025-11-10 09:00")
    first = feed.counts("berlin", minute, 7, 2)
    await feed.send(first)
    # The gateway sends the same batch again (its ack was lost): the event log stores it once.
    await feed.send(first)
    # And applying the same events again (a rebuild from the event log) sets the same row to the same counts.
    async with session_factory(feed.engine)() as session, session.begin():
        outcome = await apply_footfall(session, [first, first], now=NOW)
    assert outcome.periods == 1
    rows = await feed.footfall_rows()
    assert [(r.entered, r.exited, r.event_id) for r in rows] == [(7, 2, str(first.event_id))]
    assert (
        feed.operations.metrics.registry.get_sample_value(
            "storegate_hub_footfall_periods_total", {"outcome": "counted"}
        )
        == 1
    )


async def test_a_period_stated_again_replaces_the_first_statement(feed: Feed) -> None:
    minute = utc("2025-11-10 09:00")
    await feed.send(feed.counts("berlin", minute, 3, 0))
    restated = feed.counts("berlin", minute, 5, 1)
    await feed.send(restated)
    rows = await feed.footfall_rows()
    assert [(r.entered, r.exited, r.event_id) for r in rows] == [(5, 1, str(restated.event_id))]


async def test_a_period_from_a_clock_the_hub_does_not_believe_is_not_counted(feed: Feed) -> None:
    # A gateway whose clock never got set (1970): the hub applies the event at its receipt, so the period the
    # camera stated with that clock lies nowhere near it. The event is stored; its counts are not.
    in_1970 = utc("1970-01-01 00:05")
    event = feed.event(
        "berlin", "camera.footfall", footfall("entrance", in_1970, 9, 9), at=in_1970 + timedelta(minutes=1),
        device_id="entrance-cam",
    )  # fmt: skip
    good = feed.counts("berlin", utc("2025-11-10 11:58"), 2, 0)
    await feed.send(event, good, received_at=NOW)
    assert [(r.entered, r.event_id) for r in await feed.footfall_rows()] == [(2, str(good.event_id))]
    assert (
        feed.operations.metrics.registry.get_sample_value(
            "storegate_hub_footfall_periods_total", {"outcome": "implausible_time"}
        )
        == 1
    )


@pytest.mark.parametrize(
    "bad",
    [{"entered": -1}, {"exited": -3}, {"entered": 2**31}, {"period_s": 0}, {"line": ""}],
)
def test_the_wire_contract_refuses_impossible_counts(bad: dict[str, int | str]) -> None:
    payload = footfall("entrance", utc("2025-11-10 09:00"), 1, 1) | bad
    with pytest.raises(ValidationError):
        wire.check_payload("camera.footfall", payload)


async def test_a_bug_in_counting_costs_neither_the_events_nor_the_sale(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(events: object, *, now: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(footfall_apply, "footfall_rows", broken)
    counts = feed.counts("berlin", utc("2025-11-10 09:00"), 4, 1)
    await feed.send(counts, feed.scan("berlin", utc("2025-11-10 09:00:30")))
    assert await feed.footfall_rows() == []
    assert feed.operations.failures == 1
    async with session_factory(feed.engine)() as session:
        stored = set(await session.scalars(select(StoredEvent.event_id)))
        sales = list(await session.scalars(select(LedgerRow.quantity).where(LedgerRow.kind == "sale")))
    assert str(counts.event_id) in stored
    assert len(stored) == 2
    assert sales == [-1]
