"""The cold-chain report of a store and local day, on SQLite and PostgreSQL: exact figures on Berlin's 25-hour
fall-back day (readings, time outside the store's range, excursions overlapping the day, local times with their
UTC offsets), CSV rows equal to the JSON, a PDF whose text holds the zone, the excursion's start and peak, and
"no readings" days, unknown stores and bad dates."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pypdf
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import ChainRule, ExcursionRow, StoreRuleOverride
from hub.catalog.models import StoreProfile
from hub.db.models import Gateway, Store, StoredEvent
from hub.domain.excursions import freezer_range
from hub.domain.rules import EnvironmentRangeRule
from hub.reports.cold_chain import CSV_COLUMNS, Limits, Sample, day_bounds, pdf_text, time_outside
from tests.hub.reports.conftest import reports_client

NOW = datetime(2025, 11, 10, 12, 0, tzinfo=UTC)
ALERT_ID = "0b6b6f4e-5b1a-4c51-9d0e-2f1f4f8d9a10"
STREAM = str(uuid.uuid4())


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the reports router and a session of this test's database."""
    async with reports_client(engine, now=lambda: NOW) as http:
        yield http


async def add(engine: AsyncEngine, table: Any, *rows: dict[str, Any]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(table), list(rows))


_seq = iter(range(1, 1_000_000))


def reading(store: str, at: str, payload: dict[str, Any], *, device: str = "probe-1") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "store_id": store,
        "gateway_id": f"gw-{store}",
        "stream": STREAM,
        "seq": next(_seq),
        "device_id": device,
        "kind": "environment.reading",
        "device_ts": utc(at),
        "received_at": utc(at),
        "payload": payload,
    }


def temperature(store: str, at: str, value: float, zone: str | None = "freezer-1") -> dict[str, Any]:
    return reading(store, at, {"quantity": "temperature", "value": value, "unit": "Cel", "zone": zone})


def excursion(started: str, ended: str, peak: float, peak_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "store_id": "berlin",
        "rule_id": "freezer",
        "zone": "freezer-1",
        "quantity": "temperature",
        "direction": "high",
        "limit_value": -18.0,
        "started_at": utc(started),
        "ended_at": utc(ended),
        "peak": peak,
        "peak_at": utc(peak_at),
        "duration_s": (utc(ended) - utc(started)).total_seconds(),
        "readings": 3,
        "gaps": 0,
        "alert_id": None,
        "recorded_at": NOW,
    } | extra


async def add_store(engine: AsyncEngine, store_id: str) -> None:
    await add(engine, Store, {"store_id": store_id, "first_seen": NOW, "last_event_at": NOW, "event_count": 0})
    await add(
        engine,
        Gateway,
        {"gateway_id": f"gw-{store_id}", "store_id": store_id, "online": True, "last_status_reason": "birth",
         "status_changed_at": NOW, "first_seen": NOW, "last_seen_at": NOW, "agent_version": "1",
         "config_hash": None, "devices": [], "last_health": None, "last_health_at": None, "enrolled_at": NOW,
         "enrolled_by": "test", "enrolment": "operator"},
    )  # fmt: skip


