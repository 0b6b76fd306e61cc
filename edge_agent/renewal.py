"""The gateway renews its certificate with the hub before it ends, and reconnects with the new one.

Once ``[renewal] remaining_fraction`` of the certificate's lifetime is left (a third by default: a month of a
90-day certificate, so a gateway offline for weeks still renews), :class:`CertificateRenewer` makes a new key and
CSR (``openssl``, :mod:`storegate.csr`), sends the CSR to the hub's gateway listener over mTLS with the certificate it
has (``POST /api/v1/gateway/certificate``), checks that the answer is a certificate for the new key, and writes the
pair: both first beside the old ones (``.next``, 0600), then the key and the certificate renamed over the old ones.
A stop between the two renames is finished at the next start (:func:`finish_interrupted_renewal`). Then
``on_renewed`` makes the MQTT link and the stills' uploader take the new pair (a reconnect: the outbox resends what
the hub has not acknowledged, and the hub keeps each event once).

A refusal (403: the gateway was revoked) is logged and reported as a health problem in words; the certificate in use
stays until it ends. Other failures are retried after ``retry_s``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import httpx
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import ValidationError

from edge_agent.config import RenewalConfig
from storegate.clock import Clock
from storegate.csr import KeyGenerationError, certificate_dates, new_key_and_csr
from storegate.enrolment import RENEW_PATH, RenewAnswer, RenewRequest
from storegate.private_files import write_private

log = structlog.get_logger(__name__)

NEXT_SUFFIX: Final = ".next"
Outcome = Literal["renewed", "not_due", "refused", "failed"]


def renewal_due(not_before: datetime, not_after: datetime, now: datetime, remaining_fraction: float) -> bool:
    """Whether at most ``remaining_fraction`` of the lifetime ``not_before``..``not_after`` is left at ``now``."""
    lifetime = not_after - not_before
    return not_after - now <= lifetime * remaining_fraction


def due_at(not_before: datetime, not_after: datetime, remaining_fraction: float) -> datetime:
    """When :func:`renewal_due` becomes true."""
    return not_after - (not_after - not_before) * remaining_fraction


def _next(path: Path) -> Path:
    return path.with_name(path.name + NEXT_SUFFIX)


def finish_interrupted_renewal(cert_file: Path, key_file: Path) -> str | None:
    """Finish or undo a renewal a stop interrupted; what was done, or None when there was nothing to do.

    The key is renamed first: a certificate waiting beside a key already renamed is the new key's, so it follows;
    both waiting means nothing was renamed yet, and the old pair still belongs together: the leftovers go.
    """
    next_cert, next_key = _next(cert_file), _next(key_file)
    if next_cert.exists() and not next_key.exists():
        os.replace(next_cert, cert_file)
        return "finished: the renewed certificate joined its key"
    if next_key.exists():
        next_key.unlink()
        next_cert.unlink(missing_ok=True)
        return "undone: the old certificate and key stay"
    return None


@dataclass(frozen=True, slots=True)
class RenewalState:
    """What the last renewal attempt did, for health and tests."""

    outcome: Outcome | None = None
    detail: str | None = None
    not_after: datetime | None = None


class CertificateRenewer:
    """Renews the gateway's certificate when due; :meth:`run` checks until cancelled."""

    def __init__(
        self,
        *,
        config: RenewalConfig,
        hub_url: str,
        ca_file: Path | None,
        cert_file: Path,
        key_file: Path,
        common_name: str,
        clock: Clock,
        on_renewed: Callable[[], None],
        timeout_s: float = 30.0,
    ) -> None:
        self._config = config
        self._url = hub_url.rstrip("/") + RENEW_PATH
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._common_name = common_name
        self._clock = clock
        self._on_renewed = on_renewed
        self._timeout_s = timeout_s
        self.state = RenewalState()
        self.renewals = 0
        self.refusals = 0
        self.not_after: datetime | None = None  # of the certificate in use, once read

    def problem(self) -> str | None:
        """The health report's sentence while renewal is refused, else None."""
        if self.state.outcome != "refused":
            return None
        ends = f"; the certificate in use ends {self.state.not_after:%Y-%m-%d}" if self.state.not_after else ""
        return f"the hub refused to renew this gateway's certificate: {self.state.detail}{ends}"

    async def run(self) -> None:
        """Check now, then every ``check_interval_s`` (``retry_s`` after a failure), until cancelled."""
        while True:
            outcome = await self.renew_if_due()
            wait = self._config.retry_s if outcome == "failed" else self._config.check_interval_s
            await asyncio.sleep(wait)

    async def renew_if_due(self) -> Outcome:
        """Renew when due; the outcome."""
        try:
            not_before, not_after = await asyncio.to_thread(certificate_dates, self._cert_file.read_bytes())
        except (OSError, KeyGenerationError) as err:
            return self._failed(f"the certificate {self._cert_file} cannot be read: {err}")
        self.not_after = not_after
        if not renewal_due(not_before, not_after, self._clock.now(), self._config.remaining_fraction):
            due = due_at(not_before, not_after, self._config.remaining_fraction)
            log.debug("certificate_renewal_not_due", due_at=due.isoformat())
            return "not_due"
        return await self.renew(not_after=not_after)

    async def renew(self, *, not_after: datetime | None = None) -> Outcome:
        """Renew now, whatever the dates: a new key, the hub's certificate for it, both written, links told."""
        try:
            made = await asyncio.to_thread(new_key_and_csr, self._common_name)
        except KeyGenerationError as err:
            return self._failed(str(err))
        try:
            context = ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
            context.load_cert_chain(str(self._cert_file), str(self._key_file))
            async with httpx.AsyncClient(verify=context, timeout=self._timeout_s) as client:
                response = await client.post(self._url, json=RenewRequest(csr_pem=made.csr_pem).model_dump())
        except (OSError, ssl.SSLError, httpx.HTTPError) as err:
            return self._failed(f"the hub at {self._url} could not be reached: {err.__class__.__name__}: {err}")
        if response.status_code == 403:
            detail = _detail(response)
            self.state = RenewalState("refused", detail, not_after)
            self.refusals += 1
            log.error("certificate_renewal_refused", status=403, detail=detail, url=self._url)
            return "refused"
        if response.status_code != 201:
            return self._failed(f"the hub answered {response.status_code}: {_detail(response)}")
        try:
            answer = RenewAnswer.model_validate_json(response.content)
            await asyncio.to_thread(self._write, made.key_pem, answer.certificate_pem)
        except (ValidationError, ValueError, OSError, ssl.SSLError) as err:
            return self._failed(f"the hub's answer cannot be used: {err}")
        self.state = RenewalState("renewed", f"certificate {answer.serial}", answer.not_after)
        self.not_after = answer.not_after
        self.renewals += 1
        log.info("certificate_renewed", serial=answer.serial, not_after=answer.not_after.isoformat())
        self._on_renewed()
        return "renewed"

    def _write(self, key_pem: bytes, certificate_pem: str) -> None:
        """Check the pair, write both beside the old ones, then rename the key and the certificate over them."""
        with tempfile.TemporaryDirectory() as scratch:  # the check needs files: a private directory of our own
            cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
            write_private(cert, certificate_pem)
            write_private(key, key_pem)
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(cert), str(key))
            except ssl.SSLError as err:
                raise ValueError(f"the certificate is not for the key made here ({err.reason or err})") from None
        next_cert, next_key = _next(self._cert_file), _next(self._key_file)
        write_private(next_cert, certificate_pem)
        write_private(next_key, key_pem)
        os.replace(next_key, self._key_file)
        os.replace(next_cert, self._cert_file)

    def _failed(self, detail: str) -> Outcome:
        self.state = RenewalState("failed", detail, self.state.not_after)
        log.warning("certificate_renewal_failed", detail=detail, retry_in_s=self._config.retry_s)
        return "failed"


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase


def renewal_hub_url(renewal: RenewalConfig, snapshots_hub_url: str | None) -> str | None:
    """The listener renewal talks to: its own setting, else the stills' one."""
    return renewal.hub_url or snapshots_hub_url


class RenewalCollector:
    """Prometheus collector of the renewer: when the certificate ends (an alert's number), renewals and refusals."""

    def __init__(self, renewer: Callable[[], CertificateRenewer | None]) -> None:
        self._renewer = renewer

    def collect(self) -> Iterable[Metric]:
        """The renewal's metrics as of now (none while the agent renews nothing)."""
        renewer = self._renewer()
        if renewer is None:
            return
        if renewer.not_after is not None:
            yield GaugeMetricFamily(
                "storegate_agent_certificate_expiry_timestamp_seconds",
                "When the gateway's certificate ends (Unix time); it is renewed a third of its lifetime before.",
                value=renewer.not_after.timestamp(),
            )
        yield CounterMetricFamily(
            "storegate_agent_certificate_renewals", "Certificates renewed with the hub.", value=renewer.renewals
        )
        yield CounterMetricFamily(
            "storegate_agent_certificate_renewals_refused",
            "Renewals the hub refused (a revoked gateway).",
            value=renewer.refusals,
        )
