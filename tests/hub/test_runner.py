"""``hub.runner.run_hub`` in a process of its own: exit codes on a clean stop and on bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.broker import free_port
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
RUN = "import sys; from pathlib import Path; from hub.runner import run_hub; sys.exit(run_hub(Path(sys.argv[1])))"


def spawn(config: Path) -> subprocess.Popen[bytes]:
    """Run the hub on ``config``; its log goes to hub.log beside the config (a pipe could fill and block it)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STOREGATE_HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    with (config.parent / "hub.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUN, str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def hub_process(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "hub.sqlite3"}"\n'
        f"http_port = {port}\n"
        f"[mqtt]\nport = {mqtt_settings.port}\n"
    )
    process = spawn(config)
    try:
        wait_until(lambda: healthy(port) or process.poll() is not None, timeout=15, what="the hub to become healthy")
        assert process.poll() is None, (tmp_path / "hub.log").read_text()
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_hub_cleanly(hub_process: tuple[subprocess.Popen[bytes], int], signum: int) -> None:
    process, _ = hub_process
    process.send_signal(signum)
    assert process.wait(timeout=15) == 0


def test_bad_settings_exit_2_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[mqtt]\nport = 70000\n")
    process = spawn(config)
    assert process.wait(timeout=15) == 2
    assert "mqtt.port: Input should be less than or equal to 65535 (got 70000)" in (tmp_path / "hub.log").read_text()
