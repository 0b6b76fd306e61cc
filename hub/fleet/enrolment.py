"""Enrolment by one-time token: an admin or technician makes a token for one store's gateway, the gateway spends it.

A token (its text: :mod:`storegate.enrolment`) is shown once; the hub keeps the SHA-256 of its secret (256 random
bits: nobody can guess one, so a fast hash is right) and compares in constant time. It is live until it expires, is
used or is revoked; each refusal says which (:class:`TokenRefusedError`). Spending it is one conditional UPDATE
(``... WHERE used_at IS NULL AND revoked_at IS NULL``) in the enrolment's own transaction, so of two uses at once
exactly one enrols, on SQLite and on PostgreSQL (the second's UPDATE waits for the first's row lock, then finds it
used).

The gateway sends a CSR for a key it made and keeps; :func:`read_csr` checks it (PEM, size, self-signature, EC P-256
or RSA of 2048 bits or more) and its subject is ignored: the certificate names the token's store and gateway.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import credentials
from hub.db.models import ACTOR_LENGTH, EnrolmentToken, Gateway
from hub.errors import HubError
from hub.fleet import registry
from hub.pki.authority import SignableKey
from storegate import enrolment
from storegate.enrolment import MAX_CSR_CHARS, TOKEN_ID_HEX

RSA_MIN_BITS: Final = 2048
RSA_MAX_BITS: Final = 8192  # beyond, signing the CSR's check costs the hub for nothing

RefusalReason = Literal["forged", "expired", "used", "revoked", "gateway_enrolled"]
REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = ("forged", "expired", "used", "revoked", "gateway_enrolled")


class EnrolmentError(HubError, ValueError):
    """A token that cannot be made (bad ids, a lifetime out of bounds, a gateway enrolled already)."""


class TokenNotFoundError(HubError, LookupError):
    """No enrolment token of that id."""


class TokenRefusedError(HubError, PermissionError):
    """A token that does not enrol: ``reason`` is forged, expired, used, revoked or gateway_enrolled."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CsrError(HubError, ValueError):
    """A certificate signing request the hub will not sign; the message says why."""


@dataclass(frozen=True, slots=True, repr=False)
class NewToken:
    """A token just made: its row and its text (shown once, never logged)."""

    row: EnrolmentToken
    text: str

    def __repr__(self) -> str:
        return f"NewToken({self.row.token_id})"


def token_state(row: EnrolmentToken, now: datetime) -> Literal["live", "used", "revoked", "expired"]:
    """What a token is now, for lists and for refusals."""
    if row.used_at is not None:
        return "used"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= now:
        return "expired"
    return "live"


def lifetime(hours: float | None, *, default_hours: float, max_hours: float) -> timedelta:
    """The token's lifetime: ``hours`` if given and within bounds, else the default; EnrolmentError past the bound."""
    chosen = default_hours if hours is None else hours
    if not 0 < chosen <= max_hours:
        raise EnrolmentError(f"a token may live between a minute and {max_hours:g} hours, not {chosen:g}")
    return timedelta(hours=chosen)


