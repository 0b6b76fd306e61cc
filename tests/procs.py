"""Hub and agent as real child processes, for the chaos tests and the benchmarks.

Each runs exactly as in production (``python -m launcher hub|agent --config ...``, the ``storegate`` command),
so SIGKILL means what it means on a store gateway: no finally blocks, no flush.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tomli_w

from storegate.mqtt import MqttSettings


@dataclass
class Service:
    """A storegate process that can be started, SIGKILLed and started again with the same config."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the process (its output is appended to ``log_path``)."""
        assert not self.alive, f"{self.name} is already running"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1

    @property
    def alive(self) -> bool:
        """Whether the process runs now."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close_log()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's output, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _mqtt_document(mqtt: MqttSettings) -> dict[str, Any]:
    return {key: value for key, value in mqtt.model_dump(mode="json").items() if value is not None}


def hub_service(workdir: Path, mqtt: MqttSettings, *, http_port: int, **settings: Any) -> Service:
    """A hub with its SQLite database in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "database_url": f"sqlite+aiosqlite:///{workdir / 'hub.sqlite3'}",
        "http_port": http_port,
        "log_level": "WARNING",
        "mqtt": _mqtt_document(mqtt),
        # These hubs serve harnesses of many gateways (chaos, soak, benches): they enrol on first contact.
        "accept_unknown_gateways": True,
        **settings,
    }
    path = workdir / "hub.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    argv = [sys.executable, "-m", "launcher", "hub", "--config", str(path)]
    return Service("hub", argv, workdir / "hub.log")


def agent_service(
    workdir: Path,
    mqtt: MqttSettings,
    *,
    devices: list[dict[str, Any]],
    store_id: str = "store-0001",
    gateway_id: str = "gw-1",
    outbox: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> Service:
    """An agent with its outbox in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "store_id": store_id,
        "gateway_id": gateway_id,
        "mqtt": _mqtt_document(mqtt),
        "outbox": {"path": str(workdir / "outbox.sqlite3"), **(outbox or {})},
        "health": {"interval_s": 2, **(health or {})},
        "devices": devices,
    }
    path = workdir / "agent.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    argv = [sys.executable, "-m", "launcher", "agent", "--config", str(path)]
    return Service("agent", argv, workdir / "agent.log")


def hub_rows(database: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the hub's SQLite database while the hub runs (WAL allows a concurrent reader)."""
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the hub has not created its tables yet
        return []
    finally:
        connection.close()
