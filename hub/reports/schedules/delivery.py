"""Sending a rendered report: a signed webhook POST, or an e-mail with the report attached.

Webhook: the body is the report file itself (``Content-Type`` its media type, ``Content-Disposition`` its name),
signed like the alert webhooks (``X-Storegate-Timestamp``, ``X-Storegate-Signature: sha256=<HMAC of
"{timestamp}.{body}">``, :func:`hub.alerting.webhooks.verify_signature`), with what it is in headers:
``X-Storegate-Event: report.delivered``, ``X-Storegate-Delivery`` (the same on every attempt of one delivery, so a
receiver drops a repeat), ``X-Storegate-Schedule``, ``X-Storegate-Report`` (kind and format) and
``X-Storegate-Period`` (``first/last`` local dates). Connections go through the hub's egress guard
(:mod:`hub.alerting.egress`): no loopback, private or link-local address unless
``notifications.webhook_allowed_networks`` allows it; no redirects, no proxy from the environment.

E-mail: :mod:`smtplib` in a thread (one message per delivery, a few a day: a thread is cheaper than another
dependency), STARTTLS or TLS with the system's trusted CAs, a short text body and the report attached. The
``Message-ID`` is the delivery's, the same on every attempt.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final

import httpx

from hub.alerting.egress import GuardedBackend, GuardedTransport, Resolver
from hub.alerting.egress_policy import EgressPolicy
from hub.alerting.webhooks import describe_failure, quiet_leaky_library_logs, sign
from hub.errors import HubError
from hub.reports.schedules.kinds import ReportDocument
from hub.reports.schedules.settings import SmtpSettings

EVENT: Final = "report.delivered"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a delivery sends besides the document: who it is, for the headers and the e-mail's words."""

    delivery_id: int
    schedule_id: str
    schedule_name: str
    kind: str
    output: str
    first_day: str
    last_day: str

    @property
    def delivery_key(self) -> str:
        """The same on every attempt of this delivery: receivers drop a repeat by it."""
        return f"report-{self.delivery_id}"

    @property
    def period(self) -> str:
        """``first/last`` local dates, or the one date."""
        return self.first_day if self.first_day == self.last_day else f"{self.first_day}/{self.last_day}"


class DeliveryError(HubError):
    """An attempt failed; the message says why in words (never the receiver's answer, never a secret)."""


def _disposition(filename: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return f'attachment; filename="{safe}"'


class WebhookPoster:
    """POSTs reports to webhooks through the egress guard; one HTTP client for the runner's life."""

    def __init__(
        self,
        *,
        policy: EgressPolicy,
        timeout_s: float,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self._policy = policy
        self._timeout_s = timeout_s
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._on_refused = on_refused
        self._http: httpx.AsyncClient | None = None
        quiet_leaky_library_logs()

    def _count_refused(self, host: str, problem: str) -> None:
        if self._on_refused is not None:
            self._on_refused(host, problem)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            backend = GuardedBackend(policy=self._policy, resolver=self._resolver, on_refused=self._count_refused)
            self._http = httpx.AsyncClient(
                transport=GuardedTransport(backend=backend, ssl_context=self._ssl_context),
                timeout=self._timeout_s,
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    async def close(self) -> None:
        """Close the HTTP client (a later post opens a new one)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post(self, url: str, secret: str, envelope: Envelope, document: ReportDocument) -> None:
        """POST ``document`` signed with ``secret``; DeliveryError in words unless the receiver answers 2xx."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": document.media_type,
            "Content-Disposition": _disposition(document.filename),
            "User-Agent": "storegate-hub",
            "X-Storegate-Event": EVENT,
            "X-Storegate-Delivery": envelope.delivery_key,
            "X-Storegate-Schedule": envelope.schedule_id,
            "X-Storegate-Report": f"{envelope.kind}/{envelope.output}",
            "X-Storegate-Period": envelope.period,
            "X-Storegate-Timestamp": str(timestamp),
            "X-Storegate-Signature": sign(secret, timestamp, document.body),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client().stream("POST", url, content=document.body, headers=headers) as response:
                    status = response.status_code  # only the status: the receiver's body is none of ours
        except TimeoutError:
            raise DeliveryError(f"no answer within {self._timeout_s:g} s") from None
        except Exception as err:  # refused address, connection refused, TLS, DNS: all retried alike
            raise DeliveryError(describe_failure(err)) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")


def email_message(
    smtp: SmtpSettings, recipients: list[str], envelope: Envelope, document: ReportDocument, *, hub_name: str
) -> EmailMessage:
    """The e-mail of a report: a short text body, the report attached, a Message-ID of the delivery."""
    message = EmailMessage()
    message["From"] = smtp.from_address
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"{envelope.schedule_name}: {envelope.kind} {envelope.period}"
    message["Date"] = formatdate(localtime=False)
    domain = smtp.from_address.rsplit("@", 1)[-1]
    message["Message-ID"] = f"<{envelope.delivery_key}.{envelope.schedule_id}@{domain}>"
    message.set_content(
        f"The scheduled report {envelope.schedule_name!r} ({envelope.kind}, {envelope.output}) for "
        f"{envelope.period} is attached: {document.filename}, {len(document.body)} bytes.\n\n"
        f"Sent by the Storegate hub {hub_name}; schedule {envelope.schedule_id}, delivery {envelope.delivery_key}.\n"
    )
    main, _, sub = document.media_type.split(";", 1)[0].strip().partition("/")
    message.add_attachment(
        document.body, maintype=main or "application", subtype=sub or "octet-stream", filename=document.filename
    )
    return message


def _send_blocking(smtp: SmtpSettings, message: EmailMessage, recipients: list[str]) -> None:
    context = ssl.create_default_context()
    if smtp.ca_file is not None:
        context.load_verify_locations(cafile=smtp.ca_file)
    client: smtplib.SMTP
    if smtp.security == "tls":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    with client:
        if smtp.security == "starttls":
            try:
                client.starttls(context=context)
            except smtplib.SMTPNotSupportedError:
                raise DeliveryError("the SMTP server does not offer STARTTLS; not sent in plain text") from None
        if smtp.username is not None:
            password = smtp.login_password()
            try:
                client.login(smtp.username, password.get_secret_value() if password is not None else "")
            except smtplib.SMTPNotSupportedError:
                raise DeliveryError("the SMTP server offers no login (AUTH) on this connection") from None
        client.send_message(message, from_addr=smtp.from_address, to_addrs=recipients)


async def send_email(smtp: SmtpSettings, message: EmailMessage, recipients: list[str]) -> None:
    """Send ``message`` through ``smtp`` in a thread; DeliveryError in words (never the password) on failure."""
    try:
        await asyncio.to_thread(_send_blocking, smtp, message, recipients)
    except smtplib.SMTPAuthenticationError as err:
        raise DeliveryError(f"the SMTP server refused the login of {smtp.username!r} (code {err.smtp_code})") from None
    except DeliveryError:
        raise
    except smtplib.SMTPRecipientsRefused as err:
        raise DeliveryError(f"the SMTP server refused every recipient ({len(err.recipients)})") from None
    except smtplib.SMTPResponseException as err:
        text = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
        raise DeliveryError(f"the SMTP server answered {err.smtp_code}: {' '.join(text.split())[:200]}") from None
    except (OSError, smtplib.SMTPException, ValueError) as err:
        raise DeliveryError(f"cannot send through {smtp.host}:{smtp.port}: {describe_failure(err)}") from None
