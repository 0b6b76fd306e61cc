"""The hub's certificate authority: its files under ``secrets_dir/pki`` (0700), and what it issues and revokes.

Files (keys 0600, written atomically through :mod:`storegate.private_files`)::

    ca.key, ca.crt          the CA: signs every certificate below and the CRL
    broker.key, broker.crt  the broker's server certificate (SANs: the broker's host names and IPs)
    hub.key, hub.crt        the hub's own client certificate (CN: the hub's MQTT client id)
    index.json              every certificate issued: serial, kind, name, not-after, revoked-at
    crl.pem                 the revocation list the broker checks (``crlfile``), re-signed on every change

A gateway's key is made here and handed out once with its certificate (:class:`IssuedCertificate`), or, with
enrolment by token and renewal, made on the gateway and only its CSR's public key signed here
(:meth:`CertificateAuthority.sign_gateway_csr`); the hub keeps only the certificate's record. Keys are ECDSA
P-256: small, fast on a Raspberry Pi, and what every TLS stack speaks. Changes go under an exclusive lock on
``.lock``, so the CLI and a running hub can issue and revoke at the same time without losing a record.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.errors import HubError
from hub.pki.identity import DEFAULT_HUB_NAME, GatewayIdentity, check_hub_name
from hub.pki.settings import DEFAULT_BROKER_HOSTS
from storegate.private_files import private_dir, write_private

log = structlog.get_logger(__name__)

CertificateKind = Literal["gateway", "hub", "broker"]
SignableKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_KINDS: Final[dict[str, CertificateKind]] = {"gateway": "gateway", "hub": "hub", "broker": "broker"}

CA_DAYS: Final = 3650
LEAF_DAYS: Final = 825
# OpenSSL refuses every client once the CRL's nextUpdate has passed, so it is re-signed on every change and
# valid for long; `storegate hub broker-config` re-signs it too (docs/security.md: rotation).
CRL_DAYS: Final = 365
# Certificates start a little in the past: a gateway whose clock lags by minutes still accepts them.
BACKDATE: Final = timedelta(minutes=10)
ORGANISATION: Final = "Storegate"


class PkiError(HubError, RuntimeError):
    """The CA's files are missing, already there, or do not hold what they should."""


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """One line of the index: a certificate the CA issued."""

    serial: int
    kind: CertificateKind
    name: str
    not_after: datetime
    revoked_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and self.not_after > now

    def to_json(self) -> dict[str, str | None]:
        """The record as stored in index.json (serial in hex, as openssl prints it)."""
        return {
            "serial": format(self.serial, "x"),
            "kind": self.kind,
            "name": self.name,
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, str | None]) -> CertificateRecord:
        """A record read back from index.json."""
        kind = _KINDS.get(str(raw["kind"]))
        if kind is None:
            raise PkiError(f"index.json: unknown certificate kind {raw['kind']!r}")
        revoked = raw.get("revoked_at")
        return cls(
            serial=int(str(raw["serial"]), 16),
            kind=kind,
            name=str(raw["name"]),
            not_after=datetime.fromisoformat(str(raw["not_after"])),
            revoked_at=datetime.fromisoformat(revoked) if revoked else None,
        )


@dataclass(frozen=True, slots=True, repr=False)
class IssuedCertificate:
    """A certificate just issued, with its private key (shown once, never logged) and the CA's certificate."""

    record: CertificateRecord
    certificate_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"IssuedCertificate({self.record.kind} {self.record.name!r}, serial {self.record.serial:x})"

    def write(self, directory: Path, *, stem: str) -> tuple[Path, Path, Path]:
        """Write ``<stem>.crt``, ``<stem>.key`` (0600) and ``ca.crt`` into ``directory`` (made 0700)."""
        private_dir(directory)
        cert, key, ca = directory / f"{stem}.crt", directory / f"{stem}.key", directory / "ca.crt"
        write_private(key, self.key_pem)
        write_private(cert, self.certificate_pem)
        write_private(ca, self.ca_pem)
        return cert, key, ca


