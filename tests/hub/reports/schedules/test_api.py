"""``/api/v1/report-schedules`` on a running hub (SQLite and PostgreSQL): admins only, refusals in words, every
change audited, and a schedule delivered by the hub's own runner on the hub's clock (issue 16)."""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from hub.app import create_app, lifespan
from hub.metrics import HubMetrics
from hub.reports.schedules.kinds import ReportScope, renderer_of
from hub.reports.schedules.models import ReportSchedule
from hub.reports.schedules.runner import ScheduleRunner
from hub.settings import HubSettings
from storegate import wire
from tests.conftest import eventually
from tests.hub.auth.helpers import load_catalog
from tests.hub.conftest import HUB_BASE_URL, RunningHub, make_token, running_hub, until
from tests.hub.reports.schedules.conftest import LOOPBACK_ALLOWED, TEST_BOX, FakeClock, Receiver, add_schedule

PUBLIC_HOOK = "https://93.184.215.14/hooks/reports"  # an address, so no DNS is asked
SMTP = {"host": "127.0.0.1", "port": 2525, "security": "none", "from_address": "reports@chain.example"}


def schedule(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Cold chain, north",
        "kind": "cold-chain",
        "format": "pdf",
        "stores": "region",
        "region": "north",
        "cadence": "weekly",
        "weekday": 0,
        "at": "06:30",
        "timezone": "Asia/Taipei",
        "webhook_url": PUBLIC_HOOK,
        "email_to": ["ops@chain.example"],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
async def api_hub(hub_settings: HubSettings, database_url: str) -> AsyncIterator[RunningHub]:
    """A running hub on SQLite or PostgreSQL with an SMTP server configured (never reached: nothing is due)."""
    settings = type(hub_settings).model_validate(
        {**hub_settings.model_dump(), "database_url": database_url, "reports": {"smtp": SMTP}}
    )
    async with running_hub(settings) as running:
        yield running


async def audit_of(hub: RunningHub, action: str) -> list[dict[str, Any]]:
    response = await hub.client.get("/api/v1/audit", params={"action": action})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return [item for item in items if item["action"] == action]


async def test_an_admin_creates_lists_pauses_resumes_and_deletes_a_schedule_all_audited(
    api_hub: RunningHub,
) -> None:
    client = api_hub.client
    created = await client.post("/api/v1/report-schedules", json=schedule())
    assert created.status_code == 201, created.text
    body = created.json()
    schedule_id, secret = body["schedule_id"], body["webhook_secret"]
    assert len(secret) >= 40
    assert body["stores"] == "region"
    assert body["enabled"] is True
    # Weekly on Monday 06:30 in Taipei: the next such moment, in UTC.
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert next_run > wire.utc_now()
    assert next_run - wire.utc_now() <= timedelta(days=7)
    assert next_run.astimezone(ZoneInfo("Asia/Taipei")).strftime("%a %H:%M") == "Mon 06:30"
    # The secret is stored sealed and never shown again.
    async with api_hub.runtime.sessions() as session:
        stored = await session.get(ReportSchedule, schedule_id)
        assert stored is not None
        assert stored.webhook_secret_sealed is not None
        assert secret not in stored.webhook_secret_sealed
    listed = (await client.get("/api/v1/report-schedules")).json()["items"]
    assert [item["schedule_id"] for item in listed] == [schedule_id]
    assert secret not in str(listed)
    assert "webhook_secret" not in listed[0]
    paused = await client.post(f"/api/v1/report-schedules/{schedule_id}/pause")
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False
    resumed = await client.post(f"/api/v1/report-schedules/{schedule_id}/resume")
    assert resumed.json()["enabled"] is True
    deliveries = await client.get(f"/api/v1/report-schedules/{schedule_id}/deliveries")
    assert deliveries.json() == {"items": [], "next_before": None}
    assert (await client.delete(f"/api/v1/report-schedules/{schedule_id}")).status_code == 204
    assert (await client.get(f"/api/v1/report-schedules/{schedule_id}")).status_code == 404
    # Every change in the audit log with the schedule before and after; never the secret.
    [create_entry] = await audit_of(api_hub, "POST /api/v1/report-schedules")
    assert create_entry["target"] == f"report-schedule:{schedule_id}"
    assert create_entry["after"]["region"] == "north"
    [pause_entry] = await audit_of(api_hub, "POST /api/v1/report-schedules/{schedule_id}/pause")
    assert pause_entry["before"]["enabled"] is True
    assert pause_entry["after"]["enabled"] is False
    [delete_entry] = await audit_of(api_hub, "DELETE /api/v1/report-schedules/{schedule_id}")
    assert delete_entry["before"]["name"] == "Cold chain, north"
    assert secret not in str(await audit_of(api_hub, "POST /api/v1/report-schedules"))


LONG_LIST = [f"store-{n:04d}" for n in range(501)]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "is not an IANA time zone"),
        ({"timezone": "../../etc/passwd"}, "timezone", "is not an IANA time zone"),
        ({"at": "25:00"}, "at", "HH:MM"),
        ({"cadence": "daily"}, "request", "a daily schedule takes no weekday"),
        ({"weekday": None}, "request", "needs a weekday"),
        ({"weekday": 7}, "weekday", "less than or equal to 6"),
        ({"kind": "payroll"}, "request", "no report kind 'payroll'"),
        ({"format": "xlsx"}, "request", "comes as csv, pdf, not 'xlsx'"),
        ({"stores": "stores", "region": None, "store_ids": LONG_LIST}, "store_ids", "at most 500"),
        ({"stores": "stores", "region": None, "store_ids": ["bad/store"]}, "store_ids", ""),
        ({"region": None}, "request", "needs a region"),
        ({"email_to": [f"p{n}@chain.example" for n in range(21)]}, "email_to", "at most 20"),
        ({"email_to": ["ops@chain.example\r\nBcc: spy@evil.example"]}, "email_to", "not one plain e-mail address"),
        ({"email_to": ["ops@chain.example, spy@evil.example"]}, "email_to", "not one plain e-mail address"),
        ({"webhook_url": None, "email_to": None}, "request", "say where to send the report"),
        ({"webhook_url": "ftp://93.184.215.14/x"}, "webhook_url", "http:// or https://"),
        ({"name": "x" * 101}, "name", "at most 100"),
        ({"name": "Daily\r\nBcc: spy@evil.example"}, "name", "cannot contain line breaks"),
        ({"unexpected": 1}, "unexpected", "Extra inputs"),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(
    hub: RunningHub, changes: dict[str, Any], field: str, words: str
) -> None:
    body = schedule(email_to=None, **{k: v for k, v in changes.items() if k != "email_to"})
    if "email_to" in changes:
        body = schedule(**changes)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
    response = await hub.client.post("/api/v1/report-schedules", json=body)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert words in message
    if field != "request":
        assert field in message
    assert (await hub.client.get("/api/v1/report-schedules")).json()["items"] == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost/hook", "resolves to 127.0.0.1, a loopback address"),
        ("http://10.20.0.5/hook", "10.20.0.5 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address"),
        ("http://0x7f000001/hook", "a loopback address"),
        ("https://user:pass@93.184.215.14/hook", "must not contain a user name or password"),
    ],
)
async def test_a_webhook_inside_the_hubs_network_is_refused(hub: RunningHub, url: str, words: str) -> None:
    response = await hub.client.post("/api/v1/report-schedules", json=schedule(email_to=None, webhook_url=url))
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("webhook_url: ")
    assert words in response.json()["message"]
    assert "pass" not in response.text.replace("password", "")  # the URL's password is not echoed


