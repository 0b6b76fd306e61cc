"""Shrink evidence: a shelf sweep carries the still of the camera the planogram names for that slot, the nearest
to the pick, and never another camera's; a slot without a named camera keeps the store-wide nearest still."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import AlertRow
from hub.alerting.monitoring import MonitoringEngine, MonitoringSettings
from hub.alerting.rules_db import RulesInForce
from hub.db.engine import session_factory
from hub.domain.rules import EventObservation, Observation, RuleSet, ShelfSweepRule, ShrinkRule, ShrinkTotal
from hub.inventory.catalog_view import CatalogSnapshot, SlotPlan
from hub.inventory.models import LedgerRow, ShrinkRecord
from hub.snapshots.models import SnapshotRow
from storegate.wire import EventKind

STORE = "store-0001"
T = datetime(2025, 3, 1, 23, 0, tzinfo=UTC)
CATALOG = CatalogSnapshot(
    slots={
        (STORE, "shelf-7", 3): SlotPlan("A", 10, 2, "cam-aisle"),
        (STORE, "shelf-7", 4): SlotPlan("B", 10, 2, None),
    }
)


def engine_with_sweep_rule() -> MonitoringEngine:
    """An engine whose only rule raises when three items leave one slot within 30 s."""
    engine = MonitoringEngine(MonitoringSettings(snapshot_window_s=120))
    engine.set_rules(
        RulesInForce(
            chain=RuleSet(rules={"sweep": ShelfSweepRule(min_items=3, window_s=30)}), overrides={}, fingerprint="t"
        )
    )
    return engine


def observed(device_id: str, kind: str, at: datetime, payload: dict[str, Any]) -> EventObservation:
    return EventObservation(
        event_id=str(uuid.uuid4()), store_id=STORE, device_id=device_id, kind=kind, at=at, payload=payload
    )


def sweep(slot: int) -> list[EventObservation]:
    """Three single picks from a slot of shelf-7, the last at T."""
    return [
        observed(
            "shelf-7",
            EventKind.SHELF_PICK,
            T - timedelta(seconds=2 - i),
            {"slot": slot, "delta": -1, "count": 7 - i, "weight_g": 700.0 - 100 * i},
        )
        for i in range(3)
    ]


def still(camera: str, seconds: float, ref: str) -> EventObservation:
    return observed(
        camera, EventKind.CAMERA_SNAPSHOT, T + timedelta(seconds=seconds), {"snapshot_ref": ref, "reason": "motion"}
    )


def test_a_sweep_takes_the_named_cameras_still_nearest_to_the_pick() -> None:
    engine = engine_with_sweep_rule()
    stills = [still("cam-door", 0.5, "door-near"), still("cam-aisle", -90, "aisle-old"), still("cam-aisle", 3, "aisle")]
    evaluation = engine.evaluate(CATALOG, [*stills, *sweep(3)], now=T)
    [signal] = evaluation.signals
    assert signal.subject.id == "shelf-7/3"
    assert signal.snapshot_ref == "aisle", "the planogram's camera, although the door camera's still is nearer"


def test_a_slot_without_a_named_camera_takes_the_nearest_still_of_the_store() -> None:
    engine = engine_with_sweep_rule()
    stills = [still("cam-door", 0.5, "door-near"), still("cam-aisle", 3, "aisle")]
    [signal] = engine.evaluate(CATALOG, [*stills, *sweep(4)], now=T).signals
    assert signal.snapshot_ref == "door-near"


def test_no_still_of_the_named_camera_means_no_evidence_rather_than_anothers() -> None:
    engine = engine_with_sweep_rule()
    [signal] = engine.evaluate(CATALOG, [still("cam-door", 0.5, "door-near"), *sweep(3)], now=T).signals
    assert signal.snapshot_ref is None


async def test_the_named_cameras_still_arriving_after_the_alert_is_attached_then(engine: AsyncEngine) -> None:
    monitoring = engine_with_sweep_rule()
    sessions = session_factory(engine)
    units = [[still("cam-door", 0.5, "door-near"), *sweep(3)], [still("cam-aisle", 1.5, "aisle-pick")]]
    for unit in units:
        evaluation = monitoring.evaluate(CATALOG, unit, now=T)
        async with sessions() as session:
            await monitoring.write(session, evaluation, now=T)
            await session.commit()
        monitoring.adopt(evaluation)
        async with sessions() as session:
            [alert] = (await session.scalars(select(AlertRow).where(AlertRow.rule_id == "sweep"))).all()
        if unit is units[0]:
            assert alert.snapshot_ref is None, "the door camera's still is not evidence of the shelf"
    assert alert.snapshot_ref == "aisle-pick"


async def test_a_shrink_alert_carries_the_still_of_its_picks_camera_taken_at_the_pick(engine: AsyncEngine) -> None:
    """A shrink alert comes a shrink window after the pick: its evidence is the slot camera's still of the pick,
    among those the hub holds, not a still near the alert's own time."""
    monitoring = MonitoringEngine(MonitoringSettings(snapshot_window_s=120))
    monitoring.set_rules(
        RulesInForce(
            chain=RuleSet(rules={"shrink": ShrinkRule(max_units=1), "sweep": ShelfSweepRule()}),
            overrides={},
            fingerprint="t",
        )
    )
    picked_at, alert_at = T, T + timedelta(hours=1)
    sessions = session_factory(engine)
    async with sessions() as session:
        for sku, slot, event_id in (("A", 3, "pick-a"), ("B", 4, "pick-b")):
            session.add(
                LedgerRow(
                    event_id=event_id,
                    line=0,
                    store_id=STORE,
                    sku_id=sku,
                    kind="shelf_pick",
                    quantity=-2,
                    at=picked_at,
                    shelf_id="shelf-7",
                    slot=slot,
                    recorded_at=picked_at,
                )
            )
            session.add(
                ShrinkRecord(
                    store_id=STORE,
                    sku_id=sku,
                    quantity=2,
                    value=Decimal("3.00"),
                    picked_at=picked_at,
                    expired_at=alert_at,
                    event_ids=[event_id],
                )
            )
        for ref, camera, taken_at in (
            ("aisle-at-pick", "cam-aisle", picked_at + timedelta(seconds=2)),
            ("aisle-later", "cam-aisle", alert_at),
            ("door-at-pick", "cam-door", picked_at),
        ):
            session.add(
                SnapshotRow(
                    store_id=STORE,
                    ref=ref,
                    gateway_id="gw-1",
                    device_id=camera,
                    taken_at=taken_at,
                    received_at=taken_at,
                    size=1000,
                    path=f"{STORE}/{ref}.jpg",
                    expires_at=taken_at + timedelta(days=30),
                )
            )
        await session.commit()
    fresh = [still("cam-door", 3600, "door-near-alert")]  # what the store-wide correlation would take
    observations: list[Observation] = [
        *fresh,
        *(ShrinkTotal(store_id=STORE, sku=sku, units=2, value=Decimal("3.00"), at=alert_at) for sku in ("A", "B")),
    ]
    evaluation = monitoring.evaluate(CATALOG, observations, now=alert_at)
    async with sessions() as session:
        await monitoring.write(session, evaluation, now=alert_at)
        await session.commit()
        alerts = {a.subject_id: a.snapshot_ref for a in await session.scalars(select(AlertRow))}
    assert alerts == {"A": "aisle-at-pick", "B": "door-near-alert"}, "slot 4 names no camera: as before"
