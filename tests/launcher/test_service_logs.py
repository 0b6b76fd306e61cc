"""What the services print: ``--log-format``/``--log-level`` on each, and the broker-unreachable warnings.

The services run as the `storegate` command runs them (``python -m launcher ...``) against a real Mosquitto that is
absent, then started, or stopped and started again; the tests read and parse what they print, as an operator's
journald or log shipper would.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from launcher.broker import LocalBroker, free_port, start_mosquitto
from storegate.log_options import LOG_FORMAT_ENV, LOG_LEVEL_ENV, LogFormat, LogLevel, request_log_options
from storegate.logs import configure_logging
from tests.conftest import wait_until

# A console line: "2026-12-06T21:00:00.123456Z [warning  ] mqtt_broker_unreachable broker=... reason=..."
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
CONSOLE_LINE = re.compile(r"^\S+Z \[(?P<level>[a-z]+)\s*\] (?P<event>\S+)\s*(?P<rest>.*)$")


def clean_env() -> dict[str, str]:
    """The environment without any STOREGATE_* setting of the machine running the tests."""
    return {key: value for key, value in os.environ.items() if not key.upper().startswith("STOREGATE_")}


class Captured:
    """A service's stderr, read as it comes: from a file (a pipe's stand-in that never fills) or a terminal."""

    def __init__(self, argv: list[str], workdir: Path, *, terminal: bool = False) -> None:
        self.path = workdir / "service.log"
        self._thread: threading.Thread | None = None
        if terminal:
            master, replica = pty.openpty()
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=replica, env=clean_env()
            )
            os.close(replica)
            self._thread = threading.Thread(target=self._drain, args=(master,), daemon=True)
            self._thread.start()
        else:
            with self.path.open("wb") as sink:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink, env=clean_env()
                )

    def _drain(self, master: int) -> None:
        # A terminal's buffer is small: read it all the time or the service blocks on a log line.
        with self.path.open("ab") as sink:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the service closed its end
                    break
                if not chunk:
                    break
                sink.write(chunk)
                sink.flush()
        os.close(master)

    @property
    def lines(self) -> list[str]:
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        return [line.rstrip("\r") for line in text.splitlines() if line.strip()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.process.returncode


def json_records(captured: Captured) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in captured.lines]  # every line is one JSON object, or this fails
    assert all(isinstance(record, dict) for record in records)
    return records


def console_records(captured: Captured) -> list[dict[str, str]]:
    """Console lines as level, event and their key=value text; a JSON line fails the match."""
    records: list[dict[str, str]] = []
    for line in captured.lines:
        if not TIMESTAMP.match(line):
            assert records, f"not a console line: {line!r}"
            continue  # the rest of a message of several lines (alembic's migration notes)
        match = CONSOLE_LINE.match(line)
        assert match is not None, f"not a console line: {line!r}"
        records.append(match.groupdict())
    return records


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [record for record in records if record["event"] == name]


@pytest.fixture
def service() -> Iterator[list[Captured]]:
    started: list[Captured] = []
    yield started
    for captured in started:
        captured.stop()


def storegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher", *args]


def test_the_hub_warns_at_once_that_the_broker_is_unreachable_and_notes_its_return(
    tmp_path: Path, service: list[Captured]
) -> None:
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "hub.sqlite3"}"\n'
        f"http_port = {free_port()}\n"
        'log_level = "ERROR"\n'  # --log-level overrides it: the warnings below show it did
        f"[mqtt]\nport = {port}\nreconnect_min_s = 0.5\nreconnect_max_s = 1\n"
    )
    # On a terminal, readable lines are the default (the demo's test asks for them on a pipe with --log-format).
    hub = Captured(storegate("hub", "-c", str(config), "--log-level", "info"), tmp_path, terminal=True)
    service.append(hub)

    def said(event: str) -> list[dict[str, str]]:
        assert hub.process.poll() is None, "\n".join(hub.lines[-20:])
        return events(console_records(hub), event)

    [warning] = wait_until(lambda: said("mqtt_broker_unreachable"), timeout=30, what="the hub's first warning")
    assert warning["level"] == "warning"
    assert f"broker=127.0.0.1:{port}" in warning["rest"]
    assert "connection refused: nothing listens on that port" in warning["rest"]
    assert "failed_attempts=1" in warning["rest"]

    broker = start_mosquitto(tmp_path / "mosquitto", port=port)
    try:
        [back] = wait_until(lambda: said("mqtt_broker_reachable"), timeout=30, what="the hub noting the broker back")
    finally:
        broker.stop(kill=True)
    assert back["level"] == "info"
    attempts = int(re.search(r"failed_attempts=(\d+)", back["rest"])[1])  # type: ignore[index]
    # Not a line per attempt: paho retries every second or so, the warnings come 10, 20, 40 s... apart.
    assert 1 <= len(said("mqtt_broker_unreachable")) <= 1 + attempts // 10
    assert hub.stop() == 0


def agent_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        'store_id = "store-0001"\ngateway_id = "gw-1"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreconnect_min_s = 0.5\nreconnect_max_s = 1\n'
        '[outbox]\npath = "outbox.sqlite3"\n'
    )
    return path


def test_the_agent_on_a_terminal_writes_json_when_asked_and_warns_when_the_broker_goes(
    tmp_path: Path, service: list[Captured]
) -> None:
    broker: LocalBroker = start_mosquitto(tmp_path / "mosquitto")
    config = agent_config(tmp_path, broker.port)
    # On a terminal the default is readable lines; --log-format json wins over it.
    agent = Captured(storegate("agent", "--log-format", "json", "--config", str(config)), tmp_path, terminal=True)
    service.append(agent)
    try:

        def said(event: str) -> list[dict[str, Any]]:
            assert agent.process.poll() is None, "\n".join(agent.lines[-20:])
            return events(json_records(agent), event)

        wait_until(lambda: said("mqtt_connected"), timeout=30, what="the agent connecting")
        assert not said("mqtt_broker_reachable"), "no outage yet: nothing to note"
    finally:
        broker.stop()
    [lost] = wait_until(lambda: said("mqtt_disconnected"), timeout=30, what="the agent's warning")
    assert lost["level"] == "warning"
    assert lost["broker"] == f"127.0.0.1:{broker.port}"
    assert lost["reason"]

    broker = start_mosquitto(tmp_path / "mosquitto", port=broker.port)
    try:
        [back] = wait_until(lambda: said("mqtt_broker_reachable"), timeout=30, what="the agent noting the broker")
    finally:
        broker.stop(kill=True)
    assert back["level"] == "info"
    assert back["failed_attempts"] >= 1
    assert back["unreachable_for_s"] >= 0
    assert agent.stop() == 0


def test_a_bad_log_format_is_refused_in_words() -> None:
    done = subprocess.run(
        storegate("agent", "--log-format", "xml", "--config", "agent.toml"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    assert done.returncode == 2
    assert "Invalid value for '--log-format'" in done.stderr
    said = " ".join(done.stderr.replace("│", " ").split())  # the words, out of typer's box
    assert "'xml' is not one of 'json', 'console'" in said


def test_a_bad_log_variable_is_named_and_the_default_kept(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        configure_logging(environ={LOG_FORMAT_ENV: "xml", LOG_LEVEL_ENV: "loud"}, json=True)
        err = capsys.readouterr().err
        problems = [record["problem"] for record in map(json.loads, err.splitlines())]
        assert problems == [
            "STOREGATE_LOG_FORMAT='xml' is not one of json, console; ignored",
            "STOREGATE_LOG_LEVEL='loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL; ignored",
        ]
    finally:
        configure_logging(level="INFO", json=False)  # as tests/conftest.py leaves it


def test_the_requested_level_wins_over_the_services_own(capsys: pytest.CaptureFixture[str]) -> None:
    log = structlog.get_logger("tests.levels")
    try:
        configure_logging(level="DEBUG", environ={LOG_LEVEL_ENV: "warning", LOG_FORMAT_ENV: "json"})
        log.info("below_the_level")
        log.warning("at_the_level")
        assert [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()] == ["at_the_level"]
    finally:
        configure_logging(level="INFO", json=False)


def test_request_log_options_keeps_them_for_the_processes_a_service_starts() -> None:
    environ: dict[str, str] = {}
    request_log_options(None, None, environ)
    assert environ == {}, "nothing asked: the defaults stay"
    request_log_options(LogFormat.CONSOLE, LogLevel.DEBUG, environ)
    assert environ == {LOG_FORMAT_ENV: "console", LOG_LEVEL_ENV: "DEBUG"}