async def test_a_short_secret_is_refused_without_echoing_it(hub: RunningHub) -> None:
    response = await hub.client.post(
        "/api/v1/report-schedules", json=schedule(email_to=None, webhook_secret="tiny-secret-1")
    )
    assert response.status_code == 422
    assert response.json()["message"] == "webhook_secret: must have at least 16 characters"
    assert "tiny-secret-1" not in response.text


async def test_e_mail_is_refused_when_the_hub_has_no_smtp_server(hub: RunningHub) -> None:
    response = await hub.client.post("/api/v1/report-schedules", json=schedule(webhook_url=None))
    assert response.status_code == 422
    assert response.json()["message"] == (
        "email_to: this hub has no SMTP server ([reports.smtp]); it cannot send e-mail"
    )


@pytest.mark.parametrize("role", ["ops", "technician", "viewer"])
async def test_only_admins_of_the_whole_chain_manage_schedules(hub: RunningHub, role: str) -> None:
    created = await hub.client.post("/api/v1/report-schedules", json=schedule(email_to=None))
    schedule_id = created.json()["schedule_id"]
    async with await hub.client_as(role) as other:
        assert (await other.post("/api/v1/report-schedules", json=schedule(email_to=None))).status_code == 403
        assert (await other.get("/api/v1/report-schedules")).status_code == 403
        assert (await other.get(f"/api/v1/report-schedules/{schedule_id}/deliveries")).status_code == 403
        assert (await other.post(f"/api/v1/report-schedules/{schedule_id}/pause")).status_code == 403
        assert (await other.delete(f"/api/v1/report-schedules/{schedule_id}")).status_code == 403
    async with await hub.client_as("admin", store_ids=["store-0001"]) as scoped:
        assert (await scoped.get("/api/v1/report-schedules")).status_code == 403
        assert (await scoped.post("/api/v1/report-schedules", json=schedule(email_to=None))).status_code == 403
    assert (await hub.client.get(f"/api/v1/report-schedules/{schedule_id}")).json()["enabled"] is True


