#!/usr/bin/env python3
"""The footfall report's cost (issue 17): what the dashboard pays at every refresh, per store and chain-wide.

Loads a day of K stores through the hub's own unit of work (``store_messages`` with ``HubOperations``, as the
consumer does): per store an entrance camera's counts for every minute of a 12-hour day and the checkout scans of
``--baskets`` customers at four tills (``--items`` scans 3 s apart, 60-120 s between customers), then times
``footfall_report`` for the day over every store and for one store, each ``--repeat`` times (the best is
printed), and checks that it counts every basket and every visitor.

Not a test: it prints figures; docs/reports.md records them with this command. SQLite in a temporary
directory unless ``--database-url`` names another (an empty PostgreSQL database, say).

Usage: .venv/bin/python bench/footfall_report.py [--stores 50] [--baskets 300] [--items 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from pydantic import JsonValue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.db.engine import create_engine, session_factory  # noqa: E402 - after the path is set
from hub.db.migrate import upgrade_to_head  # noqa: E402
from hub.footfall.queries import footfall_report  # noqa: E402
from hub.ingest.classify import BatchMessage  # noqa: E402
from hub.ingest.operations import HubOperations  # noqa: E402
from hub.ingest.unit import store_messages  # noqa: E402
from hub.reports.queries import ReportFilter  # noqa: E402
from storegate import wire  # noqa: E402

OPENS: Final = datetime(2025, 11, 5, 8, 0, tzinfo=UTC)  # a Wednesday; the stores have no profile: UTC
OPEN_MINUTES: Final = 12 * 60
TILLS: Final = 4
SCAN_PACE_S: Final = 3
BATCH: Final = 1000
BASKET_GAP_S: Final = 60.0


def store_day(store_id: str, *, baskets: int, items: int, rng: random.Random) -> tuple[list[wire.Event], int]:
    """A store's events of the day (camera minutes, then scans), and how many people entered."""
    stream = uuid.uuid4()
    seqs = itertools.count(1)

    def event(kind: str, device_id: str, at: datetime, payload: dict[str, JsonValue]) -> wire.Event:
        return wire.Event(
            event_id=uuid.uuid4(),
            store_id=store_id,
            gateway_id="gw-1",
            stream=stream,
            seq=next(seqs),
            device_id=device_id,
            kind=kind,
            ts=at,
            payload=payload,
        )

    events: list[wire.Event] = []
    visitors = 0
    for minute in range(OPEN_MINUTES):
        start = OPENS + timedelta(minutes=minute)
        entered = rng.randint(0, 6)
        visitors += entered
        counts: dict[str, JsonValue] = {
            "line": "entrance",
            "period_start": start.isoformat(),
            "period_s": 60,
            "entered": entered,
            "exited": rng.randint(0, 6),
        }
        events.append(event("camera.footfall", "entrance-cam", start + timedelta(seconds=60), counts))
    free_at = [OPENS] * TILLS
    for customer in range(baskets):
        till = customer % TILLS
        first = free_at[till] + timedelta(seconds=rng.randint(60, 120))
        for item in range(items):
            scan: dict[str, JsonValue] = {"code": f"SKU-{item}", "symbology": "code128", "mode": "checkout"}
            events.append(event("scan.sale", f"till-{till}", first + timedelta(seconds=SCAN_PACE_S * item), scan))
        free_at[till] = first + timedelta(seconds=SCAN_PACE_S * (items - 1))
    return events, visitors


async def load(url: str, *, stores: int, baskets: int, items: int) -> int:
    """Store the day of every store through the unit of work; the visitors of all of them."""
    await upgrade_to_head(url)
    engine = create_engine(url)
    operations = HubOperations(engine=engine)
    await operations.warm_up()
    rng = random.Random(17)
    visitors = 0
    try:
        for n in range(stores):
            events, entered = store_day(f"store-{n:04d}", baskets=baskets, items=items, rng=rng)
            visitors += entered
            for start in range(0, len(events), BATCH):
                chunk = events[start : start + BATCH]
                received = max(e.ts for e in chunk)
                batch = wire.EventBatch(store_id=chunk[0].store_id, gateway_id="gw-1", sent_at=received, events=chunk)
                async with operations.unit(), session_factory(engine)() as session, session.begin():
                    result = await store_messages(
                        session,
                        [BatchMessage(batch, received)],
                        now=received,
                        rejected_keep=100,
                        operations=operations,
                        accept_unknown_gateways=True,
                    )
                for outcome in result.operations:
                    operations.committed(outcome)
    finally:
        await engine.dispose()
    return visitors


async def measure(url: str, *, stores: int, baskets: int, repeat: int, visitors: int) -> None:
    """Time the day's report over every store and over one; check its totals."""
    engine = create_engine(url)
    day = OPENS.date()
    try:
        for label, store_id in (("every store", None), ("one store", "store-0000")):
            scope = ReportFilter(first_day=day, last_day=day, store_id=store_id)
            best = float("inf")
            for _ in range(repeat):
                async with session_factory(engine)() as session:
                    started = time.perf_counter()
                    report = await footfall_report(session, scope, basket_gap_s=BASKET_GAP_S)
                    best = min(best, time.perf_counter() - started)
            counted = sum(day_total.transactions for day_total in report.days)
            seen = sum(day_total.visitors or 0 for day_total in report.days)
            expected = (baskets * stores, visitors) if store_id is None else (baskets, None)
            assert counted == expected[0], f"{label}: {counted} transactions, expected {expected[0]}"
            assert expected[1] is None or seen == expected[1], f"{label}: {seen} visitors, expected {expected[1]}"
            print(f"{label}: {best * 1000:.0f} ms (best of {repeat}); {counted:,} transactions, {seen:,} visitors")
    finally:
        await engine.dispose()


def main() -> None:
    """Parse the arguments, load the day, time the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--baskets", type=int, default=300, help="customers per store and day")
    parser.add_argument("--items", type=int, default=8, help="scans per basket")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{folder}/footfall-bench.sqlite3"
        started = time.perf_counter()
        visitors = asyncio.run(load(url, stores=args.stores, baskets=args.baskets, items=args.items))
        events = args.stores * (OPEN_MINUTES + args.baskets * args.items)
        print(f"loaded {args.stores} stores, {events:,} events in {time.perf_counter() - started:.1f} s")
        asyncio.run(measure(url, stores=args.stores, baskets=args.baskets, repeat=args.repeat, visitors=visitors))


if __name__ == "__main__":
    main()
