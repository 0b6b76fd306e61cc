"""Shared fixtures: a real Mosquitto per test on a free port, and deadline-based waiting."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from launcher.broker import LocalBroker, find_mosquitto, start_mosquitto
from storegate.logs import configure_logging
from storegate.mqtt import MqttSettings

T = TypeVar("T")

configure_logging(level="INFO", json=False)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto without persistence, on a free loopback port, for this test only."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (.ci/run does this)")
    broker = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop(kill=True)


@pytest.fixture
def mqtt_settings(mosquitto: LocalBroker) -> MqttSettings:
    """Settings that reach the test's broker."""
    return MqttSettings(host=mosquitto.host, port=mosquitto.port, reconnect_min_s=0.2, reconnect_max_s=1.0)


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Await ``probe`` until it returns something truthy, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_until(probe: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Synchronous :func:`eventually`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a umask that would leave new files readable by others."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run the test under the usual umask, which leaves new files readable by others."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def file_mode(path: Path) -> str:
    """A file's permission bits as four octal digits, e.g. "0600"."""
    return f"{path.stat().st_mode & 0o777:04o}"