@pytest.fixture
async def berlin(engine: AsyncEngine) -> None:
    """Berlin's freezer on its fall-back day 2025-10-26 (00:00 is 22:00 UTC the day before, 24:00 is 23:00 UTC)."""
    await add(
        engine,
        StoreProfile,
        {"store_id": "berlin", "name": "Berlin Mitte", "timezone": "Europe/Berlin", "currency": "EUR",
         "opening_hours": {}, "updated_at": NOW},
    )  # fmt: skip
    await add_store(engine, "berlin")
    # The chain allows freezers up to -15; Berlin overrides it to -18.
    chain_rule = EnvironmentRangeRule(zone="freezer-*", high=-15.0).model_dump(mode="json")
    await add(engine, ChainRule, {"rule_id": "freezer", "definition": chain_rule, "updated_at": NOW, "updated_by": "t"})
    await add(
        engine,
        StoreRuleOverride,
        {"store_id": "berlin", "rule_id": "freezer", "changes": {"high": -18.0}, "updated_at": NOW, "updated_by": "t"},
    )
    await add(
        engine,
        StoredEvent,
        temperature("berlin", "2025-10-25 21:45", -12.0),  # 23:45 the day before: older than any reading holds
        temperature("berlin", "2025-10-25 21:55", -17.0),  # 23:55 the day before: outside, holds until 00:05
        temperature("berlin", "2025-10-25 22:05", -20.0),  # 00:05 CEST
        temperature("berlin", "2025-10-26 00:30", -16.5),  # 02:30 CEST: outside for 10 min
        temperature("berlin", "2025-10-26 00:40", -15.0),  # outside, then no reading for 50 min: held 10 min
        temperature("berlin", "2025-10-26 01:30", -19.0),  # 02:30 CET, the second 02:30 of the night
        temperature("berlin", "2025-10-26 22:55", -17.5),  # 23:55 CET: outside until midnight
        temperature("berlin", "2025-10-26 23:05", -17.0),  # 00:05 the day after
        temperature("berlin", "2025-10-26 08:00", 3.5, zone="chiller-1"),
        reading(
            "berlin", "2025-10-26 12:00", {"quantity": "humidity", "value": 40, "unit": "%RH", "zone": "freezer-1"}
        ),
        reading("berlin", "2025-10-26 10:00", {"quantity": "temperature", "value": "warm", "unit": "Cel"}),
    )
    await add(
        engine,
        ExcursionRow,
        excursion("2025-10-25 18:00", "2025-10-25 19:00", -16.0, "2025-10-25 18:30"),  # over before the day
        excursion("2025-10-25 21:00", "2025-10-25 22:10", -16.0, "2025-10-25 21:30", readings=8),
        excursion("2025-10-26 00:30", "2025-10-26 01:30", -15.0, "2025-10-26 00:40", gaps=1, alert_id=ALERT_ID),
        excursion("2025-10-26 23:10", "2025-10-26 23:40", -17.0, "2025-10-26 23:20"),  # the day after
    )


def zone(
    name: str, quantity: str, unit: str, values: list[float], first: str, last: str, **extra: Any
) -> dict[str, Any]:
    return {
        "zone": name,
        "quantity": quantity,
        "unit": unit,
        "readings": len(values),
        "minimum": min(values),
        "maximum": max(values),
        "mean": round(sum(values) / len(values), 3),
        "first_reading": first,
        "last_reading": last,
        "low_limit": None,
        "high_limit": None,
        "time_outside_s": None,
    } | extra


def excursion_out(start: str, end: str, peak: float, peak_at: str, duration_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "zone": "freezer-1",
        "quantity": "temperature",
        "unit": "Cel",
        "rule_id": "freezer",
        "direction": "high",
        "limit": -18.0,
        "start": start,
        "end": end,
        "peak": peak,
        "peak_at": peak_at,
        "duration_s": duration_s,
        "readings": 3,
        "gaps": 0,
        "alert_id": None,
    } | extra


