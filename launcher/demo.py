"""``storegate demo``: a broker, the hub and one simulated store on this machine.

Every part runs as its own child process, exactly as it would in a store and a
data centre, so the demo exercises the real MQTT path. The simulated store's devices
(``storegate simulate-store``) speak their real protocols on pseudo-terminals, and the
agent drives them through its real drivers. The demo process only orchestrates: it
starts the parts in order, prints where to look, and on Ctrl-C or SIGTERM stops them in
the reverse order (agent, devices, hub, broker) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import tomli_w

from hub.auth.bootstrap import create_demo_access
from launcher.broker import BrokerError, LocalBroker, port_open, start_local_broker
from launcher.demo_catalog import load_demo_catalog
from storegate.private_files import private_dir, write_private

DEMO_STORE_ID = "store-0001"
DEMO_GATEWAY_ID = "gw-1"
STOP_TIMEOUT_S = 15.0
HUB_START_TIMEOUT_S = 30.0
DEVICES_START_TIMEOUT_S = 30.0
# Production runs the broker `storegate hub broker-config` writes (TLS, client certificates, ACL, CRL).
PLAIN_BROKER_NOTICE = (
    "  note           the demo broker is plain MQTT, anonymous and loopback-only: no TLS, no certificates, "
    "no ACL. Production: docs/security.md"
)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``storegate demo`` was asked to run."""

    http_port: int = 8000
    broker: str = "auto"
    data_dir: Path | None = None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it if the demo itself dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    # A session of its own, so a Ctrl-C at the terminal reaches only the demo, which then
    # stops the parts in order instead of all of them at once.
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # safe: the demo starts no threads of its own
    )


def _stop(process: subprocess.Popen[bytes], name: str) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"storegate demo: {name} did not stop within {STOP_TIMEOUT_S:.0f}s; killing it", file=sys.stderr)
            process.kill()
            process.wait()
    return process.returncode


