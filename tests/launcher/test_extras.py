"""The install extras as a gateway and a hub meet them: the agent runs without the hub's packages, and a side that
is not installed is named in words with the extra to install.

A child process gets an import blocker in front of every other finder: importing a blocked package raises
ModuleNotFoundError, as on a machine that never installed it, and the attempt is written to a file. Unlike
import-linter, which reads import statements, this also catches imports made at run time (driver factories are
imported by name when a device of their family is configured).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from device_drivers.serial_sensor.simulator import SerialSensorSimulator
from launcher.broker import LocalBroker
from storegate import wire
from storegate.process import EXIT_CONFIG, EXIT_OK
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]

# Packages that only storegate[hub] (or the demo) installs, and the hub itself: a gateway has none of them.
# (httpx is on both sides: the gateway uploads camera stills with it, edge_agent.snapshots.)
HUB_ONLY = (
    "hub",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "fpdf",
    "pydantic_settings",
    "amqtt",
    # the hub's operators (argon2-cffi, python-multipart) and its CA (cryptography): a gateway checks its TLS files
    # with the standard library's ssl
    "argon2",
    "python_multipart",
    "multipart",
    "cryptography",
)

BLOCKING_LAUNCHER = """
import importlib.abc, sys

blocked, attempts_file, *argv = sys.argv[1:]
BLOCKED = frozenset(blocked.split(","))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            with open(attempts_file, "a") as attempts:
                attempts.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
sys.argv = ["storegate", *argv]
from launcher.cli import run

run()
"""


def storegate_without(blocked: tuple[str, ...], attempts: Path, *args: str) -> list[str]:
    """The argv of the storegate command in a child where ``blocked`` packages are not installed."""
    return [sys.executable, "-c", BLOCKING_LAUNCHER, ",".join(blocked), str(attempts), *args]


def test_pyproject_keeps_the_hub_stack_out_of_the_edge_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    gateway = [*project["dependencies"], *project["optional-dependencies"]["edge"]]
    names = {requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip() for requirement in gateway}
    assert names.isdisjoint(
        {
            "fastapi",
            "sqlalchemy",
            "asyncpg",
            "alembic",
            "fpdf2",
            "uvicorn",
            "amqtt",
            "argon2-cffi",
            "cryptography",
        }
    )
    assert {"pyserial", "pymodbus", "paho-mqtt", "pydantic", "httpx"} <= names
    hub = {requirement.split(">")[0].split("[")[0] for requirement in project["optional-dependencies"]["hub"]}
    assert {"fastapi", "sqlalchemy", "asyncpg", "fpdf2"} <= hub


def test_a_hub_command_on_a_gateway_names_the_extra_to_install(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    result = subprocess.run(
        storegate_without(("fastapi", "sqlalchemy"), attempts, "hub"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "pip install 'storegate[hub]'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_agent_runs_a_real_device_with_none_of_the_hubs_packages(
    tmp_path: Path, mosquitto: LocalBroker
) -> None:
    events: list[wire.Event] = []
    arrived = threading.Lock()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-extras")

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        batch = wire.EventBatch.model_validate_json(message.payload)
        with arrived:
            events.extend(batch.events)

    client.on_message = on_message
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe(wire.subscription(wire.Channel.EVENTS), qos=1)
    client.loop_start()
    attempts = tmp_path / "attempts"
    config = tmp_path / "agent.toml"
    try:
        async with SerialSensorSimulator(interval_s=0.05, seed=3) as sensor:
            config.write_text(
                tomli_w.dumps(
                    {
                        "store_id": "store-0001",
                        "gateway_id": "gw-1",
                        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
                        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
                        "devices": [{"device_id": "backroom-th", "profile": "diy-th-serial", "address": sensor.port}],
                    }
                )
            )
            emitting = asyncio.create_task(sensor.run())
            agent = subprocess.Popen(
                storegate_without(HUB_ONLY, attempts, "agent", "--config", str(config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:

                async def readings_published() -> bool:
                    assert agent.poll() is None, agent.stdout.read().decode() if agent.stdout else ""
                    with arrived:
                        return any(
                            e.device_id == "backroom-th" and e.kind == wire.EventKind.ENVIRONMENT_READING
                            for e in events
                        )

                await eventually(readings_published, timeout=30, what="the sensor's readings on the events topic")
            finally:
                agent.send_signal(signal.SIGTERM)
                output = agent.communicate(timeout=30)[0].decode(errors="replace")
                emitting.cancel()
    finally:
        client.loop_stop()
        client.disconnect()
    assert agent.returncode == EXIT_OK, output
    tried = attempts.read_text().split() if attempts.exists() else []
    assert tried == [], f"the agent tried to import packages only the hub installs: {sorted(set(tried))}"


@pytest.mark.parametrize("command", [("agent", "status", "--config", "missing.toml"), ("provision", "--help")])
def test_gateway_commands_need_nothing_of_the_hub(tmp_path: Path, command: tuple[str, ...]) -> None:
    attempts = tmp_path / "attempts"
    result = subprocess.run(
        storegate_without(HUB_ONLY, attempts, *command),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "pip install" not in result.stderr
    assert not attempts.exists(), attempts.read_text()
