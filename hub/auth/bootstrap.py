"""Access for a hub that has none yet: the demo's admin with a one-time password, and a token for its own calls."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from hub.auth import audit, operators
from hub.auth.audit import AuditEvent
from hub.db.engine import create_engine, session_factory
from hub.db.migrate import upgrade_to_head
from storegate import wire

DEMO_ADMIN: Final = "demo-admin"
DEMO_TOKEN_LIFETIME: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DemoAccess:
    """How to sign in to the demo (printed once) and the token the demo itself calls the API with."""

    username: str = ""
    password: str = ""
    token: str = ""

    def __repr__(self) -> str:  # never the secrets, should this end up in a log
        return f"DemoAccess(username={self.username!r})"


async def create_demo_access(database_url: str) -> DemoAccess:
    """Migrate, add an admin with a fresh random password (a new name if the data dir already has one) and a
    one-day admin token for the demo's catalog loading; both audited as ``demo``."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    password = secrets.token_urlsafe(12)
    now = wire.utc_now()
    try:
        async with session_factory(engine)() as session:
            username = DEMO_ADMIN
            if await operators.operator_named(session, username) is not None:
                username = f"{DEMO_ADMIN}-{secrets.token_hex(3)}"
            operator = await operators.add_operator(
                session, username=username, role="admin", password=password, scope=operators.Scope(), by="demo", now=now
            )
            token, text = await operators.create_token(
                session,
                name="demo-loader",
                role="admin",
                scope=operators.Scope(),
                lifetime=DEMO_TOKEN_LIFETIME,
                by="demo",
                now=now,
            )
            events = [
                AuditEvent(
                    action="user.added",
                    actor="demo",
                    actor_kind="cli",
                    outcome="ok",
                    target=f"operator:{username}",
                    after=operators.operator_json(operator),
                ),
                AuditEvent(
                    action="token.created",
                    actor="demo",
                    actor_kind="cli",
                    outcome="ok",
                    target=f"token:{token.token_id}",
                    after=operators.token_json(token),
                ),
            ]
            await audit.append(session, events, at=now)
            await session.commit()
    finally:
        await engine.dispose()
    return DemoAccess(username=username, password=password, token=text)
