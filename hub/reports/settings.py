"""The reports' settings (``[reports]`` of the hub's config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from hub.reports.schedules.settings import ReportsSettings


class ReportSettings(ReportsSettings):
    """Where PDFs find a font for Chinese names and how large a bundle may be, beside the scheduled reports'
    settings (retries, sizes, catch-up, SMTP: hub.reports.schedules.settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pdf_font: Path | None = Field(
        default=None,
        description=(
            "a TrueType font file (.ttf, or .ttc: its first face) with Chinese glyphs for PDFs; unset, the hub "
            "looks for Debian's fonts-noto-cjk or fonts-wqy-microhei, then asks fontconfig (fc-list :lang=zh)"
        ),
    )
    bundle_max_stores: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="the most stores one cold-chain bundle (a ZIP of PDFs and a workbook) may hold",
    )
