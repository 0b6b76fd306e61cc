"""Webhook secrets at rest: sealed with the hub's key (a 0600 file made on first use), never in the database in
clear; plain-text secrets of an older database carried over by migration 0007 and sealed when the hub starts;
the key rotated by putting a new one first; a wrong key fails the delivery in words, never silently."""

from __future__ import annotations

import asyncio
import logging
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import column, insert, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import Webhook
from hub.alerting.secret_box import (
    KEY_FILE_NAME,
    SecretBox,
    SecretKeyError,
    SecretUnreadable,
    key_file,
    new_key,
    seal_stored_secrets,
)
from hub.app import HubStartupError
from hub.db.engine import create_engine, session_factory
from hub.db.migrate import alembic_config, upgrade_to_head
from hub.settings import HubSettings
from storegate.private_files import private_dir, write_private
from tests.hub.alerting.test_notifications import (
    T0,
    TEST_BOX,
    Receiver,
    add_webhook,
    api,
    deliveries,
    dispatcher_for,
    receiver,
    record,
)
from tests.hub.conftest import running_hub

__all__ = ["api", "receiver"]  # the fixtures, used by name

SECRET = "plain-text-secret-from-2025"
# The webhooks table as revision 0004 made it: the secret in plain text.
WEBHOOKS_0004 = table(
    "webhooks", *(column(name) for name in ("webhook_id", "url", "secret", "enabled", "created_at", "created_by"))
)


async def stored_webhooks(engine: AsyncEngine) -> dict[str, tuple[str, str | None]]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(Webhook.webhook_id, Webhook.legacy_secret, Webhook.secret_sealed))
        return {webhook_id: (legacy, sealed) for webhook_id, legacy, sealed in rows}


