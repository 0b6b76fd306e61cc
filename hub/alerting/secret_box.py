"""Webhook secrets encrypted at rest with the hub's key (Fernet: AES-128-CBC and HMAC-SHA256).

The hub must have a webhook's secret in clear to sign, so it cannot keep only a hash; it keeps the secret
encrypted and the key apart from the database, in ``<secrets_dir>/webhook-secrets.key`` (0600, in the
0700 secrets directory, created on first use). A copy of the database, a backup, or read access to
PostgreSQL then shows no secret.

The key file holds one Fernet key a line. The first encrypts; all of them decrypt. Rotating: put a new
key (``python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``)
on the first line, restart the hub, which re-encrypts every secret
under it (:func:`seal_stored_secrets`), then delete the old line. See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import Webhook
from hub.db.engine import session_factory
from hub.errors import HubError
from storegate.private_files import create_private_once, is_private

log = structlog.get_logger(__name__)

KEY_FILE_NAME: Final = "webhook-secrets.key"


class SecretKeyError(HubError):
    """The key file is unusable: unreadable, readable by others, or not Fernet keys."""


class SecretUnreadable(HubError):
    """A sealed secret does not open with any key of the key file (another hub's key, or a damaged value)."""


def new_key() -> str:
    """A fresh key, as a line of the key file."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens webhook secrets with the keys of one key file (the first one seals).

    :meth:`open` reads (or makes) the key file when a secret is first sealed or opened, not before: a hub
    without webhooks never needs the key, and never writes it.
    """

    def __init__(self, keys: Sequence[str | bytes] | None = None, *, path: Path | None = None) -> None:
        self._path = path
        self._fernets: tuple[Fernet, MultiFernet] | None = None if keys is None else _fernets(keys)

    @classmethod
    def open(cls, secrets_dir: Path) -> SecretBox:
        """The box of ``secrets_dir``'s key file, made (with one new key) when a secret first needs it."""
        return cls(path=key_file(secrets_dir))

    def check(self) -> None:
        """Read an existing key file now, so a broken one stops the hub at start; SecretKeyError says why."""
        if self._path is None or self._path.exists():
            self._keys()

    def _keys(self) -> tuple[Fernet, MultiFernet]:
        if self._fernets is None:
            assert self._path is not None
            self._fernets = _read_key_file(self._path)
        return self._fernets

    @property
    def _primary(self) -> Fernet:
        return self._keys()[0]

    @property
    def _fernet(self) -> MultiFernet:
        return self._keys()[1]

    def seal(self, secret: str) -> str:
        """``secret`` encrypted under the first key."""
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, sealed: str) -> str:
        """The secret inside ``sealed``; SecretUnreadable when no key opens it."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("the webhook's secret does not open with the hub's key file") from None

    def is_current(self, sealed: str) -> bool:
        """Whether ``sealed`` is encrypted under the first key (nothing to re-seal)."""
        try:
            self._primary.decrypt(sealed.encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """``sealed`` encrypted again under the first key (after a rotation); SecretUnreadable as unseal."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("the webhook's secret does not open with the hub's key file") from None


def _fernets(keys: Sequence[str | bytes]) -> tuple[Fernet, MultiFernet]:
    if not keys:
        raise SecretKeyError("no key")
    try:
        fernets = [Fernet(key) for key in keys]
    except (ValueError, TypeError):
        raise SecretKeyError("a line is not a Fernet key (32 url-safe base64-encoded bytes)") from None
    return fernets[0], MultiFernet(fernets)


def _read_key_file(path: Path) -> tuple[Fernet, MultiFernet]:
    """The keys of ``path``, which is made (0600, one new key) if it does not exist; SecretKeyError says why not."""
    try:
        # Made on first use; another hub process making it at the same moment wins, and both use its key.
        create_private_once(path, new_key() + "\n")
        if not is_private(path):
            raise SecretKeyError(f"{path} may be read by others: make it 0600 (chmod 600 {path})")
        text = path.read_text()
    except OSError as err:
        raise SecretKeyError(f"cannot use {path}: {err.strerror or err}") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        return _fernets(keys)
    except SecretKeyError as err:
        raise SecretKeyError(f"{path}: {err}") from None


def key_file(secrets_dir: Path) -> Path:
    """Where the webhook key lives."""
    return secrets_dir / KEY_FILE_NAME


async def seal_stored_secrets(engine: AsyncEngine, box: SecretBox) -> int:
    """Seal every plain-text secret (from before migration 0007) and re-seal the others under the first key.

    Run when the hub starts; returns how many webhooks changed. A secret no key opens is left as it is
    and reported: its deliveries fail, saying so, until the right key file is back.
    """
    changed = 0
    async with session_factory(engine)() as session, session.begin():
        rows = (
            await session.execute(
                select(Webhook.webhook_id, Webhook.legacy_secret, func.coalesce(Webhook.secret_sealed, "")).where(
                    or_(Webhook.legacy_secret != "", Webhook.secret_sealed.is_not(None))
                )
            )
        ).all()
        for webhook_id, legacy, sealed in rows:
            try:
                if legacy:
                    fresh = box.seal(legacy)
                elif box.is_current(sealed):
                    continue
                else:
                    fresh = box.reseal(sealed)
            except SecretUnreadable:
                log.error("webhook_secret_unreadable", webhook_id=webhook_id)
                continue
            await session.execute(
                update(Webhook)
                .where(Webhook.webhook_id == webhook_id)
                .values(secret_sealed=fresh, legacy_secret="")
                .execution_options(synchronize_session=False)
            )
            changed += 1
    return changed