async def create_token(
    session: AsyncSession,
    *,
    store_id: str,
    gateway_id: str,
    ca_pin: str,
    valid_for: timedelta,
    by: str,
    now: datetime,
) -> NewToken:
    """A new token for ``store_id/gateway_id`` (not enrolled, or revoked); flushed, not committed."""
    try:
        registry.gateway_key(store_id, gateway_id)
    except registry.InvalidGatewayError as err:
        raise EnrolmentError(str(err)) from None
    existing = await session.get(Gateway, (store_id, gateway_id))
    if existing is not None and existing.revoked_at is None:
        raise EnrolmentError(
            f"gateway {store_id}/{gateway_id} is enrolled already: revoke it first to enrol a new device in its place"
        )
    token = enrolment.EnrolmentToken(secrets.token_hex(TOKEN_ID_HEX // 2), credentials.new_secret(), ca_pin)
    row = EnrolmentToken(
        token_id=token.token_id,
        secret_digest=credentials.digest(token.secret),
        store_id=store_id,
        gateway_id=gateway_id,
        created_at=now,
        created_by=by[:ACTOR_LENGTH],
        expires_at=now + valid_for,
    )
    session.add(row)
    await session.flush()
    return NewToken(row=row, text=token.text)


async def list_tokens(session: AsyncSession, *, store_ids: frozenset[str] | None) -> Sequence[EnrolmentToken]:
    """Tokens newest first, of ``store_ids`` (None: every store)."""
    stmt = select(EnrolmentToken).order_by(EnrolmentToken.created_at.desc(), EnrolmentToken.token_id)
    if store_ids is not None:
        stmt = stmt.where(EnrolmentToken.store_id.in_(sorted(store_ids)))
    return (await session.scalars(stmt)).all()


async def find_token(session: AsyncSession, token_id: str) -> EnrolmentToken:
    """One token by id; TokenNotFoundError otherwise."""
    row = await session.get(EnrolmentToken, token_id, populate_existing=True)
    if row is None:
        raise TokenNotFoundError(f"no enrolment token {token_id}")
    return row


async def revoke_token(session: AsyncSession, row: EnrolmentToken, *, by: str, now: datetime) -> EnrolmentToken:
    """Revoke a live or expired token; EnrolmentError when it was used or revoked already."""
    state = token_state(row, now)
    if state in ("used", "revoked"):
        raise EnrolmentError(f"enrolment token {row.token_id} was {state} already")
    row.revoked_at, row.revoked_by = now, by[:ACTOR_LENGTH]
    await session.flush()
    return row


async def claim(session: AsyncSession, text: str, *, ca_pin: str, client: str | None, now: datetime) -> EnrolmentToken:
    """Spend the token ``text``: mark it used in the caller's transaction, or TokenRefusedError saying why.

    ``ca_pin`` is the pin of the hub's CA now: a token whose pin was altered would make the gateway refuse the
    answer after the token was spent, so it is refused as forged before.
    """
    try:
        token = enrolment.parse_token(text)
    except enrolment.TokenFormatError:
        raise _forged() from None
    row = await session.get(EnrolmentToken, token.token_id, populate_existing=True)
    if row is None or not credentials.same_secret(token.secret, row.secret_digest) or token.ca_pin != ca_pin:
        raise _forged()
    _refuse_unless_live(row, now)
    claimed = await session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.token_id == row.token_id,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.revoked_at.is_(None),
        )
        .values(used_at=now, used_from=(client or "")[:64] or None),
        execution_options={"synchronize_session": False},
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]  # another enrolment spent it a moment ago
        await session.refresh(row)
        _refuse_unless_live(row, now)
        raise TokenRefusedError("used", f"this enrolment token was used already (token {row.token_id})")
    await session.refresh(row)
    return row


def _forged() -> TokenRefusedError:
    return TokenRefusedError(
        "forged", "this enrolment token is not one the hub made (mistyped, cut short, or forged): ask for a new one"
    )


def _refuse_unless_live(row: EnrolmentToken, now: datetime) -> None:
    state = token_state(row, now)
    if state == "used":
        assert row.used_at is not None
        raise TokenRefusedError(
            "used",
            f"this enrolment token was used already, at {row.used_at:%Y-%m-%d %H:%M} UTC: a token enrols one "
            "gateway once; ask for a new one",
        )
    if state == "revoked":
        assert row.revoked_at is not None
        raise TokenRefusedError(
            "revoked",
            f"this enrolment token was revoked at {row.revoked_at:%Y-%m-%d %H:%M} UTC by {row.revoked_by}: "
            "ask for a new one",
        )
    if state == "expired":
        raise TokenRefusedError(
            "expired",
            f"this enrolment token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC: ask for a new one",
        )


def read_csr(pem: str) -> SignableKey:
    """The public key of a CSR the hub will sign, or CsrError: PEM, bounded, self-signed, P-256 or RSA >= 2048."""
    if len(pem) > MAX_CSR_CHARS:
        raise CsrError(f"the CSR is larger than {MAX_CSR_CHARS} characters")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise CsrError("the CSR is not a PEM certificate signing request (PKCS#10)") from None
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not match its public key (made with another key?)")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CsrError(f"the CSR's key is on curve {key.curve.name}; the hub signs P-256 (secp256r1) keys")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise CsrError(f"the CSR's RSA key has {key.key_size} bits; the hub signs {RSA_MIN_BITS} to {RSA_MAX_BITS}")
        return key
    raise CsrError("the CSR's key is neither EC P-256 nor RSA; the hub signs only those")
