"""The basket rule on real baskets: the invoices of a real retailer's day (UCI Online Retail, shared data
``retail/onlineretail_2010-12-01_to_02.csv``) rung up at three checkout scanners, through the ingest, on SQLite
and PostgreSQL. The SQL counts what :func:`hub.domain.footfall.basket_starts` counts, and with the store's pause
between customers longer than the basket gap every invoice is one transaction.

The data has each invoice's minute and lines, not the till's timing, so the timing is the test's: an invoice
goes to the till free first, no earlier than its own minute; each line is one scan, ``SCAN_PACE`` after the one
before; the next customer's first scan is ``PAYMENT_PAUSE`` after the last (paying and bagging).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from device_drivers.simulated.climate import shared_data_dir
from hub.db.engine import session_factory
from hub.domain.footfall import basket_starts
from hub.footfall.queries import footfall_report
from hub.reports.queries import ReportFilter
from storegate import wire
from tests.hub.footfall.conftest import Feed

RETAIL_FILE: Final = Path("retail") / "onlineretail_2010-12-01_to_02.csv"
DAY: Final = "2010-12-01"
# Replayed on a recent day of the same weekday: the hub does not believe a device time before 2020.
REPLAYED_ON: Final = date(2025, 11, 5)
TILLS: Final = 3
SCAN_PACE: Final = timedelta(seconds=3)
PAYMENT_PAUSE: Final = timedelta(seconds=75)
_PRODUCT: Final = re.compile(r"^\d{5}[A-Za-z]{0,2}$")  # postage, bank charges and manual lines are not scanned


def real_invoices() -> list[tuple[datetime, list[str]]]:
    """The day's invoices in time order: (minute, stock codes of its product lines); no cancellations, returns."""
    folder = shared_data_dir()
    path = None if folder is None else folder / RETAIL_FILE
    if path is None or not path.is_file():
        pytest.fail(f"shared data file {RETAIL_FILE} is missing: set STOREGATE_SHARED_DATA or restore it")
    lines: dict[str, list[str]] = defaultdict(list)
    minute: dict[str, datetime] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            number = row["InvoiceNo"]
            if not row["InvoiceDate"].startswith(DAY) or number.startswith("C") or float(row["Quantity"]) <= 0:
                continue
            if _PRODUCT.match(row["StockCode"]):
                lines[number].append(row["StockCode"])
                at = datetime.fromisoformat(row["InvoiceDate"])
                minute[number] = datetime.combine(REPLAYED_ON, at.time(), UTC)
    return sorted(((minute[number], codes) for number, codes in lines.items()), key=lambda item: item[0])


def rung_up(invoices: list[tuple[datetime, list[str]]]) -> dict[str, list[tuple[datetime, str]]]:
    """Each till's scans (time, code): every invoice at the till free first, no earlier than its minute."""
    free_at = {f"till-{n}": datetime.min.replace(tzinfo=UTC) for n in range(1, TILLS + 1)}
    scans: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for at, codes in invoices:
        till = min(free_at, key=lambda name: (free_at[name], name))
        start = max(at, free_at[till])
        scans[till] += [(start + n * SCAN_PACE, code) for n, code in enumerate(codes)]
        free_at[till] = start + (len(codes) - 1) * SCAN_PACE + PAYMENT_PAUSE
    return scans


async def test_real_invoices_rung_up_at_three_tills_are_one_transaction_each(feed: Feed) -> None:
    invoices = real_invoices()
    assert len(invoices) == 136  # the day's invoices with product lines, as the data holds them
    scans = rung_up(invoices)
    events: list[wire.Event] = []
    for till, till_scans in scans.items():
        events += [feed.scan("london", at, scanner=till, code=code) for at, code in till_scans]
    for start in range(0, len(events), 500):  # a gateway's batches, as the agent sends them
        await feed.send(*events[start : start + 500])

    scope = ReportFilter(first_day=REPLAYED_ON, last_day=REPLAYED_ON)
    async with session_factory(feed.engine)() as session:
        at_60 = await footfall_report(session, scope, basket_gap_s=60)
        at_120 = await footfall_report(session, scope, basket_gap_s=120)
    # The store pauses 75 s between customers: with a 60 s gap, each invoice is one transaction.
    assert sum(h.transactions for h in at_60.hours) == len(invoices)
    # With a gap longer than the pause, customers at a till run together; the SQL still counts as the rule does.
    by_rule = sum(len(basket_starts([at for at, _ in s], gap_s=120)) for s in scans.values())
    assert sum(h.transactions for h in at_120.hours) == by_rule < len(invoices)
    # Per hour too (a store without a profile: UTC).
    expected_hours: dict[int, int] = defaultdict(int)
    for till_scans in scans.values():
        for at in basket_starts([at for at, _ in till_scans], gap_s=60):
            expected_hours[at.hour] += 1
    assert {h.key.local_hour: h.transactions for h in at_60.hours} == dict(expected_hours)


async def test_a_pause_of_exactly_the_gap_starts_the_next_basket(feed: Feed) -> None:
    # SQLite's julianday never carries an instant exactly: pauses are compared in whole milliseconds.
    first = datetime(2025, 11, 5, 9, 0, 0, 123456, tzinfo=UTC)
    times = [
        first,
        first + timedelta(seconds=60),  # exactly the gap: the next customer
        first + timedelta(seconds=119, microseconds=998_000),  # 59.998 s later: the same customer
        first + timedelta(seconds=179, microseconds=998_400),  # 60.0004 s later: whole ms 60000, the next
    ]
    await feed.send(*(feed.scan("london", at, code="X") for at in times))
    assert basket_starts(times, gap_s=60) == [times[0], times[1], times[3]]
    async with session_factory(feed.engine)() as session:
        report = await footfall_report(
            session, ReportFilter(first_day=first.date(), last_day=first.date()), basket_gap_s=60
        )
    assert [h.transactions for h in report.hours] == [3]
