"""Events applied in the ingest transaction: ledger, stock, shelf levels, restock tasks, rules and alerts.

Each test drives :func:`hub.ingest.unit.store_messages` -- the consumer's unit of work -- with a
:class:`hub.ingest.operations.HubOperations`, on SQLite and on PostgreSQL, and reads back the tables.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.alerts_db import acknowledge, resolve
from hub.alerting.models import AlertHistoryRow, AlertRow, ChainRule, ExcursionRow, NotificationRow
from hub.api.checks import check_operations
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.commands.sender import publish_pending
from hub.db.engine import session_factory
from hub.db.models import OutgoingCommand, StoredEvent
from hub.domain import ledger
from hub.domain.alerts import AlertTransitionError
from hub.ingest.classify import BatchMessage, ResultMessage, StatusMessage
from hub.ingest.operations import HubOperations
from hub.ingest.unit import store_messages
from hub.inventory.api import task_out
from hub.inventory.apply import place
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel, ShrinkRecord, StockPosition, UnplacedEvent
from storegate import wire

STORE = "store-0001"
GATEWAY = "gw-1"
# A Saturday in March 2025, 12:00 in London (UTC+0): the store is open 08:00-20:00.
NOON = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
GTIN_A = "04006381333931"

RULES: dict[str, dict[str, Any]] = {
    "door-held-open": {"kind": "door_held_open", "grace_s": 300, "escalate_after_s": [60]},
    "after-hours-motion": {"kind": "after_hours_motion", "staff_margin_s": 0},
    "shelf-sweep": {"kind": "shelf_sweep", "min_items": 6, "window_s": 30},
    "gateway-offline": {"kind": "gateway_offline", "grace_s": 300},
    "shrink": {"kind": "shrink_over_threshold", "max_units": 2, "max_value": None},
    "freezers": {"kind": "environment_range", "zone": "freezer-*", "high": -18, "alarm_after_s": 600},
    "device-unplugged": {"kind": "device_unplugged", "grace_s": 120},
}


@dataclass
class Store:
    """A store's catalog in the database, and a gateway feeding it events through the unit of work."""

    engine: AsyncEngine
    operations: HubOperations
    stream: uuid.UUID = field(default_factory=uuid.uuid4)
    seqs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    now: datetime = NOON

    def event(self, kind: str, payload: dict[str, Any], *, at: datetime, device_id: str = "dev-1") -> wire.Event:
        return wire.Event(
            event_id=uuid.uuid4(),
            store_id=STORE,
            gateway_id=GATEWAY,
            stream=self.stream,
            seq=next(self.seqs),
            device_id=device_id,
            kind=kind,
            ts=at,
            payload=payload,
        )

    async def send(self, *events: wire.Event, received_at: datetime | None = None) -> None:
        """Store a batch as the consumer does: one transaction, operations inside, adopted after commit.

        Received (by default) once its last event has happened, as from a gateway whose clock the hub believes.
        """
        received_at = received_at or max(self.now, *(event.ts for event in events))
        batch = wire.EventBatch(store_id=STORE, gateway_id=GATEWAY, sent_at=received_at, events=list(events))
        await self._unit([BatchMessage(batch, received_at)])

    async def result(self, command_id: str, status: str, detail: str, *, at: datetime) -> None:
        """A gateway's CommandResult for a command, recorded as the consumer does."""
        message = wire.CommandResult.model_validate(
            {
                "command_id": command_id,
                "store_id": STORE,
                "gateway_id": GATEWAY,
                "status": status,
                "detail": detail,
                "ts": at,
            }
        )
        await self._unit([ResultMessage(message, at)])

    async def status(self, online: bool, reason: str, *, at: datetime) -> None:
        message = wire.GatewayStatus(store_id=STORE, gateway_id=GATEWAY, online=online, reason=reason, ts=at)
        await self._unit([StatusMessage(message, retained=False, received_at=at)])

    async def _unit(self, items: list[Any]) -> None:
        async with self.operations.unit():
            async with session_factory(self.engine)() as session, session.begin():
                result = await store_messages(
                    session,
                    items,
                    now=self.now,
                    rejected_keep=1000,
                    operations=self.operations,
                    accept_unknown_gateways=True,
                )
            for outcome in result.operations:
                self.operations.committed(outcome)

    async def tick(self, at: datetime) -> None:
        self.now = at
        await self.operations.tick()

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        async with session_factory(self.engine)() as session:
            return list((await session.execute(select(model).where(*where))).scalars())

    async def position(self, sku: str) -> tuple[int, int, int]:
        (row,) = await self.rows(StockPosition, StockPosition.sku_id == sku)
        return row.on_hand, row.last_variance, row.variance_total


