"""How scheduled reports run and leave the hub: retries, sizes, catch-up, and the SMTP server for e-mail.

A module of its own, so the hub's settings (:mod:`hub.settings`) read these models without importing the runner.
The SMTP password is a secret like the broker's: ``password_file`` (mode 0600, read when sending) or the
environment (``STOREGATE_HUB_REPORTS__SMTP__PASSWORD``); never in a log line, a repr or an error.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub.reports.schedules.addresses import address_problem
from storegate.secret_files import read_secret_file

SmtpSecurity = Literal["starttls", "tls", "none"]


class SmtpSettings(BaseModel):
    """The SMTP server that sends scheduled reports by e-mail (``[reports.smtp]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253, description="the SMTP server's host name or address")
    port: int = Field(default=587, ge=1, le=65535, description="587 for STARTTLS, 465 for TLS, 25 for neither")
    security: SmtpSecurity = Field(
        default="starttls",
        description="starttls (upgrade a plain connection, refused if the server cannot), tls (TLS from the first "
        "byte), none (plain text: only to a relay on loopback or a trusted network)",
    )
    username: str | None = Field(default=None, max_length=256, description="log in as this user; none: no login")
    password: SecretStr | None = Field(
        default=None, description="the login's password; prefer password_file or the environment"
    )
    password_file: Path | None = Field(default=None, description="file holding the password (mode 0600)")
    from_address: str = Field(
        min_length=3, max_length=254, description="the From address of the reports, e.g. reports@chain.example"
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of CAs to trust besides the system's, for a relay whose certificate a private CA signed",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=300, description="per connection, connect to the last reply")

    @model_validator(mode="after")
    def _one_password_source(self) -> SmtpSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a password needs a username")
        return self

    @field_validator("from_address")
    @classmethod
    def _one_address(cls, value: str) -> str:
        problem = address_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def login_password(self) -> SecretStr | None:
        """The password, inline or read from ``password_file`` (SecretFileError if that file is not private)."""
        if self.password_file is not None:
            return read_secret_file(self.password_file, what="SMTP password file")
        return self.password


class ReportsSettings(BaseModel):
    """Scheduled reports: how often the runner looks, retries, the size allowed, catch-up, e-mail (``[reports]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedules_enabled: bool = Field(default=True, description="run report schedules in this hub (the leader only)")
    poll_interval_s: float = Field(default=30.0, gt=0, le=3600, description="look for due schedules this often")
    retry_delays_s: tuple[float, ...] = Field(
        default=(60.0, 300.0, 900.0, 3600.0),
        min_length=1,
        description="wait after the 1st, 2nd, ... failed attempt; the last one repeats if attempts remain",
    )
    max_attempts: int = Field(default=5, ge=1, le=50, description="attempts per delivery before it is failed")
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="per webhook request, connect to last byte")
    max_document_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=200 * 1024 * 1024,
        description="a rendered report larger than this is not sent (the delivery fails, saying its size)",
    )
    max_catch_up: int = Field(
        default=3,
        ge=0,
        le=31,
        description="after downtime, runs missed per schedule that are still sent (the newest); older ones skipped",
    )
    failing_after: int = Field(
        default=3,
        ge=1,
        le=100,
        description="/healthz names a schedule whose last this-many deliveries all failed",
    )
    smtp: SmtpSettings | None = Field(
        default=None, description="the SMTP server for e-mail deliveries; none: schedules cannot e-mail"
    )

    @field_validator("retry_delays_s")
    @classmethod
    def _positive(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in delays):
            raise ValueError("every retry delay must be more than 0 seconds")
        return delays

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after ``attempts`` failed attempts (1 is the first)."""
        return timedelta(seconds=self.retry_delays_s[min(attempts, len(self.retry_delays_s)) - 1])
