"""A feed of events through the hub's real unit of work (:func:`hub.ingest.unit.store_messages` with
:class:`hub.ingest.operations.HubOperations`), and an HTTP client on the footfall report, per database."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.api.deps import get_now, get_session
from hub.app import _validation_error
from hub.catalog.models import Sku, StoreProfile
from hub.db.engine import session_factory
from hub.footfall import api
from hub.footfall.models import FootfallCount
from hub.ingest.classify import BatchMessage
from hub.ingest.operations import HubOperations
from hub.ingest.unit import store_messages
from storegate import wire
from tests.hub.conftest import act_as

NOW = datetime(2025, 11, 10, 12, 0, tzinfo=UTC)
GTIN = "04006381333931"
BASKET_GAP_S = 60.0


def utc(text: str) -> datetime:
    """``2025-10-26 00:30`` (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def footfall(line: str, start: datetime, entered: int, exited: int, period_s: int = 60) -> dict[str, Any]:
    """A ``camera.footfall`` payload."""
    return {
        "line": line,
        "period_start": start.isoformat(),
        "period_s": period_s,
        "entered": entered,
        "exited": exited,
    }


def sale_scan(code: str = GTIN) -> dict[str, Any]:
    """A ``scan.sale`` payload of one unit: a GTIN (the catalog's SKU by default), or any other code as Code 128."""
    if code.isdigit() and len(code) == 14:
        return {"code": code, "symbology": "ean13", "mode": "checkout", "quantity": 1, "gtin": code}
    return {"code": code, "symbology": "code128", "mode": "checkout", "quantity": 1}


@dataclass
class Feed:
    """Gateways of several stores sending batches through the consumer's unit of work."""

    engine: AsyncEngine
    operations: HubOperations
    streams: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    seqs: dict[tuple[str, str], itertools.count[int]] = field(default_factory=dict)

    def event(
        self,
        store_id: str,
        kind: str,
        payload: dict[str, Any],
        *,
        at: datetime,
        device_id: str,
        gateway_id: str = "gw-1",
    ) -> wire.Event:
        key = (store_id, gateway_id)
        stream = self.streams.setdefault(key, uuid.uuid4())
        seq = next(self.seqs.setdefault(key, itertools.count(1)))
        return wire.Event(
            event_id=uuid.uuid4(),
            store_id=store_id,
            gateway_id=gateway_id,
            stream=stream,
            seq=seq,
            device_id=device_id,
            kind=kind,
            ts=at,
            payload=payload,
        )

    def counts(
        self,
        store_id: str,
        start: datetime,
        entered: int,
        exited: int,
        *,
        camera: str = "entrance-cam",
        line: str = "entrance",
        gateway_id: str = "gw-1",
        period_s: int = 60,
    ) -> wire.Event:
        """A camera's footfall event, stamped when its period ends."""
        return self.event(
            store_id, "camera.footfall", footfall(line, start, entered, exited, period_s),
            at=start + timedelta(seconds=period_s), device_id=camera, gateway_id=gateway_id,
        )  # fmt: skip

    def scan(self, store_id: str, at: datetime, *, scanner: str = "till-1", code: str = GTIN) -> wire.Event:
        """One checkout scan."""
        return self.event(store_id, "scan.sale", sale_scan(code), at=at, device_id=scanner)

    async def send(self, *events: wire.Event, received_at: datetime | None = None) -> None:
        """Each gateway's events as one batch, stored and applied in one unit as the consumer does."""
        items: list[Any] = []
        for (store_id, gateway_id), group in itertools.groupby(
            sorted(events, key=lambda e: (e.store_id, e.gateway_id, e.seq)), key=lambda e: (e.store_id, e.gateway_id)
        ):
            batch_events = list(group)
            at = received_at or max(NOW, *(e.ts for e in batch_events))
            batch = wire.EventBatch(store_id=store_id, gateway_id=gateway_id, sent_at=at, events=batch_events)
            items.append(BatchMessage(batch, at))
        async with self.operations.unit():
            async with session_factory(self.engine)() as session, session.begin():
                result = await store_messages(
                    session, items, now=NOW, rejected_keep=100, operations=self.operations,
                    accept_unknown_gateways=True,
                )  # fmt: skip
            for outcome in result.operations:
                self.operations.committed(outcome)

    async def footfall_rows(self) -> list[FootfallCount]:
        async with session_factory(self.engine)() as session:
            query = select(FootfallCount).order_by(
                FootfallCount.store_id, FootfallCount.device_id, FootfallCount.line, FootfallCount.period_start
            )
            return list((await session.execute(query)).scalars())


def profile(store_id: str, timezone: str, currency: str) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "name": store_id.title(),
        "timezone": timezone,
        "currency": currency,
        "opening_hours": {},
        "updated_at": NOW,
    }


@pytest.fixture
async def feed(engine: AsyncEngine) -> Feed:
    """Stores in Berlin and New York (a third store, ``nowhere``, has no profile), and a SKU to sell."""
    async with session_factory(engine)() as session, session.begin():
        await session.execute(
            insert(StoreProfile),
            [profile("berlin", "Europe/Berlin", "EUR"), profile("nyc", "America/New_York", "USD")],
        )
        await session.execute(
            insert(Sku).values(
                sku_id="milk", gtin=GTIN, name="Milk 1l", pack_size=1, price=Decimal("1.29"), currency="EUR",
                updated_at=NOW,
            )
        )  # fmt: skip
    operations = HubOperations(engine=engine, clock=lambda: NOW)
    await operations.warm_up()
    return Feed(engine=engine, operations=operations)


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the footfall router, this test's database and a basket gap of 60 s."""
    sessions = session_factory(engine)
    app = FastAPI()
    app.include_router(api.router)
    app.add_exception_handler(RequestValidationError, _validation_error)

    async def session() -> AsyncIterator[Any]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_now] = lambda: NOW
    app.dependency_overrides[api.basket_gap_s] = lambda: BASKET_GAP_S
    act_as(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http
