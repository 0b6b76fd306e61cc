"""``[enrolment]`` of hub.toml: how gateways enrol by token and renew, and where the hub tells them to go."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_TOKEN_HOURS: Final = 24.0
# With the agent renewing by itself (a third of the lifetime before the end), a short lifetime limits what a
# stolen key is worth; 90 days leaves a gateway offline for two months still able to renew when it returns.
DEFAULT_CERTIFICATE_DAYS: Final = 90

_URL: Final = r"^https?://[^/\s#?]+$"


class EnrolmentSettings(BaseModel):
    """Enrolment tokens' lifetimes, issued certificates' lifetime, and the addresses a new gateway is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_url: str | None = Field(
        default=None,
        pattern=_URL,
        description="the operators' API as gateways reach it, e.g. 'https://hub.example.net' (in the enrol "
        "command and link a token comes with); unset: the address the token's creator used",
    )
    broker_host: str | None = Field(
        default=None,
        min_length=1,
        description="the broker's address as gateways reach it; unset: the first of broker.hosts",
    )
    broker_port: int | None = Field(
        default=None, ge=1, le=65535, description="the broker's TLS port for gateways; unset: broker.port"
    )
    gateway_listener_url: str | None = Field(
        default=None,
        pattern=_URL,
        description="the gateway listener as gateways reach it (stills, renewal), e.g. 'https://hub.example.net:8443'"
        "; unset: https://<snapshots.listen_host>:<snapshots.listen_port> when the listener is on",
    )
    token_hours: float = Field(
        default=DEFAULT_TOKEN_HOURS, gt=0, le=24 * 30, description="a token's lifetime unless its creator asks less"
    )
    token_max_hours: float = Field(
        default=24 * 7, gt=0, le=24 * 30, description="the longest lifetime a token's creator may ask for"
    )
    certificate_days: int = Field(
        default=DEFAULT_CERTIFICATE_DAYS,
        ge=2,
        le=825,
        description="the lifetime of a certificate signed at enrolment or renewal",
    )

    @model_validator(mode="after")
    def _default_within_bound(self) -> EnrolmentSettings:
        if self.token_hours > self.token_max_hours:
            raise ValueError(
                f"enrolment.token_hours ({self.token_hours}) is above enrolment.token_max_hours "
                f"({self.token_max_hours})"
            )
        return self
