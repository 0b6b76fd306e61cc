"""The tables of operators, their browser sessions, API tokens and the append-only audit log.

Secrets are never stored: passwords as Argon2id hashes, session ids and API tokens as SHA-256 of
their 256 random bits (a fast hash suffices for values nobody can guess, and lets each request find
its row by the hash). The audit log refuses UPDATE and DELETE by triggers (migration 0006).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import ID_LENGTH, UUID_LENGTH, Base, BigId

USERNAME_LENGTH: Final = 64
ROLE_LENGTH: Final = 16
HASH_LENGTH: Final = 255
LANGUAGE_LENGTH: Final = 8
DIGEST_LENGTH: Final = 64  # SHA-256, hex
ACTOR_LENGTH: Final = 128
ACTION_LENGTH: Final = 160
CLIENT_LENGTH: Final = 64


class Operator(Base):
    """A person who signs in: a role and, optionally, the stores or regions the role applies to."""

    __tablename__ = "operators"

    operator_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(ROLE_LENGTH))
    password_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    # Both None: every store. Otherwise the listed stores plus the stores of the listed regions.
    store_ids: Mapped[list[str] | None] = mapped_column(JSON)
    regions: Mapped[list[str] | None] = mapped_column(JSON)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    # The console's language they chose (hub.console.i18n.LOCALES); None: their browser's languages decide.
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_LENGTH))


class OperatorSession(Base):
    """A browser session: the SHA-256 of its cookie, and the CSRF token the pages must send back."""

    __tablename__ = "operator_sessions"

    session_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    operator_id: Mapped[int] = mapped_column(Integer, ForeignKey("operators.operator_id"), index=True)
    csrf_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    client: Mapped[str | None] = mapped_column(String(CLIENT_LENGTH))


class ApiToken(Base):
    """A token for an integration: a role and stores, an expiry, revocable; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    token_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(ROLE_LENGTH))
    store_ids: Mapped[list[str] | None] = mapped_column(JSON)
    regions: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One thing done (or refused): who, what, when, from where, the outcome, and before/after where known.

    Append-only: no code path updates or deletes a row, and the database's triggers refuse it.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_at", "actor", "at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))  # a username, token:<name>, cli, or anonymous
    actor_kind: Mapped[str] = mapped_column(String(16))  # user, token, cli, anonymous
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))  # e.g. "POST /api/v1/transfers", "login.failed"
    target: Mapped[str | None] = mapped_column(Text)  # the path asked for, or the object acted on
    store_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    outcome: Mapped[str] = mapped_column(String(32))  # an HTTP status, "ok", "refused", "throttled"
    client: Mapped[str | None] = mapped_column(String(CLIENT_LENGTH))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[str | None] = mapped_column(Text)
