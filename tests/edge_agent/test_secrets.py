"""The agent's broker password and TLS key: from a private file or the environment, never from a readable file.

The password tests run the real agent against a real Mosquitto that refuses anonymous clients,
so "the password was read" means "the broker let the agent in".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import PASSWORD_ENV, PASSWORD_FILE_ENV, load_agent_config
from launcher.broker import LocalBroker, find_mosquitto, free_port, mosquitto_config, start_mosquitto_with
from storegate.configfile import ConfigError
from storegate.mqtt import MqttLink, MqttSettings
from storegate.secret_files import SecretFileError
from tests.conftest import eventually
from tests.edge_agent.conftest import running

USER = "store-0042-gw-1"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto that lets in only USER with PASSWORD."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    workdir = tmp_path / "auth-broker"
    workdir.mkdir()
    passwords = workdir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    os.chmod(passwords, 0o600)
    port = free_port()
    config = workdir / "mosquitto.conf"
    # As root Mosquitto drops to the mosquitto user, which may not read a 0600 file in a 0700 tmp_path.
    stay = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(mosquitto_config(port=port, password_file=passwords) + stay)
    broker = start_mosquitto_with(config, host="127.0.0.1", port=port)
    try:
        yield broker
    finally:
        broker.stop(kill=True)


def agent_toml(tmp_path: Path, broker: LocalBroker, *, mqtt_extra: str = "") -> Path:
    """An agent.toml in ``tmp_path`` for ``broker`` as USER, with ``mqtt_extra`` lines in [mqtt]."""
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
store_id = "store-0042"
gateway_id = "gw-1"

[mqtt]
host = "{broker.host}"
port = {broker.port}
username = "{USER}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
{mqtt_extra}

[outbox]
path = "outbox.sqlite3"
"""
    )
    return path


def secret_file(path: Path, content: str, mode: int) -> Path:
    """Write ``content`` to ``path`` and give it ``mode``."""
    path.write_text(content)
    os.chmod(path, mode)
    return path


async def connects(agent: EdgeAgent) -> None:
    """Run ``agent`` until the broker has let it in."""

    async def probe() -> bool:
        return agent.stats.connected

    async with running(agent):
        await eventually(probe, what="the broker accepting the agent's password")


async def test_the_broker_refuses_an_agent_without_the_password(
    tmp_path: Path, auth_broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # The control for the tests below: this broker really does refuse a client without the password.
    config = load_agent_config(agent_toml(tmp_path, auth_broker), environ={})
    assert config.mqtt.broker_password() is None

    async def refusal() -> list[dict[str, Any]]:
        return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "mqtt_refused"]

    async with MqttLink(settings=config.mqtt, client_id="no-password") as link:
        [first, *_] = await eventually(refusal, what="the broker refusing the connection")
        assert first["reason"] == "Not authorized"
        assert link.connects_total == 0


async def test_agent_connects_with_the_password_from_its_private_file(tmp_path: Path, auth_broker: LocalBroker) -> None:
    # A newline at the end, as `echo` or an editor leaves it: the password is the line.
    secret_file(tmp_path / "mqtt-password", PASSWORD + "\n", 0o600)
    path = agent_toml(tmp_path, auth_broker, mqtt_extra='password_file = "mqtt-password"')
    config = load_agent_config(path, environ={})
    assert config.mqtt.password_file == tmp_path / "mqtt-password"  # relative to agent.toml
    assert PASSWORD not in repr(config)
    assert PASSWORD not in str(config.model_dump())
    await connects(EdgeAgent(config=config))