EXPECTED: dict[str, Any] = {
    "store_id": "berlin",
    "store_name": "Berlin Mitte",
    "date": "2025-10-26",
    "timezone": "Europe/Berlin",
    "timezone_assumed": False,
    "day_start": "2025-10-26T00:00:00+02:00",
    "day_end": "2025-10-27T00:00:00+01:00",
    "until": "2025-10-27T00:00:00+01:00",
    "generated_at": "2025-11-10T12:00:00Z",
    "zones": [
        zone("chiller-1", "temperature", "Cel", [3.5], "2025-10-26T09:00:00+01:00", "2025-10-26T09:00:00+01:00"),
        zone("freezer-1", "humidity", "%RH", [40.0], "2025-10-26T13:00:00+01:00", "2025-10-26T13:00:00+01:00"),
        zone(
            "freezer-1",
            "temperature",
            "Cel",
            [-20.0, -16.5, -15.0, -19.0, -17.5],
            "2025-10-26T00:05:00+02:00",
            "2025-10-26T23:55:00+01:00",
            high_limit=-18.0,
            # 5 min held from 23:55 the day before, 10 + 10 min in the night, 5 min before midnight.
            time_outside_s=1800.0,
        ),
    ],
    "excursions": [
        excursion_out(
            "2025-10-25T23:00:00+02:00",
            "2025-10-26T00:10:00+02:00",
            -16.0,
            "2025-10-25T23:30:00+02:00",
            4200.0,
            readings=8,
        ),
        excursion_out(
            "2025-10-26T02:30:00+02:00",
            "2025-10-26T02:30:00+01:00",
            -15.0,
            "2025-10-26T02:40:00+02:00",
            3600.0,
            gaps=1,
            alert_id=ALERT_ID,
        ),
    ],
    "unreadable_readings": 1,
    "notes": [
        "left out 1 reading whose payload is not a valid reading",
        "the UTC offset changes on this day, from +02:00 to +01:00",
    ],
}


