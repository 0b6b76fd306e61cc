"""The schedules' runner on SQLite and PostgreSQL: planning due runs, a real webhook receiver and a real SMTP
server on loopback, retries and giving up, egress refusal at send time, and no period sent twice (issue 16)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.webhooks import verify_signature
from hub.catalog.models import StoreProfile
from hub.db.engine import session_factory
from hub.metrics import HubMetrics
from hub.reports.api import SalesRowOut
from hub.reports.schedules import kinds
from hub.reports.schedules.models import ReportSchedule
from hub.reports.schedules.runner import ScheduleRunner, _Due
from tests.hub.conftest import until
from tests.hub.reports.schedules.conftest import (
    SECRET,
    SMTP_PASSWORD,
    SMTP_USER,
    T0,
    TEST_BOX,
    FakeClock,
    Mailbox,
    Receiver,
    add_schedule,
    deliveries_of,
    make_tls,
    runner_for,
    settings_for,
    smtp_server,
)


def sample(runner: ScheduleRunner, channel: str, outcome: str) -> float:
    value = runner._metrics.registry.get_sample_value(
        "storegate_hub_report_deliveries_total", {"channel": channel, "outcome": outcome}
    )
    return value or 0.0


async def test_a_due_run_is_rendered_signed_and_delivered_once(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/sales")
    runner = runner_for(engine, settings_for(tmp_path, database_url), clock)
    try:
        assert await runner.run_once() == (1, 1)
        [hit] = receiver.on("/sales")
        headers = hit.headers
        assert verify_signature(SECRET, headers["x-storegate-timestamp"], hit.body, headers["x-storegate-signature"])
        assert not verify_signature(
            "another-secret-0123456", headers["x-storegate-timestamp"], hit.body, headers["x-storegate-signature"]
        )
        assert headers["x-storegate-event"] == "report.delivered"
        assert headers["x-storegate-schedule"] == schedule_id
        assert headers["x-storegate-report"] == "sales/csv"
        assert headers["x-storegate-period"] == "2025-03-03"  # yesterday, in the schedule's zone (UTC)
        assert headers["content-type"].startswith("text/csv")
        assert headers["content-disposition"] == 'attachment; filename="sales_all_2025-03-03.csv"'
        assert next(csv.reader(io.StringIO(hit.body.decode()))) == list(SalesRowOut.model_fields)
        [delivery] = await deliveries_of(engine, schedule_id)
        assert (delivery.status, delivery.attempts, delivery.channel) == ("delivered", 1, "webhook")
        assert (delivery.period_start, delivery.period_end) == (date(2025, 3, 3), date(2025, 3, 3))
        assert delivery.bytes == len(hit.body)
        assert delivery.last_error is None
        assert headers["x-storegate-delivery"] == f"report-{delivery.id}"
        assert sample(runner, "webhook", "delivered") == 1
        # Later passes the same day plan and send nothing more; the next day's run is the next period.
        clock.advance(3600)
        assert await runner.run_once() == (0, 0)
        clock.advance(86_400)
        assert await runner.run_once() == (1, 1)
        assert [h.headers["x-storegate-period"] for h in receiver.on("/sales")] == ["2025-03-03", "2025-03-04"]
    finally:
        await runner.stop()


async def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_the_report(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    clock = FakeClock()
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/flaky")
    settings = settings_for(tmp_path, database_url, reports={"retry_delays_s": (60.0, 300.0), "max_attempts": 5})
    runner = runner_for(engine, settings, clock)
    try:
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "HTTP 503")
        assert delivery.next_attempt_at == T0 + timedelta(seconds=60)
        clock.advance(59)
        assert await runner.deliver_due() == 0  # not yet
        clock.advance(1)
        assert await runner.deliver_due() == 1
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.next_attempt_at == clock.now + timedelta(seconds=300)  # the second delay
        clock.advance(300)
        assert await runner.deliver_due() == 1
        [delivery] = await deliveries_of(engine, schedule_id)
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, None)
        assert len(receiver.on("/flaky")) == 3
        assert sample(runner, "webhook", "retry") == 2
        assert sample(runner, "webhook", "delivered") == 1
    finally:
        await runner.stop()


async def test_a_receiver_that_always_fails_is_given_up_and_the_schedule_counted_failing(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/broken")
    settings = settings_for(
        tmp_path, database_url, reports={"retry_delays_s": (10.0,), "max_attempts": 2, "failing_after": 1}
    )
    runner = runner_for(engine, settings, clock)
    try:
        await runner.run_once()
        clock.advance(10)
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert (delivery.status, delivery.attempts) == ("failed", 2)
        assert delivery.last_error == "HTTP 500"  # the status only: never the receiver's body
        clock.advance(3600)
        assert await runner.deliver_due() == 0  # given up: no third attempt
        assert len(receiver.on("/broken")) == 2
        assert sample(runner, "webhook", "failed") == 1
        assert runner.failing == {schedule_id: "Daily sales"}
        assert runner._metrics.registry.get_sample_value("storegate_hub_report_schedules_failing") == 1
    finally:
        await runner.stop()


async def test_a_restart_never_sends_a_delivered_period_again(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path, database_url)
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/sent")
    before = runner_for(engine, settings, clock)
    assert await before.run_once() == (1, 1)
    await before.stop()
    # A new hub process at the same moment (a restart), and a minute later: nothing planned or sent again.
    after = runner_for(engine, settings, clock)
    try:
        assert await after.run_once() == (0, 0)
        clock.advance(60)
        assert await after.run_once() == (0, 0)
        assert len(receiver.on("/sent")) == 1
        assert [d.status for d in await deliveries_of(engine, schedule_id)] == ["delivered"]
    finally:
        await after.stop()


async def test_an_attempt_cut_off_by_a_crash_is_tried_again_with_the_same_delivery_id(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path, database_url)
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/cut")
    crashed = runner_for(engine, settings, clock)
    await crashed.plan_due()
    # The crashed hub claimed the delivery and never recorded an outcome (it stopped mid-send).
    claimed = await crashed._claim(await _due(crashed), now=clock.now)
    assert len(claimed) == 1
    after = runner_for(engine, settings, clock)
    try:
        assert await after.deliver_due() == 0  # claimed by the other: not sent while its claim holds
        clock.advance(settings.reports.timeout_s + 301)
        assert await after.deliver_due() == 1
        [delivery] = await deliveries_of(engine, schedule_id)
        assert (delivery.status, delivery.attempts) == ("delivered", 2)
        [hit] = receiver.on("/cut")
        assert hit.headers["x-storegate-delivery"] == f"report-{delivery.id}"
    finally:
        await after.stop()


async def _due(runner: ScheduleRunner) -> list[_Due]:
    """The deliveries due now, as a pass reads them (without attempting them)."""
    from sqlalchemy import select

    from hub.reports.schedules.models import ReportDelivery, ReportSchedule

    async with runner._sessions() as session:
        rows = (
            await session.execute(
                select(ReportDelivery, ReportSchedule).join(
                    ReportSchedule, ReportSchedule.schedule_id == ReportDelivery.schedule_id
                )
            )
        ).all()
        session.expunge_all()
    return [_Due(delivery, schedule) for delivery, schedule in rows]


async def test_a_run_planned_before_a_restart_is_sent_once_after_it(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path, database_url)
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/later")
    before = runner_for(engine, settings, clock)
    assert await before.plan_due() == 1  # planned, then the hub stopped before sending
    await before.stop()
    after = runner_for(engine, settings, clock)
    try:
        assert await after.run_once() == (0, 1)
        assert await after.run_once() == (0, 0)
        assert len(receiver.on("/later")) == 1
        assert [d.status for d in await deliveries_of(engine, schedule_id)] == ["delivered"]
    finally:
        await after.stop()


async def test_two_runners_at_once_plan_and_send_each_period_once(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path, database_url)
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/race")
    first, second = runner_for(engine, settings, clock), runner_for(engine, settings, clock)
    try:
        await asyncio.gather(first.run_once(), second.run_once())
        await asyncio.gather(first.run_once(), second.run_once())
        assert len(receiver.on("/race")) == 1
        assert len(await deliveries_of(engine, schedule_id)) == 1
    finally:
        await first.stop()
        await second.stop()


async def test_runs_missed_during_downtime_are_caught_up_within_the_bound(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(
        engine, webhook_url=f"{receiver.base_url}/catch-up", next_run_at=T0.replace(second=0) - timedelta(days=9)
    )
    runner = runner_for(engine, settings_for(tmp_path, database_url, reports={"max_catch_up": 3}), clock)
    try:
        assert await runner.run_once() == (3, 3)
        periods = sorted(h.headers["x-storegate-period"] for h in receiver.on("/catch-up"))
        assert periods == ["2025-03-01", "2025-03-02", "2025-03-03"]  # the newest three of ten missed runs
        assert runner._metrics.registry.get_sample_value("storegate_hub_report_runs_skipped_total") == 7
        assert len(await deliveries_of(engine, schedule_id)) == 3
    finally:
        await runner.stop()


async def test_a_webhook_to_loopback_is_refused_when_sending_unless_allowed(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    # Stored straight into the table (as if the allow-list had changed since): the sender checks again.
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/inside")
    settings = settings_for(tmp_path, database_url, notifications={}, reports={"max_attempts": 1})
    runner = runner_for(engine, settings, clock)
    try:
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.status == "failed"
        assert delivery.last_error is not None
        assert "127.0.0.1 is a loopback address" in delivery.last_error
        assert receiver.hits == []
    finally:
        await runner.stop()


async def add_stores(engine: AsyncEngine, *store_ids: str, region: str = "north") -> None:
    """Stores with a profile (a Chinese name: the PDF must print it) and no readings."""
    async with session_factory(engine)() as session:
        for store_id in store_ids:
            session.add(
                StoreProfile(
                    store_id=store_id,
                    name="台北門市",
                    timezone="Asia/Taipei",
                    currency="TWD",
                    opening_hours={d: [] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
                    region=region,
                    updated_at=T0,
                )
            )
        await session.commit()


async def test_a_cold_chain_schedule_of_two_stores_sends_a_zip_of_one_pdf_each(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    await add_stores(engine, "store-a", "store-b")
    clock = FakeClock()
    schedule_id = await add_schedule(
        engine,
        webhook_url=f"{receiver.base_url}/cold",
        kind="cold-chain",
        output="pdf",
        store_ids=["store-a", "store-b"],
    )
    runner = runner_for(engine, settings_for(tmp_path, database_url), clock)
    try:
        await runner.run_once()
        [hit] = receiver.on("/cold")
        assert hit.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(hit.body)) as archive:
            names = archive.namelist()
            assert names == ["cold-chain_store-a_2025-03-03.pdf", "cold-chain_store-b_2025-03-03.pdf"]
            assert all(archive.read(name).startswith(b"%PDF") for name in names)
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.filename == "cold-chain_stores_2025-03-03_pdf.zip"
    finally:
        await runner.stop()


async def test_a_region_schedule_reports_the_stores_of_the_region_when_it_runs(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    await add_stores(engine, "north-1", "north-2")
    await add_stores(engine, "south-1", region="south")
    clock = FakeClock()
    await add_schedule(
        engine, webhook_url=f"{receiver.base_url}/north", kind="cold-chain", output="csv", region="north"
    )
    runner = runner_for(engine, settings_for(tmp_path, database_url), clock)
    try:
        await add_stores(engine, "north-3")  # joined the region after the schedule was made: reported too
        await runner.run_once()
        [hit] = receiver.on("/north")
        with zipfile.ZipFile(io.BytesIO(hit.body)) as archive:
            assert archive.namelist() == [f"cold-chain_north-{n}_2025-03-03.csv" for n in (1, 2, 3)]
        assert hit.headers["content-disposition"] == 'attachment; filename="cold-chain_north_2025-03-03_csv.zip"'
    finally:
        await runner.stop()


async def test_a_report_larger_than_allowed_is_not_sent_and_says_its_size(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    await add_stores(engine, "store-a")
    clock = FakeClock()
    schedule_id = await add_schedule(
        engine, webhook_url=f"{receiver.base_url}/big", kind="cold-chain", output="pdf", store_ids=["store-a"]
    )
    settings = settings_for(tmp_path, database_url, reports={"max_document_bytes": 1024, "max_attempts": 1})
    runner = runner_for(engine, settings, clock)
    try:
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.status == "failed"
        assert delivery.bytes is not None
        assert delivery.bytes > 1024
        assert delivery.last_error == (
            f"the report is {delivery.bytes} bytes, more than reports.max_document_bytes (1024); not sent"
        )
        assert receiver.hits == []
    finally:
        await runner.stop()


async def test_an_email_carries_the_report_through_a_real_smtp_server(
    engine: AsyncEngine, database_url: str, tmp_path: Path, mailbox: Mailbox
) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text(SMTP_PASSWORD + "\n")
    os.chmod(password_file, 0o600)
    smtp = {
        "host": "127.0.0.1",
        "port": mailbox.port,
        "security": "none",
        "username": SMTP_USER,
        "password_file": str(password_file),
        "from_address": "reports@chain.example",
    }
    clock = FakeClock()
    schedule_id = await add_schedule(engine, email_to=["ops@chain.example", "lead@chain.example"])
    runner = runner_for(engine, settings_for(tmp_path, database_url, reports={"smtp": smtp}), clock)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await runner.run_once() == (1, 1)
        [(sender, recipients, message)] = mailbox.received()
        assert sender == "reports@chain.example"
        assert recipients == ["ops@chain.example", "lead@chain.example"]
        assert mailbox.logins == [SMTP_USER]
        assert message["Subject"] == "Daily sales: sales 2025-03-03"
        [delivery] = await deliveries_of(engine, schedule_id)
        assert message["Message-ID"] == f"<report-{delivery.id}.{schedule_id}@chain.example>"
        [attachment] = [part for part in message.walk() if part.get_filename()]
        assert attachment.get_filename() == "sales_all_2025-03-03.csv"
        body = attachment.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert body.decode().startswith("store_id,")
        assert (delivery.status, delivery.channel, delivery.bytes) == ("delivered", "email", len(body))
        assert SMTP_PASSWORD not in repr(logs)
        assert SMTP_PASSWORD not in repr(runner.settings)
    finally:
        await runner.stop()


async def test_an_smtp_server_without_starttls_gets_nothing_in_plain_text(
    engine: AsyncEngine, database_url: str, tmp_path: Path, mailbox: Mailbox
) -> None:
    smtp = {"host": "127.0.0.1", "port": mailbox.port, "security": "starttls", "from_address": "reports@chain.example"}
    clock = FakeClock()
    schedule_id = await add_schedule(engine, email_to=["ops@chain.example"])
    runner = runner_for(engine, settings_for(tmp_path, database_url, reports={"smtp": smtp, "max_attempts": 1}), clock)
    try:
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.status == "failed"
        assert delivery.last_error == "the SMTP server does not offer STARTTLS; not sent in plain text"
        assert mailbox.received() == []
    finally:
        await runner.stop()


async def test_e_mail_without_an_smtp_server_fails_in_words(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(engine, email_to=["ops@chain.example"])
    runner = runner_for(engine, settings_for(tmp_path, database_url, reports={"max_attempts": 1}), clock)
    try:
        await runner.run_once()
        [delivery] = await deliveries_of(engine, schedule_id)
        assert delivery.last_error == "no SMTP server is configured ([reports.smtp]); e-mail cannot be sent"
        assert sample(runner, "email", "failed") == 1
    finally:
        await runner.stop()


async def test_a_paused_schedule_plans_nothing(sqlite_engine: AsyncEngine, sqlite_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(sqlite_engine, webhook_url="http://127.0.0.1:9/never")
    async with session_factory(sqlite_engine)() as session:
        await session.execute(update(ReportSchedule).values(enabled=False))
        await session.commit()
    runner = runner_for(sqlite_engine, settings_for(tmp_path, sqlite_url), clock)
    try:
        assert await runner.run_once() == (0, 0)
        assert await deliveries_of(sqlite_engine, schedule_id) == []
    finally:
        await runner.stop()


async def test_a_follower_runs_no_pass_until_it_leads(
    engine: AsyncEngine, database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    clock = FakeClock()
    schedule_id = await add_schedule(engine, webhook_url=f"{receiver.base_url}/leader")
    leading = False
    asked = 0

    def active() -> bool:
        nonlocal asked
        asked += 1
        return leading

    runner = ScheduleRunner(
        engine=engine,
        settings=settings_for(tmp_path, database_url),
        metrics=HubMetrics(),
        secret_box=TEST_BOX,
        clock=clock,
        active=active,
    )
    runner.start()
    try:
        await until(lambda: asked >= 1, what="the loop's first turn")
        runner.notify()
        await until(lambda: asked >= 2, what="the loop's second turn")
        assert await deliveries_of(engine, schedule_id) == []  # another worker leads: nothing planned here
        leading = True
        runner.notify()
        await until(lambda: receiver.on("/leader"), timeout=10, what="the report sent once this worker leads")
    finally:
        await runner.stop()
    assert len(receiver.on("/leader")) == 1


def smtp_settings(port: int, security: str, **more: object) -> dict[str, object]:
    return {
        "host": "localhost",
        "port": port,
        "security": security,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "from_address": "reports@chain.example",
        **more,
    }


async def test_starttls_to_a_relay_of_a_private_ca_logs_in_and_sends(
    sqlite_engine: AsyncEngine, sqlite_url: str, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    with smtp_server(tls_context=tls.server_context, require_starttls=True) as box:
        smtp = smtp_settings(box.port, "starttls", ca_file=str(tls.ca_file))
        schedule_id = await add_schedule(sqlite_engine, email_to=["ops@chain.example"])
        runner = runner_for(sqlite_engine, settings_for(tmp_path, sqlite_url, reports={"smtp": smtp}), FakeClock())
        try:
            await runner.run_once()
        finally:
            await runner.stop()
        [delivery] = await deliveries_of(sqlite_engine, schedule_id)
        assert (delivery.status, delivery.last_error) == ("delivered", None)
        assert box.logins == [SMTP_USER]
        assert len(box.received()) == 1


async def test_a_relay_whose_certificate_is_not_trusted_gets_neither_password_nor_report(
    sqlite_engine: AsyncEngine, sqlite_url: str, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    with smtp_server(tls_context=tls.server_context, require_starttls=True) as box:
        smtp = smtp_settings(box.port, "starttls")  # the private CA not named: only the system's are trusted
        schedule_id = await add_schedule(sqlite_engine, email_to=["ops@chain.example"])
        settings = settings_for(tmp_path, sqlite_url, reports={"smtp": smtp, "max_attempts": 1})
        runner = runner_for(sqlite_engine, settings, FakeClock())
        try:
            await runner.run_once()
        finally:
            await runner.stop()
        [delivery] = await deliveries_of(sqlite_engine, schedule_id)
        assert delivery.status == "failed"
        assert delivery.last_error is not None
        assert "certificate verify failed" in delivery.last_error
        assert SMTP_PASSWORD not in delivery.last_error
        assert box.logins == []
        assert box.received() == []


async def test_implicit_tls_sends(sqlite_engine: AsyncEngine, sqlite_url: str, tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    # aiosmtpd counts only STARTTLS as TLS for its AUTH rule; this connection is TLS from its first byte.
    with smtp_server(ssl_context=tls.server_context, auth_require_tls=False) as box:
        smtp = smtp_settings(box.port, "tls", ca_file=str(tls.ca_file))
        schedule_id = await add_schedule(sqlite_engine, email_to=["ops@chain.example"])
        runner = runner_for(sqlite_engine, settings_for(tmp_path, sqlite_url, reports={"smtp": smtp}), FakeClock())
        try:
            await runner.run_once()
        finally:
            await runner.stop()
        assert [d.status for d in await deliveries_of(sqlite_engine, schedule_id)] == ["delivered"]
        assert box.logins == [SMTP_USER]


async def test_a_cold_chain_report_of_too_many_files_is_refused_in_words(
    sqlite_engine: AsyncEngine, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kinds, "MAX_FILES", 1)
    await add_stores(sqlite_engine, "north-1", "north-2")
    schedule_id = await add_schedule(
        sqlite_engine, webhook_url="http://127.0.0.1:9/never", kind="cold-chain", output="pdf", region="north"
    )
    settings = settings_for(tmp_path, sqlite_url, reports={"max_attempts": 1})
    runner = runner_for(sqlite_engine, settings, FakeClock())
    try:
        await runner.run_once()
    finally:
        await runner.stop()
    [delivery] = await deliveries_of(sqlite_engine, schedule_id)
    assert delivery.status == "failed"
    assert delivery.last_error == (
        "cannot render the report: ValueError: 2 stores x 1 days is more than 1 cold-chain files in one report; "
        "split the schedule by region or store list"
    )