def scan(code: str, quantity: int = 1, *, mode: str = "checkout") -> dict[str, Any]:
    payload: dict[str, Any] = {"code": code, "symbology": "code128", "mode": mode, "quantity": quantity}
    if code.isdigit() and len(code) == 14:
        payload |= {"gtin": code, "symbology": "ean13"}
    return payload


def shelf(slot: int, delta: int, count: int) -> dict[str, Any]:
    return {"slot": slot, "delta": delta, "count": count, "weight_g": 100.0 * count}


def door(is_open: bool) -> dict[str, Any]:
    return {"zone": "back", "open": is_open}


@pytest.fixture
async def store(engine: AsyncEngine) -> Store:
    async with session_factory(engine)() as session, session.begin():
        await session.execute(
            insert(Sku),
            [
                {
                    "sku_id": "A",
                    "gtin": GTIN_A,
                    "name": "Biscuits",
                    "pack_size": 6,
                    "price": Decimal("1.50"),
                    "currency": "GBP",
                    "updated_at": NOON,
                },
                {
                    "sku_id": "85123A",
                    "gtin": None,
                    "name": "T-light holder",
                    "pack_size": 1,
                    "price": Decimal("2.55"),
                    "currency": "GBP",
                    "updated_at": NOON,
                },
            ],
        )
        hours = {day: ["08:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
        await session.execute(
            insert(StoreProfile).values(
                store_id=STORE,
                name="High Street",
                timezone="Europe/London",
                currency="GBP",
                opening_hours=hours,
                updated_at=NOON,
            )
        )
        await session.execute(insert(Shelf).values(store_id=STORE, shelf_id="shelf-1"))
        await session.execute(
            insert(Slot),
            [
                {
                    "store_id": STORE,
                    "shelf_id": "shelf-1",
                    "slot": 1,
                    "sku_id": "A",
                    "capacity": 10,
                    "min_quantity": 3,
                    "updated_at": NOON,
                },
                {
                    "store_id": STORE,
                    "shelf_id": "shelf-1",
                    "slot": 2,
                    "sku_id": "85123A",
                    "capacity": 12,
                    "min_quantity": 2,
                    "updated_at": NOON,
                },
            ],
        )
        await session.execute(
            insert(ChainRule),
            [{"rule_id": r, "definition": d, "updated_at": NOON, "updated_by": "test"} for r, d in RULES.items()],
        )
    feed = Store(engine=engine, operations=HubOperations(engine=engine))
    feed.operations._clock = lambda: feed.now  # ticks run at the test's time
    await feed.operations.warm_up()
    return feed


# --------------------------------------------------------------------------- inventory


async def test_scans_move_stock_and_a_count_records_the_variance(store: Store) -> None:
    t = NOON
    await store.send(
        store.event("scan.receiving", scan(GTIN_A, 24, mode="receiving"), at=t),
        store.event("scan.sale", scan(GTIN_A), at=t + timedelta(minutes=1)),
        store.event("scan.sale", scan("85123A", 2), at=t + timedelta(minutes=2)),
    )
    assert await store.position("A") == (23, 0, 0)
    assert await store.position("85123A") == (-2, 0, 0)
    await store.send(store.event("scan.count", scan(GTIN_A, 20, mode="stock_count"), at=t + timedelta(minutes=5)))
    assert await store.position("A") == (20, -3, -3)
    sales = await store.rows(LedgerRow, LedgerRow.kind == "sale")
    assert sorted((r.sku_id, r.quantity, r.unit_price) for r in sales) == [
        ("85123A", -2, Decimal("2.55")),
        ("A", -1, Decimal("1.50")),
    ]


async def test_a_replayed_batch_changes_nothing(store: Store) -> None:
    events = [
        store.event("scan.receiving", scan(GTIN_A, 10, mode="receiving"), at=NOON),
        store.event("scan.sale", scan(GTIN_A, 3), at=NOON + timedelta(seconds=30)),
    ]
    await store.send(*events)
    await store.send(*events)  # the gateway did not get the ack and sent it again
    assert await store.position("A") == (7, 0, 0)
    assert len(await store.rows(LedgerRow)) == 2


@dataclass
class RecordingLink:
    """What the command publisher hands to MQTT (paho would answer rc 0 for each queued message)."""

    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        self.published.append((topic, payload))
        return None


async def test_pick_lists_are_published_once_and_a_stale_one_expires_unsent(store: Store) -> None:
    t = NOON
    link = RecordingLink()
    sessions = session_factory(store.engine)
    # Two slots below their minimum: two tasks, two print commands, published in one round.
    await store.send(
        store.event("shelf.pick", shelf(1, -8, 2), at=t, device_id="shelf-1"),
        store.event("shelf.pick", shelf(2, -8, 1), at=t, device_id="shelf-1"),
    )
    async with sessions() as session, session.begin():
        assert await publish_pending(session, link, now=t + timedelta(minutes=1)) == 2
    async with sessions() as session, session.begin():
        assert await publish_pending(session, link, now=t + timedelta(minutes=2)) == 0  # sent once
    tasks = await store.rows(RestockTask)
    sent = {wire.decode(wire.Command, payload).command_id for _, payload in link.published}
    assert sent == {uuid.UUID(task.command_id) for task in tasks if task.command_id}
    assert {task.print_status for task in tasks} == {"sent"}
    assert {c.status for c in await store.rows(OutgoingCommand)} == {"sent"}

    # Refilled, then low again while the printer's gateway is unreachable for longer than a pick list lives.
    await store.send(store.event("shelf.put", shelf(1, 8, 10), at=t + timedelta(minutes=3), device_id="shelf-1"))
    await store.send(store.event("shelf.pick", shelf(1, -8, 2), at=t + timedelta(minutes=4), device_id="shelf-1"))
    async with sessions() as session, session.begin():
        assert await publish_pending(session, link, now=t + timedelta(hours=5)) == 0
    assert len(link.published) == 2
    (stale,) = [task for task in await store.rows(RestockTask) if task.status == "open" and task.slot == 1]
    assert (stale.print_status, stale.print_detail) == ("expired", "expired before it could be sent")


async def test_a_pick_list_goes_pending_sent_queued_printed_and_a_late_accepted_does_not_undo_it(
    store: Store,
) -> None:
    t = NOON
    sessions = session_factory(store.engine)

    async def print_state() -> tuple[str, str | None, str]:
        (task,) = await store.rows(RestockTask)
        (command,) = await store.rows(OutgoingCommand)
        out = task_out(task)  # what GET /api/v1/stores/{id}/restock-tasks serves
        return out.print_status, out.print_detail, command.status

    await store.send(store.event("shelf.pick", shelf(1, -8, 2), at=t, device_id="shelf-1"))
    assert await print_state() == ("pending", None, "pending")
    async with sessions() as session, session.begin():
        assert await publish_pending(session, RecordingLink(), now=t + timedelta(seconds=1)) == 1
    assert await print_state() == ("sent", None, "sent")
    (task,) = await store.rows(RestockTask)

    waiting = "stored on the gateway, waiting for printer receipt-printer"
    await store.result(task.command_id, "accepted", waiting, at=t + timedelta(seconds=2))
    assert await print_state() == ("queued", waiting, "accepted")
    # The printer was off for an hour; the gateway printed once it came back.
    printed = "printed on receipt-printer (attempt 2)"
    await store.result(task.command_id, "done", printed, at=t + timedelta(hours=1))
    assert await print_state() == ("printed", printed, "done")
    # The gateway published "accepted" again after a reconnect, and the broker delivered it after the "done".
    await store.result(task.command_id, "accepted", waiting, at=t + timedelta(hours=1, seconds=5))
    assert await print_state() == ("printed", printed, "done")
    # The first final result stays: a contradicting one later changes nothing either.
    await store.result(task.command_id, "failed", "paper out", at=t + timedelta(hours=2))
    assert await print_state() == ("printed", printed, "done")
    (command,) = await store.rows(OutgoingCommand)
    assert command.result_at == t + timedelta(hours=1)


async def test_a_print_job_that_expired_on_the_gateway_shows_failed_with_the_reason(store: Store) -> None:
    t = NOON
    await store.send(store.event("shelf.pick", shelf(2, -11, 1), at=t, device_id="shelf-1"))
    async with session_factory(store.engine)() as session, session.begin():
        await publish_pending(session, RecordingLink(), now=t)
    (task,) = await store.rows(RestockTask)
    await store.result(task.command_id, "accepted", "stored on the gateway", at=t)
    reason = "not printed: expired at 2025-03-01T16:00:00+00:00 waiting for receipt-printer (2 attempt(s))"
    await store.result(task.command_id, "failed", reason, at=t + timedelta(hours=4))
    (task,) = await store.rows(RestockTask)
    assert (task.print_status, task.print_detail) == ("failed", reason)


async def _from_the_ledger(store: Store, sku: str) -> tuple[int, int, int]:
    """The position the pure function computes from all the SKU's ledger rows, in time order."""
    rows = await store.rows(LedgerRow, LedgerRow.sku_id == sku)
    movements = [
        ledger.Movement(r.event_id, r.line, r.store_id, r.sku_id, ledger.MovementKind(r.kind), r.quantity, r.at)
        for r in rows
    ]
    expected = ledger.on_hand(movements)[(STORE, sku)]
    return (expected.on_hand, expected.last_variance, expected.variance_total)


async def test_movements_arriving_out_of_order_give_the_stock_of_time_order(store: Store) -> None:
    t = NOON
    early_sale = store.event("scan.sale", scan(GTIN_A, 2), at=t + timedelta(minutes=1))
    await store.send(
        store.event("scan.receiving", scan(GTIN_A, 10, mode="receiving"), at=t),
        store.event("scan.count", scan(GTIN_A, 9, mode="stock_count"), at=t + timedelta(minutes=2)),
        store.event("scan.sale", scan(GTIN_A, 1), at=t + timedelta(minutes=3)),
    )
    assert await store.position("A") == (8, -1, -1)
    await store.send(early_sale)  # a sale before the count, delivered after a gateway outage
    assert await store.position("A") == await _from_the_ledger(store, "A")
    assert await store.position("A") == (8, 1, 1)  # the count found 9 where 8 were expected

    # Late again, but after the count: a delta that adds to the position whatever the order.
    await store.send(store.event("scan.sale", scan(GTIN_A, 3), at=t + timedelta(minutes=2, seconds=30)))
    assert await store.position("A") == await _from_the_ledger(store, "A")
    assert await store.position("A") == (5, 1, 1)


async def test_events_placed_while_inserted_are_narrowed_to_those_the_insert_stored(store: Store) -> None:
    events = [
        store.event("scan.sale", scan(GTIN_A, 2), at=NOON),
        store.event("scan.sale", scan("99999"), at=NOON),
        store.event("shelf.pick", shelf(1, -2, 4), at=NOON, device_id="shelf-1"),
    ]
    async with session_factory(store.engine)() as session:
        prepared = await store.operations.prepare(session, now=NOON)
    prepared.place(events, [str(event.event_id) for event in events])  # the ids as the event log hands them over
    assert prepared.placed_of(events) == place(events, prepared.catalog)
    for stored in (events[:1], events[1:2], events[1:], []):  # another writer stored the others first
        assert prepared.placed_of(stored) == place(stored, prepared.catalog)


async def test_an_event_that_cannot_be_placed_is_kept_with_its_reason(store: Store) -> None:
    unknown = store.event("scan.sale", scan("99999"), at=NOON)
    empty_slot = store.event("shelf.pick", shelf(7, -1, 3), at=NOON, device_id="shelf-1")
    await store.send(unknown, empty_slot)
    reasons = {r.event_id: r.reason for r in await store.rows(UnplacedEvent)}
    assert reasons == {
        str(unknown.event_id): "code '99999' is not in the catalog",
        str(empty_slot.event_id): "slot 7 of shelf-1 holds no SKU in the planogram",
    }
    assert await store.rows(LedgerRow) == []


async def test_a_slot_below_its_minimum_opens_a_task_with_a_print_command_and_closes_when_refilled(
    store: Store,
) -> None:
    t = NOON
    await store.send(store.event("shelf.pick", shelf(1, -2, 4), at=t, device_id="shelf-1"))
    assert await store.rows(RestockTask) == []
    await store.send(store.event("shelf.pick", shelf(1, -2, 2), at=t + timedelta(seconds=10), device_id="shelf-1"))
    (task,) = await store.rows(RestockTask)
    assert (task.status, task.level_at_open, task.quantity, task.sku_id, task.print_status) == (
        "open",
        2,
        8,
        "A",
        "pending",
    )
    (command,) = await store.rows(OutgoingCommand)
    assert (command.command_id, command.gateway_id, command.device_id, command.name) == (
        task.command_id,
        GATEWAY,
        "receipt-printer",
        "print",
    )
    assert command.args["quantity"] == 8
    assert "BRING 8" in command.args["lines"]
    # Another pick while the task is open opens nothing more; a put of 3 (level 5) is not yet refilled.
    await store.send(store.event("shelf.pick", shelf(1, -1, 1), at=t + timedelta(seconds=20), device_id="shelf-1"))
    await store.send(store.event("shelf.put", shelf(1, 4, 5), at=t + timedelta(seconds=30), device_id="shelf-1"))
    assert [r.status for r in await store.rows(RestockTask)] == ["open"]
    await store.send(store.event("shelf.put", shelf(1, 4, 9), at=t + timedelta(seconds=40), device_id="shelf-1"))
    (task,) = await store.rows(RestockTask)
    assert (task.status, task.level_at_close, task.open_key) == ("closed", 9, None)
    (level,) = await store.rows(ShelfLevel, ShelfLevel.slot == 1)
    assert (level.quantity, level.sku_id) == (9, "A")
    # Below the minimum again: a new task.
    await store.send(store.event("shelf.pick", shelf(1, -7, 2), at=t + timedelta(seconds=50), device_id="shelf-1"))
    assert sorted(r.status for r in await store.rows(RestockTask)) == ["closed", "open"]


async def test_a_late_shelf_report_does_not_replace_a_newer_level(store: Store) -> None:
    await store.send(
        store.event("shelf.stock", {"slot": 2, "count": 9, "weight_g": 900.0}, at=NOON, device_id="shelf-1")
    )
    await store.send(
        store.event(
            "shelf.stock",
            {"slot": 2, "count": 11, "weight_g": 1100.0},
            at=NOON - timedelta(minutes=5),
            device_id="shelf-1",
        )
    )
    (level,) = await store.rows(ShelfLevel)
    assert level.quantity == 9


async def test_a_shelf_report_from_a_clock_years_ahead_does_not_hold_the_level(store: Store) -> None:
    """Applied at its receipt, not at 2045: the next true report still replaces it; the row keeps what was sent."""
    ahead = store.event(
        "shelf.stock",
        {"slot": 2, "count": 11, "weight_g": 1100.0},
        at=NOON + timedelta(days=365 * 20),
        device_id="shelf-1",
    )
    await store.send(ahead, received_at=store.now)
    store.now = NOON + timedelta(minutes=1)
    await store.send(
        store.event("shelf.stock", {"slot": 2, "count": 9, "weight_g": 900.0}, at=store.now, device_id="shelf-1")
    )
    (level,) = await store.rows(ShelfLevel)
    assert (level.quantity, level.at) == (9, store.now)
    (row,) = await store.rows(StoredEvent, StoredEvent.event_id == str(ahead.event_id))
    assert (row.device_ts, row.clock_issue) == (ahead.ts, "ahead_of_hub")


# --------------------------------------------------------------------------- rules and alerts


async def alerts(store: Store) -> list[tuple[str, str, str, str]]:
    rows = await store.rows(AlertRow)
    return sorted((r.rule_id, f"{r.subject_kind}:{r.subject_id}", r.status, r.severity) for r in rows)


async def test_a_door_held_open_alarms_after_its_grace_escalates_and_resolves_itself_when_closed(
    store: Store,
) -> None:
    opened = store.event("door.opened", door(True), at=NOON, device_id="door-1")
    await store.send(opened)
    await store.tick(NOON + timedelta(seconds=299))
    assert await alerts(store) == []
    await store.tick(NOON + timedelta(seconds=301))
    assert await alerts(store) == [("door-held-open", "door:door-1/back", "open", "warning")]
    await store.tick(NOON + timedelta(seconds=400))  # 60 s unacknowledged: escalated once
    (row,) = await store.rows(AlertRow)
    assert row.escalation_level == 1
    assert row.evidence == [str(opened.event_id)]
    await store.send(store.event("door.closed", door(False), at=NOON + timedelta(seconds=500), device_id="door-1"))
    assert await alerts(store) == [("door-held-open", "door:door-1/back", "resolved", "warning")]
    history = await store.rows(AlertHistoryRow, AlertHistoryRow.alert_id == row.alert_id)
    assert [(h.action, h.actor, h.level) for h in history] == [
        ("opened", "system", None),
        ("escalated", "system", 1),
        ("resolved", "system", None),
    ]
    notices = await store.rows(NotificationRow, NotificationRow.alert_id == row.alert_id)
    assert [n.event for n in notices] == ["alert.opened", "alert.escalated", "alert.resolved"]


async def test_after_hours_motion_carries_the_camera_snapshot(store: Store) -> None:
    night = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    await store.send(
        store.event(
            "camera.snapshot",
            {"snapshot_ref": "snap/cam-1/2330.jpg"},
            at=night - timedelta(seconds=20),
            device_id="cam-1",
        ),
        store.event("motion.detected", {}, at=night, device_id="pir-1"),
    )
    (row,) = await store.rows(AlertRow)
    assert (row.rule_id, row.category, row.severity, row.snapshot_ref) == (
        "after-hours-motion",
        "security",
        "critical",
        "snap/cam-1/2330.jpg",
    )
    # Daytime motion is no alarm.
    await store.send(store.event("motion.detected", {}, at=NOON, device_id="pir-1"))
    assert len(await store.rows(AlertRow)) == 1


async def test_a_snapshot_arriving_after_the_alert_is_attached_to_it(store: Store) -> None:
    night = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    await store.send(store.event("motion.detected", {}, at=night, device_id="pir-1"))
    (row,) = await store.rows(AlertRow)
    assert row.snapshot_ref is None
    await store.send(
        store.event(
            "camera.snapshot", {"snapshot_ref": "snap/late.jpg"}, at=night + timedelta(seconds=5), device_id="cam-1"
        )
    )
    (row,) = await store.rows(AlertRow)
    assert row.snapshot_ref == "snap/late.jpg"


async def test_a_shelf_sweep_is_one_critical_alert_and_repeats_fold_into_it(store: Store) -> None:
    picks = [
        store.event("shelf.pick", shelf(2, -1, 11 - i), at=NOON + timedelta(seconds=3 * i), device_id="shelf-1")
        for i in range(12)
    ]
    await store.send(*picks[:6])
    await store.send(*picks[6:])
    (row,) = await store.rows(AlertRow)
    assert (row.rule_id, row.subject_id, row.count, row.status) == ("shelf-sweep", "shelf-1/2", 2, "open")


async def test_a_gateway_offline_past_its_grace_alarms_and_clears_when_back(store: Store) -> None:
    await store.status(True, "birth", at=NOON)
    await store.status(False, "lost", at=NOON + timedelta(seconds=10))
    await store.tick(NOON + timedelta(seconds=200))
    assert await alerts(store) == []
    await store.tick(NOON + timedelta(seconds=311))
    assert await alerts(store) == [("gateway-offline", "gateway:gw-1", "open", "critical")]
    await store.status(True, "birth", at=NOON + timedelta(seconds=400))
    assert await alerts(store) == [("gateway-offline", "gateway:gw-1", "resolved", "critical")]


async def test_a_freezer_excursion_is_recorded_with_its_alert(store: Store) -> None:
    values = [-20.0, -15.0, -12.5, -14.0, -16.0, -19.0]
    await store.send(
        *[
            store.event(
                "environment.reading",
                {"quantity": "temperature", "value": v, "unit": "Cel", "zone": "freezer-1"},
                at=NOON + timedelta(minutes=5 * i),
                device_id="freezer-1-probe",
            )
            for i, v in enumerate(values)
        ]
    )
    (row,) = await store.rows(AlertRow)
    assert (row.rule_id, row.subject_id, row.status, row.category) == (
        "freezers",
        "freezer-1",
        "resolved",
        "environment",
    )
    (excursion,) = await store.rows(ExcursionRow)
    assert (excursion.zone, excursion.direction, excursion.peak, excursion.duration_s, excursion.alert_id) == (
        "freezer-1",
        "high",
        -12.5,
        20 * 60.0,
        row.alert_id,
    )
    assert (excursion.started_at, excursion.ended_at) == (NOON + timedelta(minutes=5), NOON + timedelta(minutes=25))


async def test_picks_not_sold_within_the_window_become_shrink_and_an_alert_over_threshold(store: Store) -> None:
    store.operations.engine.settings = type(store.operations.engine.settings)(shrink_window_s=600)
    store.operations.engine._tracker = type(store.operations.engine._tracker)(window_s=600)
    await store.send(
        store.event("shelf.pick", shelf(1, -2, 8), at=NOON, device_id="shelf-1"),
        store.event("shelf.pick", shelf(1, -2, 6), at=NOON + timedelta(seconds=60), device_id="shelf-1"),
        store.event("scan.sale", scan(GTIN_A, 1), at=NOON + timedelta(seconds=120)),
    )
    await store.tick(NOON + timedelta(seconds=599))
    assert await store.rows(ShrinkRecord) == []
    await store.tick(NOON + timedelta(seconds=700))
    (record,) = await store.rows(ShrinkRecord)
    assert (record.sku_id, record.quantity, record.value) == ("A", 3, Decimal("4.50"))
    assert await alerts(store) == [("shrink", "sku:A", "open", "warning")]


async def test_people_acknowledge_and_resolve_and_the_history_is_only_appended(store: Store) -> None:
    await store.send(store.event("motion.detected", {}, at=datetime(2025, 3, 1, 23, 0, tzinfo=UTC), device_id="pir"))
    (row,) = await store.rows(AlertRow)
    sessions = session_factory(store.engine)
    later = datetime(2025, 3, 1, 23, 5, tzinfo=UTC)
    async with sessions() as session, session.begin():
        await acknowledge(session, row.alert_id, by="ops.anna", at=later, note="calling the keyholder")
    async with sessions() as session, session.begin():
        with pytest.raises(AlertTransitionError, match=r"already acknowledged by ops\.anna"):
            await acknowledge(session, row.alert_id, by="ops.ben", at=later, note=None)
    async with sessions() as session, session.begin():
        await resolve(session, row.alert_id, by="ops.anna", at=later + timedelta(minutes=20), note="cleaner, badge 12")
    (row,) = await store.rows(AlertRow)
    assert (row.status, row.acknowledged_by, row.resolved_by, row.resolution_note, row.active_key) == (
        "resolved",
        "ops.anna",
        "ops.anna",
        "cleaner, badge 12",
        None,
    )
    history = await store.rows(AlertHistoryRow, AlertHistoryRow.alert_id == row.alert_id)
    assert [(h.action, h.actor, h.note) for h in history] == [
        ("opened", "system", None),
        ("acknowledged", "ops.anna", "calling the keyholder"),
        ("resolved", "ops.anna", "cleaner, badge 12"),
    ]
    # Motion again: a new alert, the resolved one stays as it was.
    await store.send(store.event("motion.detected", {}, at=datetime(2025, 3, 2, 0, 0, tzinfo=UTC), device_id="pir"))
    async with sessions() as session:
        statuses = (await session.execute(select(AlertRow.status).order_by(AlertRow.opened_at))).scalars().all()
        assert statuses == ["resolved", "open"]
        assert (await session.execute(select(func.count()).select_from(AlertHistoryRow))).scalar_one() == 4


async def test_rule_states_survive_a_restart_through_the_warm_up(store: Store, engine: AsyncEngine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store.now = now
    await store.send(store.event("door.opened", door(True), at=now - timedelta(seconds=200), device_id="door-1"))
    restarted = HubOperations(engine=engine)
    restarted._clock = lambda: now + timedelta(seconds=120)
    await restarted.warm_up()
    store.operations = restarted
    await restarted.tick()
    assert await alerts(store) == [("door-held-open", "door:door-1/back", "open", "warning")]


async def test_a_store_draining_a_backlog_ticks_at_its_own_events_time(store: Store) -> None:
    """Three hours of a gateway's backlog: a door that was closed a minute after opening must not alarm."""
    store.now = NOON + timedelta(hours=3)
    await store.send(store.event("door.opened", door(True), at=NOON, device_id="door-1"))
    await store.tick(NOON + timedelta(hours=3, seconds=5))  # the backlog's next batch is still on its way
    assert await alerts(store) == []
    await store.send(store.event("door.closed", door(False), at=NOON + timedelta(seconds=60), device_id="door-1"))
    await store.tick(NOON + timedelta(hours=3, minutes=5))
    assert await alerts(store) == []
    # A door that stays open does alarm once the store has caught up (no event for longer than the quiet time).
    store.now = NOON + timedelta(hours=3, minutes=6)
    await store.send(
        store.event("door.opened", door(True), at=NOON + timedelta(hours=3, minutes=6), device_id="door-1")
    )
    await store.tick(NOON + timedelta(hours=3, minutes=12))
    assert await alerts(store) == [("door-held-open", "door:door-1/back", "open", "warning")]


def sample(operations: HubOperations, name: str, **labels: str) -> float:
    value = operations.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_what_the_hub_made_of_events_is_counted_and_its_health_said_in_words(store: Store) -> None:
    operations = store.operations
    await store.send(
        store.event("scan.receiving", scan(GTIN_A, 5, mode="receiving"), at=NOON),
        store.event("scan.sale", scan("unknown-code"), at=NOON),
        store.event("shelf.pick", shelf(1, -8, 2), at=NOON, device_id="shelf-1"),
        store.event("motion.detected", {}, at=datetime(2025, 3, 1, 23, 0, tzinfo=UTC), device_id="pir"),
    )
    assert sample(operations, "storegate_hub_ledger_movements_total", kind="receipt") == 1
    assert sample(operations, "storegate_hub_ledger_movements_total", kind="shelf_pick") == 1
    assert sample(operations, "storegate_hub_unplaced_events_total") == 1
    assert sample(operations, "storegate_hub_restock_tasks_total", action="opened") == 1
    assert sample(operations, "storegate_hub_alert_signals_total", effect="opened") == 2  # motion; a sweep (8 at once)
    # Not started: no ticker, and health says so.
    assert check_operations(operations).problem == (
        "the rules ticker is not running: grace periods, shrink and escalations stall"
    )
    operations.start()
    try:
        assert check_operations(operations).ok
        operations.last_tick_error = "OperationalError: database is locked"
        assert check_operations(operations).problem == (
            "the rules ticker fails (OperationalError: database is locked): grace periods, shrink and escalations "
            "are late"
        )
    finally:
        await operations.stop()
    assert check_operations(None).ok


async def test_a_clear_from_a_gateway_behind_another_resolves_the_alert_instead_of_failing_the_unit(
    store: Store,
) -> None:
    """Two gateways in one store: the till's camera event makes the printer's grace run out before the back
    gateway's older batch says the printer came back; the alert resolves, and the events are all kept."""
    await store.send(
        store.event("device.detached", {"reason": "unplugged", "address": "/dev/usb/lp0"}, at=NOON, device_id="printer")
    )
    front = wire.Event(
        event_id=uuid.uuid4(),
        store_id=STORE,
        gateway_id="gw-front",
        stream=uuid.uuid4(),
        seq=1,
        device_id="cam-1",
        kind="camera.motion",
        ts=NOON + timedelta(seconds=200),
        payload={},
    )
    batch = wire.EventBatch(store_id=STORE, gateway_id="gw-front", sent_at=store.now, events=[front])
    await store._unit([BatchMessage(batch, store.now)])
    assert await alerts(store) == [("device-unplugged", "device:printer", "open", "warning")]
    back = store.event(
        "device.attached",
        {"address": "/dev/usb/lp0", "profile": "escpos"},
        at=NOON + timedelta(seconds=100),
        device_id="printer",
    )
    await store.send(back)
    assert await alerts(store) == [("device-unplugged", "device:printer", "resolved", "warning")]
    (row,) = await store.rows(AlertRow)
    assert row.resolved_at == row.opened_at == NOON + timedelta(seconds=120)
    assert store.operations.failures == 0
    async with session_factory(store.engine)() as session:
        stored = (await session.execute(select(func.count()).select_from(StoredEvent))).scalar_one()
    assert stored == 3
