"""How alert notifications are delivered: webhook retries and timeouts, the MQTT acknowledgement wait, polling.

A module of its own, so the hub's settings (:mod:`hub.settings`) read this model without importing the
senders (:mod:`hub.alerting.notices`, :mod:`hub.alerting.webhooks`).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.alerting.egress_policy import parse_allowed


class NotificationSettings(BaseModel):
    """How the dispatcher delivers: webhook retries and timeouts, MQTT acknowledgement wait, polling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_delays_s: tuple[float, ...] = Field(
        default=(5.0, 30.0, 120.0, 600.0, 3600.0),
        min_length=1,
        description="wait after the 1st, 2nd, ... failed attempt; the last one repeats if attempts remain",
    )
    max_attempts: int = Field(default=6, ge=1, le=100, description="attempts per delivery before it is failed")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per webhook request, connect to last byte")
    publish_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="how long to wait for the broker's PUBACK before trying again"
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="look for work this often when not woken by notify()"
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="rows read per pass")
    max_concurrent_requests: int = Field(default=8, ge=1, le=256, description="webhook requests in flight")
    webhook_allowed_networks: tuple[str, ...] = Field(
        default=(),
        description=(
            "networks (CIDR, e.g. 10.20.0.0/16 or 127.0.0.1/32) and host names webhooks may reach although they are "
            "not public; everything else that is loopback, private, link-local, multicast or reserved is refused"
        ),
    )

    @field_validator("retry_delays_s")
    @classmethod
    def _positive(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in delays):
            raise ValueError("every retry delay must be more than 0 seconds")
        return delays

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks_or_hosts(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            parse_allowed(entry)  # raises ValueError naming the entry
        return entries

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after ``attempts`` failed attempts (1 is the first)."""
        return timedelta(seconds=self.retry_delays_s[min(attempts, len(self.retry_delays_s)) - 1])
