"""The footfall report's settings (``[footfall]`` of the hub's config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FootfallSettings(BaseModel):
    """How the footfall report counts checkout transactions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basket_gap_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "consecutive sale scans at one checkout scanner less than this many seconds apart are one basket "
            "(one sales transaction); a longer pause starts the next customer's"
        ),
    )
