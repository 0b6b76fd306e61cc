"""The tables of scheduled reports: the schedules, and one delivery row per run and channel (migration 0014).

A delivery's key is (schedule, first day of the period, channel): a period is planned once, whichever hub
process plans it and however often it restarts, so it is never sent twice as two deliveries.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import ACTOR_LENGTH, ID_LENGTH, UUID_LENGTH, Base, BigId

URL_LENGTH: Final = 2048
NAME_LENGTH: Final = 100
KIND_LENGTH: Final = 64
FILENAME_LENGTH: Final = 255


class ReportSchedule(Base):
    """A report rendered for yesterday (daily) or last week (weekly) and sent to a webhook and/or by e-mail."""

    __tablename__ = "report_schedules"
    __table_args__ = (Index("ix_report_schedules_due", "enabled", "next_run_at"),)

    schedule_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    format: Mapped[str] = mapped_column(String(16))
    # "all" (every store), "region" (the stores of ``region``), "stores" (``store_ids``)
    store_scope: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    store_ids: Mapped[list[str] | None] = mapped_column(JSON)
    # "daily" or "weekly" (on ``weekday``, 0 Monday .. 6 Sunday), at ``local_time`` (HH:MM) in ``timezone``
    cadence: Mapped[str] = mapped_column(String(16))
    weekday: Mapped[int | None] = mapped_column(Integer)
    local_time: Mapped[str] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    # The webhook's signing secret, sealed with the hub's key (hub.alerting.secret_box).
    webhook_secret_sealed: Mapped[str | None] = mapped_column(Text)
    email_to: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    # The next time it fires (UTC); the runner plans the runs due up to now and moves this past now.
    next_run_at: Mapped[datetime]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    updated_at: Mapped[datetime]


class ReportDelivery(Base):
    """One run of a schedule to one channel: its period, attempts, the next retry, and how it ended."""

    __tablename__ = "report_deliveries"
    __table_args__ = (
        UniqueConstraint("schedule_id", "period_start", "channel"),
        Index("ix_report_deliveries_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(
        String(UUID_LENGTH), ForeignKey("report_schedules.schedule_id", ondelete="CASCADE")
    )
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    # "webhook" or "email"
    channel: Mapped[str] = mapped_column(String(16))
    # "pending" (waiting for its next attempt), "delivered", "failed" (gave up), "cancelled" (schedule paused)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None]
    filename: Mapped[str | None] = mapped_column(String(FILENAME_LENGTH))
    bytes: Mapped[int | None] = mapped_column(Integer)
    scheduled_for: Mapped[datetime]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
