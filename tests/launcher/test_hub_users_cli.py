"""``storegate hub users`` and ``storegate hub tokens``: the first admin without a default password, tokens printed
once, disabling and revoking, each audited; the password never on the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from hub.auth import credentials
from hub.auth.models import ApiToken, AuditEntry, Operator
from hub.auth.operators import check_login, check_token
from hub.db.engine import create_engine, session_factory
from launcher.cli import app
from storegate import wire

runner = CliRunner()
PASSWORD = "a long enough password"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key in ("STOREGATE_HUB_DATABASE_URL",):
        monkeypatch.delenv(key, raising=False)
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"


def rows(database_url: str, model: type[object]) -> list[object]:
    async def read() -> list[object]:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                return list((await session.scalars(select(model))).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_first_admin_is_added_with_a_password_from_stdin_and_can_sign_in(database: str) -> None:
    result = runner.invoke(
        app, ["hub", "users", "add", "alice", "--role", "admin", "--database-url", database], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert "added alice (admin)" in result.output
    (alice,) = rows(database, Operator)
    assert isinstance(alice, Operator)
    assert alice.password_hash.startswith("$argon2id$")
    assert PASSWORD not in alice.password_hash

    async def signs_in(password: str) -> bool:
        engine = create_engine(database)
        try:
            async with session_factory(engine)() as session:
                return await check_login(session, "alice", password) is not None
        finally:
            await engine.dispose()

    assert asyncio.run(signs_in(PASSWORD)) is True
    assert asyncio.run(signs_in("a long enough passworD")) is False
    audit = [(e.action, e.actor_kind) for e in rows(database, AuditEntry)]  # type: ignore[attr-defined]
    assert audit == [("user.added", "cli")]


def test_a_scoped_operator_from_a_password_file_then_listed_and_disabled(database: str, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    added = runner.invoke(
        app,
        [
            "hub",
            "users",
            "add",
            "olga",
            "--role",
            "ops",
            "--store",
            "store-0001",
            "--region",
            "north",
            "--password-file",
            str(secret),
            "--database-url",
            database,
        ],
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["hub", "users", "list", "--database-url", database])
    assert "olga\tops\tstores store-0001; regions north\tenabled" in listed.output
    taken = runner.invoke(
        app,
        ["hub", "users", "add", "OLGA", "--role", "viewer", "--password-file", str(secret), "--database-url", database],
    )
    assert taken.exit_code == 1
    assert "taken" in taken.output
    disabled = runner.invoke(app, ["hub", "users", "disable", "olga", "--database-url", database])
    assert disabled.exit_code == 0
    assert "disabled" in runner.invoke(app, ["hub", "users", "list", "--database-url", database]).output


def test_weak_passwords_and_unknown_roles_are_refused(database: str) -> None:
    short = runner.invoke(
        app, ["hub", "users", "add", "bob", "--role", "admin", "--database-url", database], input="short\n"
    )
    assert short.exit_code == 1
    assert "at least 12 characters" in short.output
    role = runner.invoke(
        app, ["hub", "users", "add", "bob", "--role", "root", "--database-url", database], input=PASSWORD + "\n"
    )
    assert role.exit_code == 1
    assert "no role 'root'" in role.output
    assert rows(database, Operator) == []


def test_a_token_is_printed_once_works_and_stops_when_revoked(database: str) -> None:
    created = runner.invoke(
        app,
        [
            "hub",
            "tokens",
            "create",
            "prometheus",
            "--role",
            "viewer",
            "--expires-in",
            "90d",
            "--database-url",
            database,
        ],
    )
    assert created.exit_code == 0, created.output
    token = next(line for line in created.output.splitlines() if line.startswith("sgt_"))
    (row,) = rows(database, ApiToken)
    assert isinstance(row, ApiToken)
    assert row.token_digest == credentials.digest(token)
    listed = runner.invoke(app, ["hub", "tokens", "list", "--database-url", database]).output
    assert "prometheus\tviewer\tevery store\tactive" in listed
    assert token not in listed

    async def principal_of(text: str) -> str | None:
        engine = create_engine(database)
        try:
            async with session_factory(engine)() as session:
                checked = await check_token(session, text, now=wire.utc_now())
                return checked.principal.actor if checked.principal is not None else checked.refusal
        finally:
            await engine.dispose()

    assert asyncio.run(principal_of(token)) == "token:prometheus"
    revoked = runner.invoke(app, ["hub", "tokens", "revoke", row.token_id, "--database-url", database])
    assert revoked.exit_code == 0
    assert asyncio.run(principal_of(token)) == "revoked token"
    bad = runner.invoke(
        app, ["hub", "tokens", "create", "x", "--role", "viewer", "--expires-in", "forever", "--database-url", database]
    )
    assert bad.exit_code == 2
    assert "90d or 12h" in bad.output
    actions = [e.action for e in rows(database, AuditEntry)]  # type: ignore[attr-defined]
    assert actions == ["token.created", "token.revoked"]
