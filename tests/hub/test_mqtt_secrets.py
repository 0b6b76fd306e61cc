"""The hub's broker password: from a private file or the environment, like the agent's; never from a readable file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hub.settings import load_hub_settings
from storegate.configfile import ConfigError

PASSWORD = "hub broker secret"


def secret_file(path: Path, content: str, mode: int) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


def test_password_file_from_the_toml_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = secret_file(tmp_path / "mqtt-password", PASSWORD + "\n", 0o600)
    config = tmp_path / "hub.toml"
    config.write_text(f'[mqtt]\nusername = "hub"\npassword_file = "{password_file}"\n')
    settings = load_hub_settings(config)
    password = settings.mqtt.broker_password()
    assert password is not None
    assert password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings)

    monkeypatch.setenv("STOREGATE_HUB_MQTT__PASSWORD_FILE", str(password_file))
    from_environment = load_hub_settings(None).mqtt.broker_password()
    assert from_environment is not None
    assert from_environment.get_secret_value() == PASSWORD


def test_a_password_file_others_can_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = secret_file(tmp_path / "mqtt-password", PASSWORD, 0o644)
    monkeypatch.setenv("STOREGATE_HUB_MQTT__PASSWORD_FILE", str(password_file))
    with pytest.raises(ConfigError) as caught:
        load_hub_settings(None)
    message = str(caught.value)
    assert f"chmod 600 {password_file}" in message
    assert "mode 0644" in message
    assert PASSWORD not in message


def test_a_tls_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = secret_file(tmp_path / "hub.key", "-----BEGIN PRIVATE KEY-----\n", 0o640)
    config = tmp_path / "hub.toml"
    config.write_text(f'[mqtt]\ntls = true\ncert_file = "{tmp_path / "hub.pem"}"\nkey_file = "{key}"\n')
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        load_hub_settings(config)


def test_an_inline_password_is_warned_about_and_both_sources_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[mqtt]\nusername = "hub"\npassword = "{PASSWORD}"\n')
    password = load_hub_settings(config).mqtt.broker_password()
    assert password is not None
    assert password.get_secret_value() == PASSWORD
    entries: list[dict[str, Any]] = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    [warning] = [entry for entry in entries if entry["event"] == "mqtt_password_inline"]
    assert "STOREGATE_HUB_MQTT__PASSWORD" in warning["fix"]
    assert PASSWORD not in caplog.text

    secret_file(tmp_path / "mqtt-password", PASSWORD, 0o600)
    config.write_text(f'[mqtt]\nusername = "hub"\npassword = "{PASSWORD}"\npassword_file = "mqtt-password"\n')
    with pytest.raises(ConfigError, match="either password or password_file, not both") as caught:
        load_hub_settings(config)
    assert PASSWORD not in str(caught.value)
