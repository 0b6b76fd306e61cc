#!/usr/bin/env python3
"""The cost of reports as files (issue 16): one store's daily summary as PDF, the chain roll-up, the bundle.

Writes K stores (Chinese names, Asia/Taipei) with a day of readings every ``--every-min`` minutes in ``--zones``
freezer zones straight into the tables, then times, each ``--repeat`` times (the best is printed): the daily
summary of one store as PDF, the chain roll-up as JSON-ready data and as Excel, and the cold-chain bundle of
every store (a PDF per store and a workbook, in a ZIP). The PDF font is the system's CJK font
(:func:`hub.reports.formats.find_cjk_font`).

Not a test: it prints figures; docs/reports.md records them with this command. SQLite in a temporary directory
unless ``--database-url`` names another (an empty PostgreSQL database, say).

Usage: .venv/bin/python bench/report_files.py [--stores 50] [--zones 4] [--every-min 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402 - after the path is set

from hub.alerting.models import ChainRule  # noqa: E402
from hub.catalog.models import StoreProfile  # noqa: E402
from hub.db.engine import create_engine, session_factory  # noqa: E402
from hub.db.migrate import upgrade_to_head  # noqa: E402
from hub.db.models import Gateway, Store, StoredEvent  # noqa: E402
from hub.domain.rules import EnvironmentRangeRule  # noqa: E402
from hub.reports import documents, summary  # noqa: E402
from hub.reports.documents import ReportScope  # noqa: E402
from hub.reports.formats import find_cjk_font  # noqa: E402
from hub.settings import HubSettings  # noqa: E402

DAY: Final = date(2025, 11, 10)
START: Final = datetime(2025, 11, 9, 16, 0, tzinfo=UTC)  # midnight in Taipei
NOW: Final = datetime(2025, 11, 11, 0, 0, tzinfo=UTC)  # the day is over
BATCH: Final = 5000


def _store_rows(store_id: str, n: int, now: datetime) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    profile = {"store_id": store_id, "name": f"台北第{n}分店", "timezone": "Asia/Taipei", "currency": "TWD",
               "opening_hours": {}, "region": f"region-{n % 5}", "updated_at": now}  # fmt: skip
    store = {"store_id": store_id, "first_seen": now, "last_event_at": now, "event_count": 0}
    gateway = {"gateway_id": f"gw-{store_id}", "store_id": store_id, "online": True, "last_status_reason": "birth",
               "status_changed_at": now, "first_seen": now, "last_seen_at": now, "agent_version": "1",
               "config_hash": None, "devices": [], "last_health": None, "last_health_at": None, "enrolled_at": now,
               "enrolled_by": "bench", "enrolment": "operator"}  # fmt: skip
    return profile, store, gateway


async def load(url: str, *, stores: int, zones: int, every_min: int) -> int:
    """Write the stores and their readings; how many readings."""
    await upgrade_to_head(url)
    engine = create_engine(url)
    readings = 0
    try:
        ids = [f"store-{n:04d}" for n in range(stores)]
        rows = [_store_rows(store_id, n, NOW) for n, store_id in enumerate(ids)]
        freezer = EnvironmentRangeRule(zone="freezer-*", high=-18.0).model_dump(mode="json")
        async with engine.begin() as connection:
            await connection.execute(insert(StoreProfile), [r[0] for r in rows])
            await connection.execute(insert(Store), [r[1] for r in rows])
            await connection.execute(insert(Gateway), [r[2] for r in rows])
            await connection.execute(
                insert(ChainRule), [{"rule_id": "freezer", "definition": freezer, "updated_at": NOW, "updated_by": "b"}]
            )
        seq = 0
        for n, store_id in enumerate(ids):
            events = []
            for zone in range(zones):
                for minute in range(0, 24 * 60, every_min):
                    seq += 1
                    at = START + timedelta(minutes=minute)
                    # Each store's freezer 3 is warm for its first hour: an excursion to report.
                    value = -12.0 if zone == 3 and minute < 60 + n % 30 else -20.0
                    events.append(
                        {
                            "event_id": str(uuid.uuid4()),
                            "store_id": store_id,
                            "gateway_id": f"gw-{store_id}",
                            "stream": "bench",
                            "seq": seq,
                            "device_id": f"probe-{zone}",
                            "kind": "environment.reading",
                            "device_ts": at,
                            "received_at": at,
                            "payload": {
                                "quantity": "temperature",
                                "value": value,
                                "unit": "Cel",
                                "zone": f"freezer-{zone}",
                            },
                        }
                    )
            async with engine.begin() as connection:
                for first in range(0, len(events), BATCH):
                    await connection.execute(insert(StoredEvent), events[first : first + BATCH])
            readings += len(events)
    finally:
        await engine.dispose()
    return readings


async def best_of(repeat: int, run: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The best time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await run()
        best = min(best, time.perf_counter() - began)
    return best, result


async def measure(url: str, *, stores: int, repeat: int) -> None:
    engine = create_engine(url)
    settings = HubSettings()
    sessions = session_factory(engine)
    try:
        async with sessions() as session:

            async def daily_pdf() -> documents.ReportDocument:
                scope = ReportScope.day(DAY, store_id="store-0000")
                return await documents.DOCUMENTS[("daily-summary", "pdf")](session, scope, now=NOW, settings=settings)

            async def roll_up() -> summary.ChainSummary:
                return await documents.load_chain_summary(session, ReportScope.day(DAY), now=NOW)

            async def roll_up_xlsx() -> documents.ReportDocument:
                scope = ReportScope.day(DAY)
                return await documents.DOCUMENTS[("chain-summary", "xlsx")](session, scope, now=NOW, settings=settings)

            async def bundle() -> documents.ReportDocument:
                return await documents.cold_chain_bundle(session, ReportScope.day(DAY), now=NOW, settings=settings)

            seconds, pdf = await best_of(repeat, daily_pdf)
            print(f"daily summary of one store, PDF: {seconds * 1000:.0f} ms, {len(pdf.body):,} bytes")
            seconds, chain = await best_of(repeat, roll_up)
            assert len(chain.stores) == stores, "every store is rolled up"
            print(f"chain roll-up of {stores} stores: {seconds:.2f} s ({seconds / stores * 1000:.0f} ms a store)")
            seconds, book = await best_of(repeat, roll_up_xlsx)
            print(f"chain roll-up as Excel: {seconds:.2f} s, {len(book.body):,} bytes")
            seconds, archive = await best_of(repeat, bundle)
            print(f"cold-chain bundle of {stores} stores: {seconds:.2f} s, {len(archive.body):,} bytes")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--zones", type=int, default=4)
    parser.add_argument("--every-min", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    print(f"PDF font: {find_cjk_font(None) or 'none found'}")
    with tempfile.TemporaryDirectory(prefix="report-files-") as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'hub.sqlite3'}"
        readings = asyncio.run(load(url, stores=args.stores, zones=args.zones, every_min=args.every_min))
        print(f"{args.stores} stores, {readings:,} readings of {DAY}")
        asyncio.run(measure(url, stores=args.stores, repeat=args.repeat))


if __name__ == "__main__":
    main()
