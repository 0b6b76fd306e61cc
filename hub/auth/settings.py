"""How operators sign in: session lifetime, login throttling, token lifetimes.

A module of its own, so :mod:`hub.settings` reads it without importing the rest of ``hub.auth``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AuthSettings(BaseModel):
    """Sessions, throttling of failed sign-ins, and the longest an API token may live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_ttl_s: float = Field(
        default=12 * 3600.0, ge=60, le=7 * 86_400, description="a browser session ends this long after sign-in"
    )
    login_max_failures: int = Field(
        default=5, ge=1, le=1000, description="failed sign-ins (per username, and per client address) before a lockout"
    )
    login_window_s: float = Field(default=900.0, gt=0, le=86_400, description="failures older than this are forgotten")
    login_lockout_s: float = Field(
        default=900.0, gt=0, le=86_400, description="how long sign-ins are refused after too many failures"
    )
    token_max_days: int = Field(default=366, ge=1, le=3660, description="the longest lifetime of an API token")
