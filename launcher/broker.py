"""Starting a local MQTT broker: Mosquitto when installed, else an embedded amqtt.

Used by ``storegate demo``, the tests and the benchmarks. Production sites run
their own broker (a Mosquitto or an MQTT v5 cluster) and point the hub and the
agents at it; nothing here is meant for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
_MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable, or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _MOSQUITTO_FALLBACKS if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until host:port accepts connections; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker process exited with code {process.returncode} before listening on {port}")
        time.sleep(0.05)  # polling a socket that is not there yet; there is no event to wait on
    raise BrokerError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


class BrokerError(RuntimeError):
    """The local broker could not be started."""


@dataclass
class LocalBroker:
    """A broker process listening on 127.0.0.1:port. Stop it with :meth:`stop`."""

    kind: Literal["mosquitto", "amqtt"]
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    argv: list[str] = field(default_factory=list)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def restart(self, *, timeout: float = 10.0) -> None:
        """Start the same broker again on the same port (after :meth:`stop`)."""
        self.stop()
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.host, self.port, timeout=timeout, process=self.process)


def mosquitto_config(
    *,
    port: int,
    host: str = "127.0.0.1",
    persistence_dir: Path | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
) -> str:
    """A mosquitto.conf for one loopback listener."""
    lines = [
        f"listener {port} {host}",
        # Anonymous access only when no password file is given: the demo and tests.
        f"allow_anonymous {'false' if password_file else 'true'}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
        "persistent_client_expiration 7d",
        # Without it Nagle's algorithm meets delayed ACKs and small messages wait up to 40 ms per hop.
        "set_tcp_nodelay true",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    else:
        lines += ["persistence false"]
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


def start_mosquitto(
    workdir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    persistence: bool = False,
    timeout: float = 10.0,
) -> LocalBroker:
    """Start Mosquitto on a free loopback port with a config written into ``workdir``."""
    if find_mosquitto() is None:  # before anything is written
        raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port(host)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mosquitto.conf"
    config.write_text(mosquitto_config(port=port, host=host, persistence_dir=workdir if persistence else None))
    return start_mosquitto_with(config, host=host, port=port, timeout=timeout)


def start_mosquitto_with(config: Path, *, host: str, port: int, timeout: float = 10.0) -> LocalBroker:
    """Start Mosquitto on ``config`` (written here, or elsewhere, e.g. the hub's TLS config) that listens on
    host:port; its directory is the broker's working directory."""
    exe = find_mosquitto()
    if exe is None:
        raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    argv = [exe, "-c", str(config)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    broker = LocalBroker("mosquitto", host, port, process, config.parent, argv)
    try:
        wait_for_port(host, port, timeout=timeout, process=process)
    except BrokerError:
        broker.stop(kill=True)
        raise
    return broker


def start_embedded(
    workdir: Path, *, port: int | None = None, host: str = "127.0.0.1", timeout: float = 20.0
) -> LocalBroker:
    """Start the embedded amqtt broker (MQTT 3.1.1 only) in a child process."""
    port = port or free_port(host)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "launcher.embedded_broker", "--host", host, "--port", str(port)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    broker = LocalBroker("amqtt", host, port, process, workdir, argv)
    try:
        wait_for_port(host, port, timeout=timeout, process=process)
    except BrokerError:
        broker.stop(kill=True)
        raise
    return broker


def start_local_broker(workdir: Path, *, port: int | None = None, prefer: str = "auto") -> LocalBroker:
    """Mosquitto when it is installed (or ``prefer='mosquitto'``), else the embedded broker."""
    if prefer == "amqtt" or (prefer == "auto" and find_mosquitto() is None):
        return start_embedded(workdir, port=port)
    return start_mosquitto(workdir, port=port)
