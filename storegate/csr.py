"""A new private key and its certificate signing request (and a certificate's dates), by the ``openssl`` command.

The gateway's code does not install the ``cryptography`` package (the ``edge`` extra stays small; the import
contract "gateway-without-hub-packages" keeps it out), and the standard library cannot make keys, so the OpenSSL
command every Raspberry Pi OS and Debian image ships does. The key goes from ``openssl`` to us by a pipe and from us
to ``openssl req`` by a pipe: it is never in a file until the caller writes it (0600).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

_TIMEOUT_S: Final = 60.0  # a P-256 key takes milliseconds; a busy Pi Zero still answers well within this


class KeyGenerationError(RuntimeError):
    """openssl is missing or failed; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True, repr=False)
class KeyAndCsr:
    """A private key (PEM, PKCS#8; never logged) and the CSR of its public key (PEM)."""

    key_pem: bytes
    csr_pem: str

    def __repr__(self) -> str:
        return "KeyAndCsr(<key>, <csr>)"


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise KeyGenerationError("the openssl command is not installed: sudo apt-get install openssl")
    return found


def _run(args: list[str], stdin: bytes | None) -> bytes:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KeyGenerationError(f"openssl could not be run: {err}") from err
    if done.returncode != 0:
        raise KeyGenerationError(f"openssl {args[1]} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def new_key_and_csr(common_name: str) -> KeyAndCsr:
    """An ECDSA P-256 key and a CSR naming ``common_name`` (the hub ignores the name and signs its own)."""
    openssl = _openssl()
    key = _run([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], None)
    # The subject is informative only: '/' separates RDNs for openssl, so it is escaped.
    subject = "/O=Storegate/OU=gateway/CN=" + common_name.replace("/", "\\/")
    csr = _run([openssl, "req", "-new", "-key", "/dev/stdin", "-sha256", "-subj", subject], key)
    return KeyAndCsr(key_pem=key, csr_pem=csr.decode())


def certificate_dates(pem: str | bytes) -> tuple[datetime, datetime]:
    """``(not_before, not_after)`` of the first certificate in ``pem``, UTC; KeyGenerationError if unreadable.

    Read by ``openssl x509``: the standard library has no public parser of a certificate's dates.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    out = _run([_openssl(), "x509", "-noout", "-startdate", "-enddate"], data).decode()
    dates = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    try:
        # openssl prints "notBefore=Dec  6 21:40:00 2026 GMT", the format ssl.cert_time_to_seconds reads.
        return (
            datetime.fromtimestamp(ssl.cert_time_to_seconds(dates["notBefore"]), UTC),
            datetime.fromtimestamp(ssl.cert_time_to_seconds(dates["notAfter"]), UTC),
        )
    except (KeyError, ValueError) as err:
        raise KeyGenerationError(f"openssl printed no dates of the certificate: {out.strip()!r}") from err