async def test_unknown_schedules_are_404_and_the_kinds_are_listed(hub: RunningHub) -> None:
    missing = "00000000-0000-0000-0000-00000000000b"
    for method, path in [
        ("GET", f"/api/v1/report-schedules/{missing}"),
        ("GET", f"/api/v1/report-schedules/{missing}/deliveries"),
        ("POST", f"/api/v1/report-schedules/{missing}/pause"),
        ("DELETE", f"/api/v1/report-schedules/{missing}"),
    ]:
        response = await hub.client.request(method, path)
        assert response.status_code == 404
        assert response.json()["detail"] == f"no report schedule {missing}"
    kinds = {
        item["kind"]: item["formats"]
        for item in (await hub.client.get("/api/v1/report-schedules/kinds")).json()["items"]
    }
    assert kinds["cold-chain"] == ["csv", "pdf"]
    assert kinds["sales"] == ["csv"]
    assert kinds["alerts"] == ["csv"]
    assert sorted(kinds["daily-summary"]) == ["csv", "pdf", "xlsx"]
    assert sorted(kinds["chain-summary"]) == ["csv", "pdf", "xlsx"]


async def test_a_schedule_sends_each_stores_daily_summary_in_one_zip(hub: RunningHub) -> None:
    await load_catalog(hub.client)  # store-0001 and store-0002
    summary = renderer_of("daily-summary", "xlsx")
    assert summary is not None
    scope = ReportScope(store_ids=None, first_day=date(2025, 3, 1), last_day=date(2025, 3, 1), label="all")
    async with hub.runtime.sessions() as session:
        document = await summary(session, scope, now=wire.utc_now(), settings=hub.runtime.settings)
    assert document.media_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(document.body)) as archive:
        names = sorted(archive.namelist())
    assert names == ["daily-summary_store-0001_2025-03-01.xlsx", "daily-summary_store-0002_2025-03-01.xlsx"]
    # One store named: its file alone, not a ZIP.
    one = ReportScope(store_ids=("store-0002",), first_day=date(2025, 3, 1), last_day=date(2025, 3, 1), label="x")
    rollup = renderer_of("chain-summary", "csv")
    assert rollup is not None
    async with hub.runtime.sessions() as session:
        alone = await rollup(session, one, now=wire.utc_now(), settings=hub.runtime.settings)
    assert alone.filename.endswith(".csv")
    assert b"store-0002" in alone.body
    assert b"store-0001" not in alone.body


@contextlib.asynccontextmanager
async def hub_on_clock(settings: HubSettings, clock: FakeClock) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings, clock=clock)
    async with lifespan(app):
        token = await make_token(app.state.runtime, "admin")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=HUB_BASE_URL, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield app, client