async def test_agent_connects_with_the_password_from_the_environment(tmp_path: Path, auth_broker: LocalBroker) -> None:
    # The environment wins over the file's (wrong) password file, as it does for the hub's settings.
    secret_file(tmp_path / "stale-password", "not it", 0o600)
    path = agent_toml(tmp_path, auth_broker, mqtt_extra='password_file = "stale-password"')
    config = load_agent_config(path, environ={PASSWORD_ENV: PASSWORD})
    assert config.mqtt.password_file is None
    await connects(EdgeAgent(config=config))

    credential = secret_file(tmp_path / "credential", PASSWORD, 0o400)  # as systemd's LoadCredential= leaves it
    config = load_agent_config(path, environ={PASSWORD_FILE_ENV: str(credential)})
    assert config.mqtt.password_file == credential
    await connects(EdgeAgent(config=config))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_a_password_file_others_can_read_or_write_is_refused_like_ssh_does(tmp_path: Path, mode: int) -> None:
    password_file = secret_file(tmp_path / "mqtt-password", PASSWORD, mode)
    (tmp_path / "agent.toml").write_text(
        'store_id = "s-1"\ngateway_id = "gw-1"\n[mqtt]\nusername = "u"\npassword_file = "mqtt-password"\n'
        '[outbox]\npath = "outbox.sqlite3"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_agent_config(tmp_path / "agent.toml", environ={})
    message = str(caught.value)
    assert str(password_file) in message
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {password_file}" in message
    assert PASSWORD not in message
    # The same file through the environment is refused the same way.
    with pytest.raises(ConfigError, match="chmod 600"):
        load_agent_config(tmp_path / "agent.toml", environ={PASSWORD_FILE_ENV: str(password_file)})


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "broker password file not found"), ("", "is empty"), ("\n", "is empty")],
)
def test_a_missing_or_empty_password_file_is_refused_by_name(tmp_path: Path, content: str | None, problem: str) -> None:
    if content is not None:
        secret_file(tmp_path / "mqtt-password", content, 0o600)
    (tmp_path / "agent.toml").write_text(
        'store_id = "s-1"\ngateway_id = "gw-1"\n[mqtt]\nusername = "u"\npassword_file = "mqtt-password"\n'
        '[outbox]\npath = "outbox.sqlite3"\n'
    )
    with pytest.raises(ConfigError, match=problem) as caught:
        load_agent_config(tmp_path / "agent.toml", environ={})
    assert str(tmp_path / "mqtt-password") in str(caught.value)


def test_a_tls_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = secret_file(tmp_path / "gw-1.key", "-----BEGIN PRIVATE KEY-----\n", 0o644)
    (tmp_path / "agent.toml").write_text(
        'store_id = "s-1"\ngateway_id = "gw-1"\n[mqtt]\ntls = true\ncert_file = "gw-1.pem"\nkey_file = "gw-1.key"\n'
        '[outbox]\npath = "outbox.sqlite3"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_agent_config(tmp_path / "agent.toml", environ={})
    assert "TLS private key is readable or writable by group or others (mode 0644)" in str(caught.value)
    assert f"chmod 600 {key}" in str(caught.value)
    os.chmod(key, 0o600)
    assert load_agent_config(tmp_path / "agent.toml", environ={}).mqtt.key_file == key


async def test_an_inline_password_still_works_but_is_warned_about_without_showing_it(
    tmp_path: Path, auth_broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    path = agent_toml(tmp_path, auth_broker, mqtt_extra=f'password = "{PASSWORD}"')
    config = load_agent_config(path, environ={})
    logs = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    [warning] = [entry for entry in logs if entry["event"] == "mqtt_password_inline"]
    assert warning["level"] == "warning"
    assert warning["config"] == str(path)
    assert "password_file" in warning["fix"]
    assert PASSWORD_ENV in warning["fix"]
    assert PASSWORD not in str(logs)
    await connects(EdgeAgent(config=config))


def test_password_and_password_file_together_are_refused_without_echoing_either(tmp_path: Path) -> None:
    secret_file(tmp_path / "mqtt-password", PASSWORD, 0o600)
    (tmp_path / "agent.toml").write_text(
        f'store_id = "s-1"\ngateway_id = "gw-1"\n[mqtt]\nusername = "u"\npassword = "{PASSWORD}"\n'
        'password_file = "mqtt-password"\n[outbox]\npath = "outbox.sqlite3"\n'
    )
    with pytest.raises(ConfigError, match="either password or password_file, not both") as caught:
        load_agent_config(tmp_path / "agent.toml", environ={})
    assert PASSWORD not in str(caught.value)


def test_the_link_refuses_a_password_file_made_readable_after_the_config_was_read(tmp_path: Path) -> None:
    # The link reads the file when it connects: a file opened up since is not used either.
    password_file = secret_file(tmp_path / "mqtt-password", PASSWORD, 0o644)
    settings = MqttSettings(username="u", password_file=password_file)
    with pytest.raises(SecretFileError, match="chmod 600"):
        MqttLink(settings=settings, client_id="x")


def test_the_agent_process_refuses_to_start_with_a_readable_password_file(tmp_path: Path) -> None:
    password_file = secret_file(tmp_path / "mqtt-password", PASSWORD, 0o644)
    config = tmp_path / "agent.toml"
    config.write_text(
        'store_id = "s-1"\ngateway_id = "gw-1"\n[mqtt]\nusername = "u"\npassword_file = "mqtt-password"\n'
        '[outbox]\npath = "outbox.sqlite3"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "agent", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"chmod 600 {password_file}" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "outbox.sqlite3").exists(), "nothing is started with a secret others may have read"