def test_the_key_file_is_made_private_on_first_use_and_kept(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    box = SecretBox.open(secrets_dir)
    path = secrets_dir / KEY_FILE_NAME
    assert not path.exists()  # nothing is written until a secret needs the key
    sealed = box.seal(SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert SECRET not in sealed
    assert SecretBox.open(secrets_dir).unseal(sealed) == SECRET  # the same key next time, not a new one
    with pytest.raises(SecretUnreadable):
        SecretBox([new_key()]).unseal(sealed)


def test_a_key_file_others_may_read_or_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    SecretBox.open(tmp_path).seal(SECRET)
    key_file(tmp_path).chmod(0o644)
    with pytest.raises(SecretKeyError, match="may be read by others"):
        SecretBox.open(tmp_path).check()
    write_private(key_file(tmp_path), "not-a-key\n")
    with pytest.raises(SecretKeyError, match="not a Fernet key"):
        SecretBox.open(tmp_path).seal(SECRET)


async def test_the_api_stores_only_the_sealed_secret(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    given = "a-secret-the-database-never-sees"
    created = await api.post("/api/v1/webhooks", json={"url": "https://alarms.example.com/in", "secret": given})
    assert created.status_code == 201, created.text
    generated = await api.post("/api/v1/webhooks", json={"url": "https://alarms.example.com/in2"})
    listing = await api.get("/api/v1/webhooks")
    stored = await stored_webhooks(engine)
    for response, secret in ((created, given), (generated, generated.json()["secret"])):
        legacy, sealed = stored[response.json()["webhook_id"]]
        assert legacy == ""
        assert sealed is not None
        assert secret not in sealed
        assert TEST_BOX.unseal(sealed) == secret
        assert secret not in listing.text
        assert sealed not in listing.text


async def test_migration_carries_plain_text_secrets_over_and_the_hub_seals_them(
    empty_database_url: str, tmp_path: Path
) -> None:
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0004")
    engine = create_engine(empty_database_url)
    try:
        webhook_id, other = str(uuid.uuid4()), str(uuid.uuid4())
        async with engine.begin() as connection:
            for wid in (webhook_id, other):
                await connection.execute(
                    insert(WEBHOOKS_0004).values(
                        webhook_id=wid,
                        url="https://alarms.example.com/in",
                        secret=SECRET,
                        enabled=True,
                        created_at=T0,
                        created_by="alice",
                    )
                )
            await connection.execute(
                text(
                    "INSERT INTO notifications (id, event, alert_id, store_id, body, created_at, mqtt_published) "
                    "VALUES (1, 'alert.opened', :alert, 'store-0001', '{}', :at, true)"
                ),
                {"alert": str(uuid.uuid4()), "at": T0},
            )
            await connection.execute(
                text(
                    "INSERT INTO webhook_deliveries (notification_id, webhook_id, status, attempts, next_attempt_at, "
                    "last_error, last_status_code) VALUES (1, :w, 'failed', 6, :at, :error, 500)"
                ),
                {"w": webhook_id, "at": T0, "error": "HTTP 500: <html>internal admin page, token=abc</html>"},
            )
        await upgrade_to_head(empty_database_url)
        assert await stored_webhooks(engine) == {webhook_id: (SECRET, None), other: (SECRET, None)}
        [delivery] = await deliveries(engine)
        assert (delivery.last_error, delivery.last_status_code) == ("HTTP 500", 500)  # the page is gone

        box = SecretBox.open(tmp_path / "secrets")
        assert await seal_stored_secrets(engine, box) == 2
        stored = await stored_webhooks(engine)
        for legacy, sealed in stored.values():
            assert legacy == ""
            assert sealed is not None
            assert box.unseal(sealed) == SECRET
        assert await seal_stored_secrets(engine, box) == 0  # nothing left to do on the next start
        assert await stored_webhooks(engine) == stored
        # Going back would need the key, which a migration does not have: refused, nothing lost.
        with pytest.raises(RuntimeError, match="sealed"):
            await asyncio.to_thread(command.downgrade, config, "0004")
        assert await stored_webhooks(engine) == stored
    finally:
        await engine.dispose()


async def test_the_hub_seals_plain_text_secrets_when_it_starts(hub_settings: HubSettings, tmp_path: Path) -> None:
    engine = create_engine(hub_settings.database_url)
    try:
        webhook_id = str(uuid.uuid4())
        async with session_factory(engine)() as session, session.begin():
            session.add(
                Webhook(
                    webhook_id=webhook_id,
                    url="https://alarms.example.com/in",
                    legacy_secret=SECRET,
                    enabled=True,
                    created_at=T0,
                    created_by="alice",
                )
            )
        async with running_hub(hub_settings):
            pass
        [(legacy, sealed)] = (await stored_webhooks(engine)).values()
        assert legacy == ""
        assert sealed is not None
        assert SecretBox.open(hub_settings.secrets_dir).unseal(sealed) == SECRET
        assert stat.S_IMODE(key_file(hub_settings.secrets_dir).stat().st_mode) == 0o600
    finally:
        await engine.dispose()


async def test_a_hub_without_webhooks_writes_no_key_and_a_broken_key_stops_it(hub_settings: HubSettings) -> None:
    async with running_hub(hub_settings):
        pass
    assert not key_file(hub_settings.secrets_dir).exists()
    private_dir(hub_settings.secrets_dir)
    write_private(key_file(hub_settings.secrets_dir), "not-a-key\n")
    with pytest.raises(HubStartupError, match=r"cannot use the webhook key: .*not a Fernet key"):
        async with running_hub(hub_settings):
            pass


async def test_rotating_the_key_reseals_every_secret_under_the_new_one(engine: AsyncEngine, tmp_path: Path) -> None:
    old_key, fresh_key = new_key(), new_key()
    old = SecretBox([old_key])
    async with session_factory(engine)() as session, session.begin():
        for n in range(3):
            session.add(
                Webhook(
                    webhook_id=str(uuid.uuid4()),
                    url="https://alarms.example.com/in",
                    secret_sealed=old.seal(f"{SECRET}-{n}"),
                    enabled=True,
                    created_at=T0,
                    created_by="alice",
                )
            )
    # The operator puts the new key first and keeps the old one until the hub has started once.
    write_private(key_file(tmp_path), f"{fresh_key}\n# retired 2026-12-06, delete after the restart\n{old_key}\n")
    assert await seal_stored_secrets(engine, SecretBox.open(tmp_path)) == 3
    write_private(key_file(tmp_path), f"{fresh_key}\n")
    only_new = SecretBox.open(tmp_path)
    secrets = sorted(only_new.unseal(sealed or "") for _, sealed in (await stored_webhooks(engine)).values())
    assert secrets == [f"{SECRET}-{n}" for n in range(3)]
    for _, sealed in (await stored_webhooks(engine)).values():
        with pytest.raises(SecretUnreadable):
            old.unseal(sealed or "")


async def test_a_secret_the_key_does_not_open_fails_the_delivery_in_words(
    engine: AsyncEngine, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    webhook_id = await add_webhook(engine, f"{receiver.base_url}/ok", secret=SECRET)
    await record(engine)
    # The hub started with another hub's key file.
    dispatcher = dispatcher_for(engine, secret_box=SecretBox([new_key()]), max_attempts=1)
    try:
        assert await dispatcher.deliver_due() == 1
    finally:
        await dispatcher.stop()
    [delivery] = await deliveries(engine, webhook_id)
    assert delivery.status == "failed"
    assert delivery.last_error == "not sent: the webhook's secret does not open with the hub's key file"
    assert receiver.hits == []  # nothing unsigned, nothing signed with a wrong key
    assert SECRET not in caplog.text
