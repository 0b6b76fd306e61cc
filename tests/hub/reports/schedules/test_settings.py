"""``[reports]`` and ``[reports.smtp]`` settings: the SMTP password kept like the broker's (issue 16)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

from hub.settings import load_hub_settings
from storegate.configfile import ConfigError

SQLITE = "sqlite+aiosqlite:///hub.sqlite3"


def write_config(tmp_path: Path, smtp: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(f'database_url = "{SQLITE}"\n\n[reports.smtp]\n{smtp}')
    return path


def test_a_password_file_others_may_read_is_refused_naming_it(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("hunter2-smtp\n")
    os.chmod(secret, 0o644)
    config = write_config(
        tmp_path, f'host = "mail.example"\nusername = "hub"\npassword_file = "{secret}"\nfrom_address = "r@c.example"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_hub_settings(config)
    assert "reports.smtp" in str(raised.value)
    assert str(secret) in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_an_inline_password_works_is_never_shown_and_is_warned_about(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, 'host = "mail.example"\nusername = "hub"\npassword = "hunter2-smtp"\nfrom_address = "r@c.example"\n'
    )
    with structlog.testing.capture_logs() as logs:
        settings = load_hub_settings(config)
    smtp = settings.reports.smtp
    assert smtp is not None
    password = smtp.login_password()
    assert password is not None
    assert password.get_secret_value() == "hunter2-smtp"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert [entry["event"] for entry in logs] == ["smtp_password_inline"]


@pytest.mark.parametrize(
    ("smtp", "words"),
    [
        ('host = "mail.example"\nfrom_address = "r@c.example"\npassword = "x"\n', "a password needs a username"),
        ('host = "mail.example"\nfrom_address = "Reports <r@c.example>"\n', "not one plain e-mail address"),
        ('host = "mail.example"\nfrom_address = "r@c.example"\nsecurity = "ssl3"\n', "security"),
        ('host = "mail.example"\nfrom_address = "r@c.example"\nport = 0\n', "port"),
    ],
)
def test_bad_smtp_settings_are_refused_in_words(tmp_path: Path, smtp: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_hub_settings(write_config(tmp_path, smtp))
    assert words in str(raised.value)


def test_the_environment_sets_the_smtp_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STOREGATE_HUB_REPORTS__SMTP__PASSWORD", "from-the-env")
    config = write_config(tmp_path, 'host = "mail.example"\nusername = "hub"\nfrom_address = "r@c.example"\n')
    smtp = load_hub_settings(config).reports.smtp
    assert smtp is not None
    password = smtp.login_password()
    assert password is not None
    assert password.get_secret_value() == "from-the-env"
