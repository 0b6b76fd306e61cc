"""The footfall table: what each entrance camera counted, per store, gateway, camera, line and period.

Migration ``0012`` creates the same schema. One row per (store, gateway, camera device, line, period start):
writing a period again (a replayed event, a rebuild) sets the same row to the same counts, so it never adds up
twice; the event that last set it is kept beside the counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import DEVICE_ID_LENGTH, ID_LENGTH, UUID_LENGTH, Base

LINE_LENGTH: Final = 64  # wire.CameraFootfall.line


class FootfallCount(Base):
    """People one camera counted across one line in one period (a minute by default)."""

    __tablename__ = "footfall_counts"
    __table_args__ = (
        # The report reads a store's periods by time, or every store's for a chain-wide period.
        Index("ix_footfall_counts_store_period", "store_id", "period_start"),
        Index("ix_footfall_counts_period", "period_start"),
        CheckConstraint("entered >= 0 AND exited >= 0", name="counts_not_negative"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH), primary_key=True)
    line: Mapped[str] = mapped_column(String(LINE_LENGTH), primary_key=True)
    # As the camera stated it (UTC); the report buckets by its local hour in the store's zone.
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_s: Mapped[int] = mapped_column(Integer)
    entered: Mapped[int] = mapped_column(Integer)
    exited: Mapped[int] = mapped_column(Integer)
    # The event that set these counts, to trace a figure back to the event log.
    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH))
    recorded_at: Mapped[datetime]
