"""The ``snapshots`` table: one row per still the hub holds, and where its file is."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import DEVICE_ID_LENGTH, ID_LENGTH, Base

# A still's reference: the SHA-256 of its bytes in hex, as the gateway names it.
REF_LENGTH: Final = 64
PATH_LENGTH: Final = 255


class SnapshotRow(Base):
    """A still a gateway uploaded: whose it is, when, how large, where its file lies and until when it is kept."""

    __tablename__ = "snapshots"
    __table_args__ = (
        Index("ix_snapshots_expires_at", "expires_at"),
        # A shrink alert looks for its slot's camera's still near the pick (hub.alerting.monitoring).
        Index("ix_snapshots_store_device_taken", "store_id", "device_id", "taken_at"),
    )

    # Per store: the same bytes from two stores (a black frame) are two stills, each seen by its store's people.
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    ref: Mapped[str] = mapped_column(String(REF_LENGTH), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    device_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH))
    taken_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # Relative to the snapshot directory, so the directory can move (a restore on another disk).
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))
    expires_at: Mapped[datetime]
