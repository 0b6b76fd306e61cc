"""The reports page on a running hub: a form per report listing only the reader's stores, in the reader's
language; its downloads go on to the report's route, where the gate checks the store again; a store-scoped
reader can neither download nor read another store's summary, and rolls up only its own."""

from __future__ import annotations

import io
import re
from datetime import date
from typing import Any

import pypdf
from sqlalchemy import insert

from hub.catalog.models import StoreProfile
from storegate import wire
from tests.hub.conftest import RunningHub
from tests.hub.console.conftest import add_operator, browser

TAIPEI = "台北信義店"
SHANGHAI = "上海静安店"


def profile(store_id: str, name: str, timezone: str, currency: str, region: str) -> dict[str, Any]:
    return {"store_id": store_id, "name": name, "timezone": timezone, "currency": currency, "opening_hours": {},
            "region": region, "updated_at": wire.utc_now()}  # fmt: skip


async def add_stores(hub: RunningHub) -> None:
    async with hub.runtime.sessions() as session:
        await session.execute(
            insert(StoreProfile),
            [
                profile("taipei", TAIPEI, "Asia/Taipei", "TWD", "north"),
                profile("shanghai", SHANGHAI, "Asia/Shanghai", "CNY", "east"),
            ],
        )
        await session.commit()


async def test_the_reports_page_offers_each_report_for_the_readers_stores(hub: RunningHub) -> None:
    await add_stores(hub)
    await add_operator(hub, "mei", "viewer", store_ids=("taipei",))
    async with browser(hub, "mei") as mei:
        page = await mei.get("/reports")
        assert page.status_code == 200, page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        html = page.text
        for kind in ("daily-summary", "cold-chain", "chain-summary", "cold-chain-bundle", "sales", "alerts"):
            assert f'id="report-form-{kind}"' in html
        assert f'<option value="taipei">{TAIPEI} (taipei)</option>' in html
        assert "shanghai" not in html
        assert SHANGHAI not in html
        assert "<script>" not in html
        assert "style=" not in html

        # Until she chooses one, her browser's language decides.
        chinese = (await mei.get("/reports", headers={"accept-language": "zh-TW"})).text
        assert "門市每日摘要" in chinese
        assert "下載" in chinese


async def test_a_download_goes_on_to_the_report_and_keeps_to_the_readers_stores(hub: RunningHub) -> None:
    await add_stores(hub)
    await add_operator(hub, "mei", "viewer", store_ids=("taipei",))
    today = date.today().isoformat()
    async with browser(hub, "mei") as mei:
        form = {"kind": "daily-summary", "store_id": "taipei", "day": today, "format": "pdf"}
        step = await mei.get("/reports/download", params=form)
        assert step.status_code == 303
        assert step.headers["location"] == f"/api/v1/reports/daily-summary/taipei/{today}?format=pdf"
        pdf = await mei.get(step.headers["location"])
        assert pdf.status_code == 200, pdf.text
        text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
        assert TAIPEI in text

        cold = await mei.get("/reports/download", params={**form, "kind": "cold-chain", "format": "csv-bom"})
        assert cold.headers["location"] == f"/api/v1/reports/cold-chain/taipei/{today}.csv?bom=true"
        assert (await mei.get(cold.headers["location"])).content.startswith("\ufeff".encode())

        # Another store: refused at the download, at the report itself, and left out of the roll-up.
        other = await mei.get("/reports/download", params={**form, "store_id": "shanghai"})
        assert other.status_code == 403
        direct = await mei.get(f"/api/v1/reports/daily-summary/shanghai/{today}")
        assert direct.status_code == 403
        assert direct.json()["detail"] == "store 'shanghai' is outside your access"
        assert (await mei.get(f"/api/v1/reports/cold-chain/shanghai/{today}.xlsx")).status_code == 403
        roll_up = await mei.get(f"/api/v1/reports/chain-summary/{today}")
        assert roll_up.status_code == 200, roll_up.text
        assert [s["store_id"] for s in roll_up.json()["stores"]] == ["taipei"]
        bundle = await mei.get(f"/api/v1/reports/cold-chain-bundle/{today}", params={"store_id": "shanghai"})
        assert bundle.status_code == 403

        # Forged choices are refused in words.
        wrong = await mei.get("/reports/download", params={**form, "kind": "cold-chain-bundle", "format": "pdf"})
        assert wrong.status_code == 422
        assert re.search("cold-chain-bundle is not made as pdf", wrong.text)
        unknown_kind = await mei.get("/reports/download", params={**form, "kind": "payroll"})
        assert unknown_kind.status_code == 422
        no_store = await mei.get("/reports/download", params={**form, "store_id": ""})
        assert no_store.status_code == 422
        assert "choose the store" in no_store.text
