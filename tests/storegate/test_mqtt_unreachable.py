"""The MQTT link's warnings against what really answers (or does not) at the broker's address."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from launcher.broker import free_port
from storegate.mqtt import MqttLink, MqttSettings
from tests.conftest import eventually


def warnings_of(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event]


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A port that accepts TCP connections and closes them at once: not an MQTT broker, or TLS spoken to in plain."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


async def test_nothing_listening_is_said_at_once_in_words(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = MqttSettings(port=port, reconnect_min_s=0.2, reconnect_max_s=1)
    async with MqttLink(settings=settings, client_id="nobody-home") as link:

        async def warned() -> list[dict[str, Any]]:
            return warnings_of(caplog, "mqtt_broker_unreachable")

        [first, *_] = await eventually(warned, what="the first warning")
        assert first["broker"] == f"127.0.0.1:{port}"
        assert first["reason"].startswith("connection refused: nothing listens on that port")
        assert first["failed_attempts"] == 1
        assert link.last_error is not None
        assert "connection refused" in link.last_error


async def test_a_port_that_hangs_up_before_the_broker_answers_is_not_silent(
    caplog: pytest.LogCaptureFixture, hangs_up: int
) -> None:
    settings = MqttSettings(port=hangs_up, reconnect_min_s=0.2, reconnect_max_s=1)
    async with MqttLink(settings=settings, client_id="wrong-port"):

        async def warned() -> list[dict[str, Any]]:
            return warnings_of(caplog, "mqtt_broker_unreachable")

        [first, *_] = await eventually(warned, what="the warning")
        assert "closed before the broker answered" in first["reason"]
        assert "check the port and tls" in first["reason"]
