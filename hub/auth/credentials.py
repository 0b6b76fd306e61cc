"""Passwords (Argon2id, by argon2-cffi) and the random secrets of sessions, CSRF and API tokens (SHA-256).

Passwords are few and guessable, so they get a slow, memory-hard hash. Session ids, CSRF tokens and API
tokens are 256 random bits: nobody can guess one, so a fast SHA-256 is enough to keep the database from
holding them usable, and a request finds its row by that digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PASSWORD_MIN_LENGTH: Final = 12
PASSWORD_MAX_LENGTH: Final = 1024
SECRET_BYTES: Final = 32
TOKEN_PREFIX: Final = "sgt_"  # noqa: S105  # not a secret: makes a leaked token easy to recognise and scan for

# argon2-cffi's defaults follow RFC 9106's second recommendation (Argon2id, 64 MiB, 3 passes).
_hasher: Final = PasswordHasher()


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"a password needs at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"a password has at most {PASSWORD_MAX_LENGTH} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    return None


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (its salt included)."""
    return _hasher.hash(password)


@cache
def _decoy_hash() -> str:
    # Verified against when the username is unknown, so that case takes as long as a wrong password.
    return _hasher.hash(secrets.token_urlsafe(SECRET_BYTES))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash (unknown user) it spends the same time and says no."""
    try:
        ok = _hasher.verify(password_hash if password_hash is not None else _decoy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_token() -> str:
    """A new API token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + new_secret()


def digest(secret: str) -> str:
    """The SHA-256 of a session id, CSRF token or API token, hex: what the database keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(given: str, expected_digest: str) -> bool:
    """Whether ``given`` hashes to ``expected_digest``, compared in constant time."""
    return hmac.compare_digest(digest(given), expected_digest)