def demo_configs(
    data_dir: Path, broker: LocalBroker, http_port: int, manifest: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write the hub's and the store gateway's configs; returns their paths.

    ``manifest`` is what ``storegate simulate-store`` wrote: its devices become [[devices]]
    entries with their pty addresses, and its 1-Wire tree the hot-plug root. Without it the
    gateway runs three simple simulated temperature sensors.
    """
    protocol = "5" if broker.kind == "mosquitto" else "3.1.1"  # amqtt speaks MQTT 3.1.1 only
    mqtt: dict[str, Any] = {"host": broker.host, "port": broker.port, "protocol": protocol}
    hub_config = {
        "database_url": f"sqlite+aiosqlite:///{data_dir / 'hub.sqlite3'}",
        "http_host": "127.0.0.1",
        "http_port": http_port,
        "mqtt": mqtt,
        # The demo's gateway is enrolled on its first message; a real hub takes only gateways an operator added.
        "accept_unknown_gateways": True,
        # The simulated till scans a basket's items 2 s apart and leaves 8 s between customers: a pause of 5 s
        # ends a basket, so the footfall report's conversion counts the demo's customers, not one long basket.
        "footfall": {"basket_gap_s": 5.0},
    }
    # A small store: a chiller, a freezer and the back room, reporting every two seconds.
    sensors = [
        ("chiller-1", "chiller-1", 3.5, 1.0),
        ("freezer-1", "freezer-1", -20.0, 1.5),
        ("backroom-1", "back-room", 20.5, 2.0),
    ]
    agent_config: dict[str, Any] = {
        "store_id": DEMO_STORE_ID,
        "gateway_id": DEMO_GATEWAY_ID,
        "mqtt": mqtt,
        "outbox": {"path": str(data_dir / "outbox.sqlite3")},
        "health": {"interval_s": 10},
        "devices": [
            {
                "device_id": device_id,
                "driver": "simulated-temperature",
                "zone": zone,
                "interval_s": 2.0,
                "base_celsius": base,
                "amplitude_celsius": amplitude,
                "seed": index,
            }
            for index, (device_id, zone, base, amplitude) in enumerate(sensors)
        ],
    }
    if manifest is not None:
        agent_config["devices"] = [
            {k: v for k, v in device.items() if k != "settings" or v} for device in manifest["devices"]
        ]
        # The store's USB serial ports are pseudo-terminals here, so only the 1-Wire tree is watched.
        agent_config["hotplug"] = {"watch": "poll", "poll_interval_s": 2.0, "w1_root": manifest["w1_root"]}
    hub_path = data_dir / "hub.toml"
    agent_path = data_dir / "agent.toml"
    write_private(hub_path, tomli_w.dumps(hub_config))
    write_private(agent_path, tomli_w.dumps(agent_config))
    return hub_path, agent_path


@contextlib.contextmanager
def _data_dir(requested: Path | None) -> Iterator[Path]:
    # The demo's directory holds its databases, outbox and configs (and the hub's keys): 0700 when the
    # demo makes it (mkdtemp does too); a directory that exists already keeps the mode its owner gave it.
    if requested is not None:
        if not requested.exists():
            private_dir(requested)
        yield requested.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="storegate-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_demo(options: DemoOptions) -> int:
    """Run the demo until Ctrl-C or SIGTERM; 0 on a clean stop, 1 if a part failed, 2 on bad options."""
    if port_open("127.0.0.1", options.http_port):
        print(
            f"storegate demo: port {options.http_port} is already in use; pass --http-port with a free port",
            file=sys.stderr,
        )
        return 2
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _data_dir(options.data_dir) as data_dir:
            return _run(options, data_dir, stop_requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(options: DemoOptions, data_dir: Path, stop_requested: threading.Event) -> int:
    prefer = {"auto": "auto", "mosquitto": "mosquitto", "embedded": "amqtt"}[options.broker]
    try:
        broker = start_local_broker(data_dir / "broker", prefer=prefer)
    except BrokerError as err:
        print(f"storegate demo: cannot start a broker: {err}", file=sys.stderr)
        return 1
    parts: list[tuple[str, subprocess.Popen[bytes]]] = []
    failed = False
    try:
        store_dir = data_dir / "store"
        store = _spawn([sys.executable, "-m", "launcher", "simulate-store", "--workdir", str(store_dir)])
        parts.append(("simulated devices", store))
        hub_path, _ = demo_configs(data_dir, broker, options.http_port)
        # No default password: the demo makes its admin now and shows the password once, below.
        access = asyncio.run(create_demo_access(f"sqlite+aiosqlite:///{data_dir / 'hub.sqlite3'}"))
        hub = _spawn([sys.executable, "-m", "launcher", "hub", "--config", str(hub_path)])
        parts.append(("hub", hub))
        deadline = time.monotonic() + HUB_START_TIMEOUT_S
        while not port_open("127.0.0.1", options.http_port):
            if hub.poll() is not None or stop_requested.is_set() or time.monotonic() > deadline:
                if not stop_requested.is_set():
                    print("storegate demo: the hub did not start; see its log above", file=sys.stderr)
                    failed = True
                return 1 if failed else 0
            stop_requested.wait(0.1)
        try:
            load_demo_catalog(f"http://127.0.0.1:{options.http_port}", DEMO_STORE_ID, token=access.token)
        except (RuntimeError, OSError) as err:  # the demo still runs; events are stored but not placed
            print(f"storegate demo: the demo catalog was not loaded: {err}", file=sys.stderr)
        manifest_path = store_dir / "devices.json"
        deadline = time.monotonic() + DEVICES_START_TIMEOUT_S
        while not manifest_path.exists():
            if store.poll() is not None or stop_requested.is_set() or time.monotonic() > deadline:
                if not stop_requested.is_set():
                    print("storegate demo: the simulated devices did not start; see the log above", file=sys.stderr)
                    failed = True
                return 1 if failed else 0
            stop_requested.wait(0.1)
        manifest = json.loads(manifest_path.read_text())
        _, agent_path = demo_configs(data_dir, broker, options.http_port, manifest)
        agent = _spawn([sys.executable, "-m", "launcher", "agent", "--config", str(agent_path)])
        parts.append(("agent", agent))
        base = f"http://127.0.0.1:{options.http_port}"
        print(
            "\n".join(
                [
                    "",
                    "Storegate demo is running.",
                    f"  dashboard      {base}/",
                    f"  sign in as     {access.username}, password {access.password} (shown only now)",
                    f"  events API     {base}/api/v1/events",
                    f"  stock          {base}/api/v1/stores/{DEMO_STORE_ID}/stock",
                    f"  restock tasks  {base}/api/v1/stores/{DEMO_STORE_ID}/restock-tasks",
                    f"  alerts         {base}/api/v1/alerts",
                    f"  API docs       {base}/docs",
                    f"  metrics        {base}/metrics",
                    f"  MQTT broker    {broker.host}:{broker.port} ({broker.kind})",
                    PLAIN_BROKER_NOTICE,
                    f"  simulated store {DEMO_STORE_ID}, gateway {DEMO_GATEWAY_ID}: "
                    + ", ".join(d["device_id"] for d in manifest["devices"])
                    + ", and a 1-Wire probe found by hot-plug",
                    f"  data           {data_dir}",
                    "Press Ctrl-C to stop.",
                    "",
                ]
            ),
            flush=True,
        )
        while not stop_requested.is_set():
            dead = [(name, p.returncode) for name, p in parts if p.poll() is not None]
            if dead:
                for name, code in dead:
                    print(f"storegate demo: the {name} exited unexpectedly (code {code})", file=sys.stderr)
                failed = True
                break
            stop_requested.wait(0.2)
        return 1 if failed else 0
    finally:
        # Reverse order: the agent says goodbye through the broker while the hub still listens.
        for name, process in reversed(parts):
            _stop(process, name)
        broker.stop()
        if not failed:
            print("storegate demo: stopped", flush=True)