@pytest.mark.usefixtures("berlin")
async def test_the_json_report_of_a_fall_back_day(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/cold-chain/berlin/2025-10-26")
    assert response.status_code == 200, response.text
    assert response.json() == EXPECTED


def cell(value: Any) -> str:
    return "" if value is None else "true" if value is True else "false" if value is False else str(value)


@pytest.mark.usefixtures("berlin")
async def test_the_csv_has_the_rows_of_the_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/cold-chain/berlin/2025-10-26.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="cold-chain_berlin_2025-10-26.csv"'
    assert response.text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    head = {"store_id": "berlin", "date": "2025-10-26", "timezone": "Europe/Berlin"}

    def line(record: str, fields: dict[str, Any]) -> dict[str, str]:
        return (
            {column: "" for column in CSV_COLUMNS} | {"record": record} | head | {k: cell(v) for k, v in fields.items()}
        )

    assert rows == [
        *(line("zone", z) for z in EXPECTED["zones"]),
        *(line("excursion", e) for e in EXPECTED["excursions"]),
        *(line("note", {"note": n}) for n in EXPECTED["notes"]),
    ]
    assert rows[2]["time_outside_s"] == "1800.0"
    assert rows[4]["start"] == "2025-10-26T02:30:00+02:00"


def pdf_text_of(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages)


@pytest.mark.usefixtures("berlin")
async def test_the_pdf_shows_zones_and_excursions_in_local_time(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/cold-chain/berlin/2025-10-26.pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="cold-chain_berlin_2025-10-26.pdf"'
    assert response.content.startswith(b"%PDF-")
    text = pdf_text_of(response.content)
    for expected in (
        "Cold-chain report: Berlin Mitte (berlin)",
        "Date: 2025-10-26",
        "Time zone: Europe/Berlin, UTC +02:00 at the start of the day, +01:00 at its end",
        "Zone freezer-1",
        "Zone chiller-1",
        "-17.6 °C",  # the freezer's mean
        "0:30:00",  # its time outside the range
        "2025-10-26 02:30:00 +02:00",  # the excursion's start
        "2025-10-26 02:30:00 +01:00",  # and its end, an hour later on the same wall clock
        "-15 °C",  # its peak
        "2025-10-26 02:40:00 +02:00",  # when
        "1:00:00",  # how long
        ALERT_ID,  # the alert it raised, on one line
        "at most -18 °C",  # the store's range, its override of the chain's -15
    ):
        assert expected in text, f"{expected!r} not in the PDF's text:\n{text}"


@pytest.mark.usefixtures("berlin")
async def test_a_day_without_data_says_no_readings(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/cold-chain/berlin/2025-10-28")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["zones"], body["excursions"], body["notes"]) == ([], [], ["no readings on 2025-10-28"])
    assert body["day_start"] == "2025-10-28T00:00:00+01:00"
    rows = list(
        csv.DictReader(io.StringIO((await client.get("/api/v1/reports/cold-chain/berlin/2025-10-28.csv")).text))
    )
    assert [(r["record"], r["note"]) for r in rows] == [("note", "no readings on 2025-10-28")]
    pdf = await client.get("/api/v1/reports/cold-chain/berlin/2025-10-28.pdf")
    text = pdf_text_of(pdf.content)
    assert "No readings on this day." in text
    assert "No excursion overlaps this day." in text


async def test_a_store_without_profile_is_reported_in_utc(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    await add_store(engine, "lonely")
    await add(engine, StoredEvent, temperature("lonely", "2025-10-26 23:30", -21.0, zone=None))
    body = (await client.get("/api/v1/reports/cold-chain/lonely/2025-10-26")).json()
    assert (body["timezone"], body["timezone_assumed"], body["store_name"]) == ("UTC", True, None)
    assert body["day_start"] == "2025-10-26T00:00:00Z"
    assert body["notes"] == ["store lonely has no store profile: times are in UTC"]
    # A reading without a zone is reported under its device; no rule covers it.
    assert [(z["zone"], z["readings"], z["last_reading"], z["time_outside_s"]) for z in body["zones"]] == [
        ("probe-1", 1, "2025-10-26T23:30:00Z", None)
    ]
    pdf = await client.get("/api/v1/reports/cold-chain/lonely/2025-10-26.pdf")
    assert "Time zone: UTC (assumed: the store has no profile)" in pdf_text_of(pdf.content)


async def test_unknown_store_is_404_and_bad_date_is_422(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    for suffix in ("", ".csv", ".pdf"):
        response = await client.get(f"/api/v1/reports/cold-chain/nobody/2025-10-26{suffix}")
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "no store 'nobody': it has no profile and has sent nothing"
        bad = await client.get(f"/api/v1/reports/cold-chain/nobody/2025-02-30{suffix}")
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"][0]["loc"] == ["path", "day"]


# --------------------------------------------------------------------------- the pure parts


def test_time_outside_holds_a_reading_until_the_next_or_the_gap_limit() -> None:
    limits = Limits(ranges=(freezer_range("freezer-1", max_gap_s=600),))
    start, end = utc("2025-01-01 00:00"), utc("2025-01-02 00:00")
    samples = [
        Sample(utc("2024-12-31 23:58"), -10.0),  # held into the day until the next reading: 1 minute
        Sample(utc("2025-01-01 00:01"), -20.0),
        Sample(utc("2025-01-01 06:00"), -17.0),  # then nothing for an hour: 10 minutes
        Sample(utc("2025-01-01 07:00"), -17.9),  # 1 minute until the next
        Sample(utc("2025-01-01 07:01"), -18.0),  # at the limit is inside
        Sample(utc("2025-01-01 23:55"), -1.0),  # 5 minutes until midnight
    ]
    assert time_outside(samples, limits, start=start, end=end) == (1 + 10 + 1 + 5) * 60
    assert time_outside([], limits, start=start, end=end) == 0.0


def test_pdf_text_stays_within_latin_1() -> None:
    # An en dash and typographic quotes become plain ones; Polish letters outside Latin-1 become "?".
    assert pdf_text("-18 °C in Kraków \u2013 Łódź \u201ccold\u201d") == '-18 °C in Kraków - ?ód? "cold"'
    assert pdf_text("Łódź").encode("latin-1") == b"?\xf3d?"


def test_a_fall_back_day_lasts_25_hours() -> None:
    start, end = day_bounds(date(2025, 10, 26), ZoneInfo("Europe/Berlin"))
    assert (start.isoformat(), end.isoformat()) == ("2025-10-26T00:00:00+02:00", "2025-10-27T00:00:00+01:00")
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)