def _now() -> datetime:
    return datetime.now(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class CertificateAuthority:
    """The CA whose files live in ``directory``. Build with :meth:`create` once, then :meth:`open`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert_path = directory / "ca.crt"
        self.ca_key_path = directory / "ca.key"
        self.broker_cert_path = directory / "broker.crt"
        self.broker_key_path = directory / "broker.key"
        self.hub_cert_path = directory / "hub.crt"
        self.hub_key_path = directory / "hub.key"
        self.crl_path = directory / "crl.pem"
        self.index_path = directory / "index.json"
        self._lock_path = directory / ".lock"

    # ------------------------------------------------------------------ building and opening

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        broker_hosts: Sequence[str] = DEFAULT_BROKER_HOSTS,
        hub_name: str = DEFAULT_HUB_NAME,
        ca_name: str = "Storegate gateway CA",
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Make a new CA in ``directory`` with the broker's and the hub's certificates and an empty CRL."""
        if not broker_hosts:
            raise PkiError("the broker's certificate needs at least one host name or IP address")
        check_hub_name(hub_name)
        authority = cls(directory)
        private_dir(directory)
        with authority._locked():
            if authority.ca_key_path.exists():
                raise PkiError(f"{directory} already holds a CA; rotating it is a new directory (docs/security.md)")
            at = now or _now()
            key = _new_key()
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, ca_name),
                ]
            )
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(at - BACKDATE)
                .not_valid_after(at + timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256())
            )
            write_private(authority.ca_key_path, _key_pem(key))
            write_private(authority.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM))
            authority._save_index([])
            broker = authority._issue("broker", "storegate-broker", hosts=broker_hosts, days=LEAF_DAYS, now=at)
            write_private(authority.broker_key_path, broker.key_pem)
            write_private(authority.broker_cert_path, broker.certificate_pem)
            hub = authority._issue("hub", hub_name, hosts=(), days=LEAF_DAYS, now=at)
            write_private(authority.hub_key_path, hub.key_pem)
            write_private(authority.hub_cert_path, hub.certificate_pem)
            authority._write_crl(at)
        log.info("pki_created", directory=str(directory), broker_hosts=list(broker_hosts), hub=hub_name)
        return authority

    @classmethod
    def open(cls, directory: Path) -> CertificateAuthority:
        """The CA already made in ``directory`` (by :meth:`create`), or :class:`PkiError`."""
        authority = cls(directory)
        for path in (authority.ca_key_path, authority.ca_cert_path, authority.index_path):
            if not path.is_file():
                raise PkiError(f"{path} is missing: make the CA first with `storegate hub pki init`")
        return authority

    # ------------------------------------------------------------------ what registry and CLI call

    def issue_gateway(
        self, identity: GatewayIdentity, *, days: int = LEAF_DAYS, now: datetime | None = None
    ) -> IssuedCertificate:
        """A new client certificate and key for ``identity``; earlier ones stay valid until revoked."""
        with self._locked():
            issued = self._issue("gateway", identity.common_name, hosts=(), days=days, now=now or _now())
            self._write_crl(now or _now())
        log.info("pki_gateway_issued", gateway=identity.common_name, serial=format(issued.record.serial, "x"))
        return issued

    def sign_gateway_csr(
        self, identity: GatewayIdentity, public_key: SignableKey, *, days: int = LEAF_DAYS, now: datetime | None = None
    ) -> tuple[CertificateRecord, bytes]:
        """A client certificate for ``identity`` on a key the gateway made and kept (the CSR's, checked by the
        caller: hub.fleet.enrolment.read_csr); returns its record and PEM. The CSR's subject is not used."""
        with self._locked():
            at = now or _now()
            cert = self._certificate("gateway", identity.common_name, public_key, hosts=(), days=days, now=at)
            record = self._record("gateway", identity.common_name, cert)
            self._write_crl(at)
        log.info("pki_gateway_signed", gateway=identity.common_name, serial=format(record.serial, "x"))
        return record, cert.public_bytes(serialization.Encoding.PEM)

    def issue_hub(self, name: str, *, days: int = LEAF_DAYS, now: datetime | None = None) -> IssuedCertificate:
        """A client certificate for another hub process (its MQTT client id is ``name``)."""
        check_hub_name(name)
        with self._locked():
            issued = self._issue("hub", name, hosts=(), days=days, now=now or _now())
            self._write_crl(now or _now())
        log.info("pki_hub_issued", hub=name, serial=format(issued.record.serial, "x"))
        return issued

    def renew_broker(self, hosts: Sequence[str], *, now: datetime | None = None) -> CertificateRecord:
        """Replace broker.crt and broker.key with a new pair for ``hosts``; the broker takes it at SIGHUP."""
        if not hosts:
            raise PkiError("the broker's certificate needs at least one host name or IP address")
        with self._locked():
            issued = self._issue("broker", "storegate-broker", hosts=hosts, days=LEAF_DAYS, now=now or _now())
            write_private(self.broker_key_path, issued.key_pem)
            write_private(self.broker_cert_path, issued.certificate_pem)
        log.info("pki_broker_renewed", hosts=list(hosts), serial=format(issued.record.serial, "x"))
        return issued.record

    def renew_hub(self, name: str, *, now: datetime | None = None) -> CertificateRecord:
        """Replace hub.crt and hub.key with a new pair named ``name``; the hub takes it when restarted."""
        check_hub_name(name)
        with self._locked():
            issued = self._issue("hub", name, hosts=(), days=LEAF_DAYS, now=now or _now())
            write_private(self.hub_key_path, issued.key_pem)
            write_private(self.hub_cert_path, issued.certificate_pem)
        log.info("pki_hub_renewed", hub=name, serial=format(issued.record.serial, "x"))
        return issued.record

    def revoke_gateway(self, identity: GatewayIdentity, *, now: datetime | None = None) -> list[CertificateRecord]:
        """Revoke every unrevoked certificate of ``identity`` and re-sign the CRL; returns what was revoked."""
        return self._revoke("gateway", identity.common_name, now=now or _now())

    def revoke_hub(self, name: str, *, now: datetime | None = None) -> list[CertificateRecord]:
        """Revoke every unrevoked certificate of the hub ``name`` and re-sign the CRL."""
        return self._revoke("hub", check_hub_name(name), now=now or _now())

    def refresh_crl(self, *, now: datetime | None = None) -> None:
        """Re-sign the CRL with a fresh nextUpdate (the same revocations)."""
        with self._locked():
            self._write_crl(now or _now())

    def records(self) -> list[CertificateRecord]:
        """Every certificate issued, oldest first."""
        raw = json.loads(self.index_path.read_text())
        return [CertificateRecord.from_json(item) for item in raw["certificates"]]

    def live_gateways(self, *, now: datetime | None = None) -> list[GatewayIdentity]:
        """The gateways that hold a certificate neither revoked nor expired, sorted."""
        at = now or _now()
        names = {r.name for r in self.records() if r.kind == "gateway" and r.live(at)}
        return sorted(GatewayIdentity.parse(name) for name in names)

    def live_hubs(self, *, now: datetime | None = None) -> list[str]:
        """The hub names that hold a certificate neither revoked nor expired, sorted."""
        at = now or _now()
        return sorted({r.name for r in self.records() if r.kind == "hub" and r.live(at)})

    def ca_certificate(self) -> x509.Certificate:
        """The CA's certificate."""
        return x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    # ------------------------------------------------------------------ inside

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _signer(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key_path} does not hold an EC key")
        return key, self.ca_certificate()

    def _save_index(self, records: Sequence[CertificateRecord]) -> None:
        body = {"certificates": [r.to_json() for r in records]}
        write_private(self.index_path, json.dumps(body, indent=1) + "\n")

    def _issue(
        self, kind: CertificateKind, name: str, *, hosts: Sequence[str], days: int, now: datetime
    ) -> IssuedCertificate:
        key = _new_key()
        cert = self._certificate(kind, name, key.public_key(), hosts=hosts, days=days, now=now)
        return IssuedCertificate(
            record=self._record(kind, name, cert),
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.ca_cert_path.read_bytes(),
        )

    def _record(self, kind: CertificateKind, name: str, cert: x509.Certificate) -> CertificateRecord:
        """Add ``cert`` to the index (under the lock)."""
        record = CertificateRecord(serial=cert.serial_number, kind=kind, name=name, not_after=cert.not_valid_after_utc)
        self._save_index([*self.records(), record])
        return record

    def _certificate(
        self,
        kind: CertificateKind,
        name: str,
        public_key: SignableKey,
        *,
        hosts: Sequence[str],
        days: int,
        now: datetime,
    ) -> x509.Certificate:
        if days < 1:
            raise PkiError(f"a certificate must be valid for at least a day, not {days}")
        ca_key, ca_cert = self._signer()
        not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name, kind))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # An RSA key agrees TLS 1.2 keys by encipherment; an EC key signs only.
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_subject_alt_names(hosts)), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def _revoke(self, kind: CertificateKind, name: str, *, now: datetime) -> list[CertificateRecord]:
        with self._locked():
            revoked: list[CertificateRecord] = []
            records: list[CertificateRecord] = []
            for record in self.records():
                if record.kind == kind and record.name == name and record.revoked_at is None:
                    record = CertificateRecord(record.serial, record.kind, record.name, record.not_after, now)
                    revoked.append(record)
                records.append(record)
            if revoked:
                self._save_index(records)
            self._write_crl(now)
        log.info("pki_revoked", kind=kind, name=name, serials=[format(r.serial, "x") for r in revoked])
        return revoked

    def _write_crl(self, now: datetime) -> None:
        ca_key, ca_cert = self._signer()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + timedelta(days=CRL_DAYS))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        for record in self.records():
            # An expired certificate fails on its date alone; it leaves the list so the list stays short.
            if record.revoked_at is not None and record.not_after > now:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(record.serial)
                    .revocation_date(record.revoked_at)
                    .build()
                )
        crl = builder.sign(ca_key, hashes.SHA256())
        # Not secret, but the broker reads it from the hub's files: written whole or not at all.
        write_private(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
