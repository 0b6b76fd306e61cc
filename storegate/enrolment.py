"""Enrolment and certificate renewal between a gateway and the hub: the token's text, the CA pin, the messages.

Shared by the hub (hub.fleet.enrolment) and the gateway (provisioning.enroll, edge_agent.renewal), so it imports
only the standard library and pydantic.

An enrolment token is one string the technician never types (a file, a QR code, a paste)::

    sge1.<token id: 16 hex>.<secret: 43 URL-safe base64>.<CA pin: 64 hex>

The id finds the token's row, the secret (256 random bits; the hub keeps its SHA-256) proves the holder may use it,
and the pin is the SHA-256 of the hub CA certificate's DER: the gateway checks the CA the hub answers against it
before trusting anything signed by that CA, as kubeadm's discovery hash does. A token whose text was changed is
"forged": its id is unknown or its secret does not match, and the hub says so without saying which.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

TOKEN_VERSION: Final = "sge1"  # noqa: S105  # the format's version, not a secret
TOKEN_ID_HEX: Final = 16
SECRET_CHARS: Final = 43  # secrets.token_urlsafe(32)
PIN_HEX: Final = 64
_TOKEN: Final = re.compile(
    rf"^{TOKEN_VERSION}\.(?P<id>[0-9a-f]{{{TOKEN_ID_HEX}}})\.(?P<secret>[A-Za-z0-9_-]{{{SECRET_CHARS}}})"
    rf"\.(?P<pin>[0-9a-f]{{{PIN_HEX}}})$"
)
MAX_TOKEN_CHARS: Final = 160
# A P-256 CSR is under 600 bytes of PEM, an RSA 4096 one under 2 KB: 8 KB is ample and bounds what is parsed.
MAX_CSR_CHARS: Final = 8192
ENROL_PATH: Final = "/api/v1/enrol"
RENEW_PATH: Final = "/api/v1/gateway/certificate"
# Where an enrolment link points (the token rides in the fragment, which browsers and proxies never send or log).
LINK_PATH: Final = "/enrol"


class TokenFormatError(ValueError):
    """Text that is not an enrolment token at all (mistyped, cut short, or not one)."""


@dataclass(frozen=True, slots=True, repr=False)
class EnrolmentToken:
    """A parsed token: which row, its secret (never logged), and the pin of the hub's CA."""

    token_id: str
    secret: str
    ca_pin: str

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"EnrolmentToken({self.token_id})"

    @property
    def text(self) -> str:
        """The token as it is handed out."""
        return f"{TOKEN_VERSION}.{self.token_id}.{self.secret}.{self.ca_pin}"


def parse_token(text: str) -> EnrolmentToken:
    """The token in ``text`` (surrounding blanks ignored), or TokenFormatError saying what it should look like."""
    text = text.strip()
    match = _TOKEN.match(text) if len(text) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise TokenFormatError(
            f"this is not an enrolment token: one looks like {TOKEN_VERSION}.<16 hex>.<43 letters>.<64 hex>, "
            "all on one line; copy it again from the hub"
        )
    return EnrolmentToken(match["id"], match["secret"], match["pin"])


def ca_pin(ca_pem: str | bytes) -> str:
    """The SHA-256 (hex) of the DER of the first certificate in ``ca_pem``; ValueError if there is none."""
    text = ca_pem.decode() if isinstance(ca_pem, bytes) else ca_pem
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate found")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])).hexdigest()


def enrolment_link(hub_url: str, token: str) -> str:
    """The link a phone or `storegate provision enroll --link` takes: the hub and, in the fragment, the token."""
    return f"{hub_url.rstrip('/')}{LINK_PATH}#{token}"


def parse_link(link: str) -> tuple[str, str]:
    """``(hub_url, token)`` of an enrolment link; TokenFormatError when it is not one."""
    base, hash_mark, token = link.strip().partition("#")
    if not hash_mark or not base.endswith(LINK_PATH) or not base.startswith(("https://", "http://")):
        raise TokenFormatError(f"this is not an enrolment link: one looks like https://HUB{LINK_PATH}#TOKEN")
    parse_token(token)
    return base[: -len(LINK_PATH)], token


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrolRequest(_Message):
    """What the gateway sends to enrol: its token and a CSR for the key it made and keeps."""

    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, repr=False)
    csr_pem: str = Field(min_length=1, max_length=MAX_CSR_CHARS, description="PKCS#10, PEM; its subject is ignored")


class EnrolledAgentConfig(_Message):
    """The first agent config the hub proposes (the gateway writes it with its own paths)."""

    store_id: str
    gateway_id: str
    broker_host: str
    broker_port: int = Field(ge=1, le=65535)
    hub_url: str | None = Field(description="the gateway listener (stills, renewal); null when the hub has none")


class EnrolAnswer(_Message):
    """The hub's answer to a good enrolment: the certificate, the CA, where the broker and the listener are."""

    store_id: str
    gateway_id: str
    certificate_pem: str
    ca_certificate_pem: str
    serial: str
    not_after: datetime
    broker_host: str
    broker_port: int = Field(ge=1, le=65535)
    gateway_listener_url: str | None
    agent_config: EnrolledAgentConfig


class RenewRequest(_Message):
    """A gateway asks for a new certificate over mTLS with its current one: the CSR of a new key."""

    csr_pem: str = Field(min_length=1, max_length=MAX_CSR_CHARS)


class RenewAnswer(_Message):
    """The new certificate (for the CSR's key) and the CA."""

    certificate_pem: str
    ca_certificate_pem: str
    serial: str
    not_after: datetime
