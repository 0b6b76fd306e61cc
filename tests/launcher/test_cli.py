"""The ``storegate`` command as a technician meets it: help texts, config errors, provisioning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.config import load_agent_config
from launcher.broker import free_port
from launcher.cli import app


def storegate(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ((), ["hub", "agent", "provision", "demo"]),
        (("hub",), ["--config", "--port", "--database-url", "--role", "STOREGATE_HUB_", "--log-format", "--log-level"]),
        (("agent",), ["--config", "--log-format", "--log-level"]),
        (("demo",), ["--http-port", "--broker", "--data-dir", "--log-format", "--log-level"]),
        (("simulate-store",), ["--workdir", "--log-format", "--log-level"]),
        (("provision",), ["agent-config", "check", "detect"]),
        (("provision", "agent-config"), ["--store-id", "--gateway-id", "--broker-host"]),
    ],
)
def test_every_subcommand_explains_its_options(args: tuple[str, ...], mentions: list[str]) -> None:
    result = storegate(*args, "--help")
    assert result.returncode == 0, result.stderr
    for word in mentions:
        assert word in result.stdout


def test_broken_agent_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'store_id = "store-1"\ngateway_id = "gw-1"\n[outbox]\npath = "o.sqlite3"\nmax_batch = -1\n[mqtt]\nprot = 1883\n'
    )
    result = storegate("agent", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "outbox.max_batch" in result.stderr
    assert "mqtt.prot: unknown key" in result.stderr


def test_agent_status_reads_the_gateway_homes_config_by_default(tmp_path: Path) -> None:
    # In process (typer's runner): a subprocess costs seconds of interpreter start-up for nothing more.
    home = tmp_path / "home"
    env = {"STOREGATE_AGENT_HOME": str(home), "STOREGATE_AGENT_CONFIG": ""}
    runner = CliRunner()
    missing = runner.invoke(app, ["agent", "status", "--json"], env=env)
    assert missing.exit_code == 2
    assert f"no agent config at {home / 'agent.toml'} (the default)" in missing.stderr
    home.mkdir()
    (home / "agent.toml").write_text('store_id = "store-1"\ngateway_id = "gw-1"\n')
    found = runner.invoke(app, ["agent", "status", "--json"], env=env)
    assert found.exit_code == 2
    assert json.loads(found.stdout) == {
        "error": f"no status file {home / 'outbox.sqlite.status.json'}: the agent has not run with this config"
    }


def test_the_technicians_tools_are_wired(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'store_id = "store-1"\ngateway_id = "gw-1"\n[mqtt]\nport = {free_port()}\n')
    runner = CliRunner()
    detected = runner.invoke(app, ["provision", "detect", "--config", str(config), "--json"])
    assert detected.exit_code in (0, 1)  # whatever this machine has plugged in
    assert set(json.loads(detected.stdout)) == {"devices", "not_plugged_in", "added"}  # added: with --add
    walked = runner.invoke(app, ["provision", "selftest", "--config", str(config), "--yes"])
    assert walked.exit_code == 0
    assert "selftest PASSED: 0 passed, 0 failed, 0 skipped; report selftest-" in walked.stdout
    assert "1 report(s) kept in" in walked.stdout  # no hub_url to send it to
    checked = runner.invoke(app, ["provision", "check", "--config", str(config), "--connect", "--timeout", "2"])
    assert checked.exit_code == 1
    assert "FAIL tcp: nothing listens on 127.0.0.1:" in checked.stdout


def test_broken_hub_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("http_port = 8000\n[mqtt]\nport = 70000\n")
    result = storegate("hub", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "mqtt.port" in result.stderr
    assert "70000" in result.stderr


def test_an_unknown_hub_environment_variable_stops_a_hub_command_with_exit_2(tmp_path: Path) -> None:
    # Every hub command loads the settings the same way (load_hub_settings); `pki list` imports the least.
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("STOREGATE_HUB_")}
    env["STOREGATE_HUB_MQTT__PROT"] = "8883"
    result = storegate("hub", "pki", "list", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "environment variable STOREGATE_HUB_MQTT__PROT: names no setting; did you mean STOREGATE_HUB_MQTT__PORT?"
        in result.stderr
    )


def test_provisioned_config_is_valid_and_checkable(tmp_path: Path) -> None:
    output = tmp_path / "gw" / "agent.toml"
    result = storegate(
        "provision",
        "agent-config",
        "--store-id",
        "store-0042",
        "--gateway-id",
        "gw-3",
        "--broker-host",
        "hub.example.net",
        "--broker-port",
        "8883",
        "--username",
        "gw-3",
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    config = load_agent_config(output)
    assert (config.store_id, config.gateway_id, config.mqtt.host, config.mqtt.port) == (
        "store-0042",
        "gw-3",
        "hub.example.net",
        8883,
    )
    assert config.outbox.path == output.parent / "outbox.sqlite3"
    check = storegate("provision", "check", "--config", str(output))
    assert check.returncode == 0
    assert "valid for store store-0042" in check.stdout
    again = storegate("provision", "agent-config", "--store-id", "s", "--gateway-id", "g", "--output", str(output))
    assert again.returncode == 2
    assert "--force" in again.stderr


def test_provisioning_refuses_ids_that_cannot_be_topic_segments(tmp_path: Path) -> None:
    result = storegate(
        "provision",
        "agent-config",
        "--store-id",
        "Store 42/#",
        "--gateway-id",
        "gw-1",
        "--output",
        str(tmp_path / "agent.toml"),
    )
    assert result.returncode == 2
    assert "store_id" in result.stderr
    assert not (tmp_path / "agent.toml").exists()
