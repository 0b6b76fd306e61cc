"""A gateway's certificate follows its enrolment: issued when it is added, revoked with it, the broker told.

The registry (:mod:`hub.fleet.registry`) decides what the hub accepts; the CA (:mod:`hub.pki`) decides whom the
broker lets in. Adding and revoking change both here, so a gateway added is one the broker admits, and a gateway
revoked is refused at the broker (CRL and ACL) and at the hub from then on. A hub that runs no CA (no
``storegate hub pki init``: the demo, or a broker whose clients someone else certifies) enrols without them.

Both functions block (files, a signature, a SIGHUP): the API calls them with ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.pki.authority import CertificateAuthority, CertificateRecord, IssuedCertificate, SignableKey
from hub.pki.broker import sync_broker
from hub.pki.commands import pki_directory
from hub.pki.identity import GatewayIdentity
from hub.settings import HubSettings


def hub_authority(settings: HubSettings) -> CertificateAuthority | None:
    """The hub's CA, or None when the hub runs none (nothing made by ``storegate hub pki init``)."""
    directory = pki_directory(settings)
    if not (directory / "ca.key").is_file():
        return None
    return CertificateAuthority.open(directory)


def check_identity(settings: HubSettings, store_id: str, gateway_id: str) -> None:
    """Raise IdentityError when the hub runs a CA and the ids cannot be a certificate's name (before enrolling)."""
    if hub_authority(settings) is not None:
        GatewayIdentity(store_id, gateway_id)


def issue_credentials(settings: HubSettings, store_id: str, gateway_id: str) -> IssuedCertificate | None:
    """Issue the gateway its client certificate and key and admit it at the broker; None without a CA."""
    authority = hub_authority(settings)
    if authority is None:
        return None
    issued = authority.issue_gateway(GatewayIdentity(store_id, gateway_id))
    sync_broker(authority, settings.broker)
    return issued


@dataclass(frozen=True, slots=True)
class SignedCertificate:
    """A certificate the CA signed for a gateway's own key, with the CA's certificate."""

    record: CertificateRecord
    certificate_pem: str
    ca_pem: str


def sign_gateway_key(
    authority: CertificateAuthority,
    settings: HubSettings,
    store_id: str,
    gateway_id: str,
    public_key: SignableKey,
    *,
    sync: bool = True,
) -> SignedCertificate:
    """Sign a certificate for the gateway's own key (enrolment by token, renewal); with ``sync``, admit it at the
    broker too (a renewal of a gateway the broker knows already needs no new ACL block, only the index)."""
    record, pem = authority.sign_gateway_csr(
        GatewayIdentity(store_id, gateway_id), public_key, days=settings.enrolment.certificate_days
    )
    if sync:
        sync_broker(authority, settings.broker)
    return SignedCertificate(record, pem.decode(), authority.ca_cert_path.read_text())


def revoke_credentials(settings: HubSettings, store_id: str, gateway_id: str) -> int:
    """Revoke every certificate of the gateway and shut it out at the broker; how many were revoked."""
    authority = hub_authority(settings)
    if authority is None:
        return 0
    revoked = authority.revoke_gateway(GatewayIdentity(store_id, gateway_id))
    sync_broker(authority, settings.broker)
    return len(revoked)
