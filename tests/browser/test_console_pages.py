"""The console's pages in Chromium, as ops staff and store managers use them, against the DOM contract of
docs/console.md: an alert raised by a device appears live, is acknowledged with a note and found in the audit
log; a viewer cannot acknowledge; the same on a phone; the language switch follows the operator.

The events come the real way: a gateway's batch through Mosquitto into the hub's ingest, which raises the alert
by the chain's default rule (a receipt printer out of paper raises at once).
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from hub.alerting.models import AlertRow
from tests.browser.conftest import (
    GATEWAY,
    LIVE_LOOP,
    OTHER_STORE,
    PHONE,
    PROFILES,
    STORE,
    STORE_NAME,
    VIEWPORTS,
    Browsers,
    ServedHub,
    horizontal_overflow,
    post_from_page,
)
from tests.conftest import eventually

NOTE = "paper roll replaced"

pytestmark = LIVE_LOOP


async def alert_row(page: Page, alert_id: str) -> None:
    """Wait until the alerts table shows ``alert_id``."""
    await expect(page.locator(f"table#alerts tbody tr#alert-{alert_id}")).to_be_visible()


async def current(hub: ServedHub, alert_id: str) -> AlertRow:
    return next(a for a in await hub.alerts() if a.alert_id == alert_id)


@pytest.mark.parametrize(
    ("viewport", "hub_database_url"),
    [("desktop", "sqlite"), ("phone", "sqlite"), ("desktop", "postgresql")],
    indirect=["hub_database_url"],
)
async def test_an_alert_from_a_device_appears_live_is_acknowledged_and_audited(
    browsers: Browsers, hub: ServedHub, viewport: str
) -> None:
    size = VIEWPORTS[viewport]
    page = await browsers.signed_in("otto", "/alerts", viewport=size)
    await expect(page.locator("table#alerts")).to_be_attached()  # empty, a phone's card table has no height
    await expect(page.locator("body")).to_have_attribute("data-live", "on")
    # A mark on this document: it is still there after the alert arrives only if the page was not reloaded.
    await page.evaluate("window.storegateTestMark = 'no reload'")

    await hub.publish_printer_out()
    alert = await hub.alert_for("receipt-printer")
    row = page.locator(f"table#alerts tbody tr#alert-{alert.alert_id}")
    await expect(row).to_be_visible()
    await expect(page.locator("table#alerts tbody tr").first).to_have_id(f"alert-{alert.alert_id}")
    await expect(row).to_have_attribute("data-severity", "warning")
    await expect(row).to_have_attribute("data-state", "open")
    await expect(row).to_have_attribute("data-store-id", STORE)
    assert await page.evaluate("window.storegateTestMark") == "no reload"
    assert await horizontal_overflow(page) <= 0

    await row.locator("input[name=note]").fill(NOTE)
    await row.locator('button[data-action="acknowledge"]').click()
    await expect(row).to_have_attribute("data-state", "acknowledged")

    async def acknowledged() -> bool:
        stored = await current(hub, alert.alert_id)
        return stored.status == "acknowledged" and stored.acknowledged_by == "otto"

    await eventually(acknowledged, timeout=10, what="the acknowledgement stored")
    await page.goto(f"/alerts/{alert.alert_id}")
    history = page.locator("#history")
    await expect(history).to_contain_text("otto")
    await expect(history).to_contain_text(NOTE)
    assert await horizontal_overflow(page) <= 0

    admin = await browsers.signed_in("ada", "/audit", viewport=size)
    entry = admin.locator(f'table#audit tr[data-actor="otto"][data-target="alert:{alert.alert_id}"]')
    await expect(entry.first).to_be_visible()
    assert await horizontal_overflow(admin) <= 0


async def test_a_viewer_sees_no_acknowledge_button_and_a_forged_one_is_refused(
    browsers: Browsers, hub: ServedHub
) -> None:
    await hub.publish_printer_out()
    alert = await hub.alert_for("receipt-printer")
    # Where the console's button sends an acknowledgement, as an ops operator's page says.
    ops = await browsers.signed_in("otto", "/alerts")
    await alert_row(ops, alert.alert_id)
    button = ops.locator(f'tr#alert-{alert.alert_id} button[data-action="acknowledge"]')
    target = await button.evaluate(
        """(b) => {
            const marked = b.closest("[hx-post]");
            if (marked) return marked.getAttribute("hx-post");
            return b.form ? new URL(b.formAction || b.form.action).pathname : null;
        }"""
    )
    assert isinstance(target, str), target
    assert target.startswith("/"), target

    viewer = await browsers.signed_in("vera", "/alerts")
    await alert_row(viewer, alert.alert_id)
    for action in ("acknowledge", "resolve"):
        await expect(viewer.locator(f'button[data-action="{action}"]')).to_have_count(0)
    await expect(viewer.locator("table#alerts input[name=note]")).to_have_count(0)
    # The viewer's own session, its own CSRF token, the console's route and the API's: refused.
    assert await post_from_page(viewer, target, {"note": "forged"}) == 403
    api = f"/api/v1/alerts/{alert.alert_id}/acknowledge"
    assert await post_from_page(viewer, api, {"note": "forged"}, as_json=True) == 403
    stored = await current(hub, alert.alert_id)
    assert (stored.status, stored.acknowledged_by) == ("open", None)


async def test_an_operator_of_one_store_never_sees_another_stores_alert_live(
    browsers: Browsers, hub: ServedHub
) -> None:
    page = await browsers.signed_in("sam", "/alerts")  # ops, scoped to STORE
    await expect(page.locator("body")).to_have_attribute("data-live", "on")
    await hub.publish_printer_out(store_id=OTHER_STORE, device_id="printer-elsewhere")
    elsewhere = await hub.alert_for("printer-elsewhere")
    await hub.publish_printer_out(store_id=STORE, device_id="printer-here")
    here = await hub.alert_for("printer-here")
    # The other store's alert was committed first: had the stream leaked it, it would be on the page by now.
    await expect(page.locator(f"table#alerts tbody tr#alert-{here.alert_id}")).to_be_visible()
    await expect(page.locator(f"#alert-{elsewhere.alert_id}")).to_have_count(0)
    await expect(page.locator(f'table#alerts tbody tr[data-store-id="{OTHER_STORE}"]')).to_have_count(0)
    await expect(page.locator("main")).not_to_contain_text("printer-elsewhere")
    # Asked for directly, the other store's alert is not there for this operator.
    direct = await page.goto(f"/alerts/{elsewhere.alert_id}")
    assert direct is not None
    assert direct.status in (403, 404)
    api = f"/api/v1/alerts/{elsewhere.alert_id}/acknowledge"
    assert await post_from_page(page, api, {"note": "not mine"}, as_json=True) in (403, 404)
    stored = await current(hub, elsewhere.alert_id)
    assert (stored.status, stored.acknowledged_by) == ("open", None)


async def test_the_language_switch_reads_chinese_and_follows_the_operator(browsers: Browsers) -> None:
    page = await browsers.signed_in("otto", "/")
    nav = page.locator("header.top nav a")
    await expect(nav.nth(0)).to_have_text("Overview")
    async with page.expect_navigation():
        await page.select_option("select#language", "zh_Hant")
    await expect(nav.nth(0)).to_have_text("總覽")
    await expect(nav.nth(1)).to_have_text("警報")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-Hant")
    await page.reload()
    await expect(nav.nth(0)).to_have_text("總覽")
    await expect(page.locator("select#language")).to_have_value("zh_Hant")

    # Another browser (an English one) signed in as the same operator reads what the operator chose.
    elsewhere = await browsers.signed_in("otto", "/alerts")
    await expect(elsewhere.locator("header.top nav a").nth(1)).to_have_text("警報")
    await expect(elsewhere.locator("select#language")).to_have_value("zh_Hant")

    # Simplified, and back to English.
    async with elsewhere.expect_navigation():
        await elsewhere.select_option("select#language", "zh_Hans")
    await expect(elsewhere.locator("header.top nav a").nth(0)).to_have_text("总览")
    async with elsewhere.expect_navigation():
        await elsewhere.select_option("select#language", "en")
    await expect(elsewhere.locator("header.top nav a").nth(1)).to_have_text("Alerts")


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
async def test_overview_store_and_fleet_show_the_store_and_fit_the_screen(
    browsers: Browsers, hub: ServedHub, viewport: str
) -> None:
    await hub.publish_printer_out()
    await hub.alert_for("receipt-printer")
    page = await browsers.signed_in("otto", "/", viewport=VIEWPORTS[viewport])

    await expect(page.locator('section#counts [data-count="stores"] .value')).to_have_text(str(len(PROFILES)))
    await expect(page.locator('section#counts [data-count="warning"] .value')).to_have_text("1")
    await expect(page.locator('section#counts [data-count="critical"] .value')).to_have_text("0")
    store_row = page.locator(f'table#stores tr[data-store-id="{STORE}"]')
    await expect(store_row).to_contain_text(STORE_NAME)
    assert await horizontal_overflow(page) <= 0
    # A search that matches nothing empties the table; clearing it brings the store back.
    search = page.locator("form#store-filters input[name=q]")
    await search.fill("no-such-store")
    await search.press("Enter")
    await expect(page.locator("table#stores tr[data-store-id]")).to_have_count(0)
    await search.fill("")
    await search.press("Enter")
    await expect(store_row).to_be_visible()

    store = await page.goto(f"/stores/{STORE}")
    assert store is not None
    assert store.status == 200
    await expect(page.locator("main")).to_contain_text(STORE_NAME)
    assert await horizontal_overflow(page) <= 0

    await page.goto("/fleet")
    await expect(page.locator(f'table#gateways tr[data-gateway="{STORE}/{GATEWAY}"]')).to_be_visible()
    assert await horizontal_overflow(page) <= 0


async def test_the_sound_toggle_is_remembered_in_the_browser(browsers: Browsers) -> None:
    page = await browsers.signed_in("otto", "/alerts", viewport=PHONE)
    toggle = page.locator("input[data-sound-toggle]")
    await expect(toggle).not_to_be_checked()
    await toggle.check()
    await page.reload()
    await expect(page.locator("input[data-sound-toggle]")).to_be_checked()