async def test_the_hubs_runner_delivers_a_schedule_when_the_hubs_clock_reaches_it(
    hub_settings: HubSettings, database_url: str, receiver: Receiver
) -> None:
    settings = type(hub_settings).model_validate(
        {
            **hub_settings.model_dump(),
            "database_url": database_url,
            "notifications": LOOPBACK_ALLOWED,
            "reports": {"poll_interval_s": 0.2},
        }
    )
    clock = FakeClock(now=wire.utc_now())
    async with hub_on_clock(settings, clock) as (app, client):
        created = await client.post(
            "/api/v1/report-schedules",
            json=schedule(
                kind="sales",
                format="csv",
                stores="all",
                region=None,
                cadence="daily",
                weekday=None,
                at="00:00",
                timezone="UTC",
                email_to=None,
                webhook_url=f"{receiver.base_url}/hub",
            ),
        )
        # The API's own check refuses loopback unless the allow-list has it: this hub's has.
        assert created.status_code == 201, created.text
        schedule_id = created.json()["schedule_id"]
        assert receiver.hits == []
        clock.advance(86_400)  # the hub's clock passes the next midnight: the runner's next pass sends
        await until(lambda: receiver.on("/hub"), timeout=10, what="the scheduled report at the receiver")
        assert receiver.on("/hub")[0].headers["x-storegate-schedule"] == schedule_id

        async def delivered() -> bool:
            items = (await client.get(f"/api/v1/report-schedules/{schedule_id}/deliveries")).json()["items"]
            return bool(items) and items[0]["status"] == "delivered"

        await eventually(delivered, timeout=10, what="the delivery recorded")
        [item] = (await client.get(f"/api/v1/report-schedules/{schedule_id}/deliveries")).json()["items"]
        assert item["channel"] == "webhook"
        assert item["bytes"] == len(receiver.on("/hub")[0].body)
        assert app.state.runtime.report_schedules is not None


async def test_pausing_cancels_the_pending_deliveries_and_keeps_them_as_history(hub: RunningHub) -> None:
    runtime = hub.runtime
    # Due tomorrow: the hub's own runner (on the wall clock) leaves it alone; this one's clock is past it.
    tomorrow = wire.utc_now() + timedelta(days=1)
    schedule_id = await add_schedule(runtime.engine, webhook_url="http://127.0.0.1:9/never", now=tomorrow)
    clock = FakeClock(now=tomorrow + timedelta(days=1))
    runner = ScheduleRunner(
        engine=runtime.engine, settings=runtime.settings, metrics=HubMetrics(), secret_box=TEST_BOX, clock=clock
    )
    assert await runner.plan_due() == 1  # planned, not sent yet
    paused = await hub.client.post(f"/api/v1/report-schedules/{schedule_id}/pause")
    assert paused.status_code == 200
    [item] = (await hub.client.get(f"/api/v1/report-schedules/{schedule_id}/deliveries")).json()["items"]
    assert (item["status"], item["last_error"], item["next_attempt_at"]) == (
        "cancelled",
        "the schedule was paused",
        None,
    )
    cancelled = runtime.metrics.registry.get_sample_value(
        "storegate_hub_report_deliveries_total", {"channel": "webhook", "outcome": "cancelled"}
    )
    assert cancelled == 1
    assert await runner.deliver_due() == 0  # nothing left to send
    resumed = (await hub.client.post(f"/api/v1/report-schedules/{schedule_id}/resume")).json()
    assert datetime.fromisoformat(resumed["next_run_at"]) > wire.utc_now()  # the paused runs are not caught up
    await runner.stop()


async def test_an_api_process_serves_the_schedules_and_runs_none(hub_settings: HubSettings, postgres_url: str) -> None:
    settings = type(hub_settings).model_validate(
        {**hub_settings.model_dump(), "database_url": postgres_url, "role": "api"}
    )
    async with running_hub(settings) as api:
        assert api.runtime.report_schedules is None
        created = await api.client.post("/api/v1/report-schedules", json=schedule(email_to=None))
        assert created.status_code == 201, created.text
