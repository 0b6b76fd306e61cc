"""``[releases]`` of hub.toml: where the agent software's wheels are kept, how large one may be, the rollout loop."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ReleaseSettings(BaseModel):
    """Releases of the agent software (wheels) and the runner of their rollouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path = Field(default=Path("storegate-hub-releases"), description="where the release wheels are kept")
    max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="the largest wheel accepted"
    )
    poll_s: float = Field(default=2.0, gt=0, le=300, description="how often the rollout runner looks at rollouts")
