"""The technician's path, played for real: a token from the hub's API, three commands on a gateway, events at the hub.

Real parts: the hub served by uvicorn on loopback (its CA, its gateway listener over TLS, SQLite), Mosquitto running
the configuration the hub writes (TLS, client certificates, ACL, CRL; the hub rewrites it and sends SIGHUP when the
gateway enrols), ``storegate provision enroll``, ``detect --add``, ``selftest`` and the agent as subprocesses of the
installed command, the key made by openssl in the gateway home, a scanner and a shelf (simulated firmware) on ptys
driven by their real drivers. systemd is not PID 1 here, so a ``systemctl`` shim on PATH starts the unit's ExecStart
(with its Environment) in the background, as systemd would, and stops it. A pty has no USB ids: the file
``STOREGATE_BENCH_USB_PORTS`` names stands in for sysfs under pyserial's port list, in every process the
technician starts (a subprocess cannot see a monkeypatch; the agent started by the shim must see the same ports).

Every command the technician types goes through :meth:`Technician.types`, and the test counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
from sqlalchemy import func, select

from device_drivers.barcode.simulator import SimulatedSerialScanner
from device_drivers.shelf.simulator import ShelfSimulator, SlotSpec
from device_drivers.simulated.pty import PtyPort
from edge_agent.hotplug import BENCH_USB_PORTS_ENV
from hub.db.engine import create_engine, session_factory
from hub.db.models import StoredEvent
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from provisioning.layout import GatewayHome
from provisioning.units import AGENT_UNIT
from storegate.private_files import is_private
from tests.conftest import eventually, wait_until
from tests.hub.auth.test_sessions import served
from tests.hub.conftest import token_in_database
from tests.tls_broker import HOST, TlsBroker, running_tls_broker

STORE, GATEWAY = "store-0042", "gw-1"
STOREGATE: Final = Path(sys.executable).with_name("storegate")
SCANS: Final = ("scan.sale", "scan.receiving", "scan.count")
MAX_COMMANDS: Final = 3  # the promise: a gateway enrolled and tested in at most three typed commands

SYSTEMCTL_SHIM: Final = """#!/bin/sh
# systemctl as far as `storegate provision enroll` and the technician need it; systemd is not PID 1 here.
echo "systemctl $*" >> "$SHIM_DIR/calls"
start() {
    unit="$SHIM_UNIT_DIR/$1"
    command=$(sed -n 's/^ExecStart=//p' "$unit")
    environment=$(sed -n 's/^Environment=//p' "$unit")
    env $environment setsid $command >> "$SHIM_DIR/agent.log" 2>&1 < /dev/null &
    echo $! > "$SHIM_DIR/agent.pid"
}
stop() {
    [ -f "$SHIM_DIR/agent.pid" ] || return 0
    pid=$(cat "$SHIM_DIR/agent.pid")
    kill "$pid" 2>/dev/null || return 0
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ $tries -lt 300 ]; do sleep 0.1; tries=$((tries + 1)); done
}
running() {
    [ -f "$SHIM_DIR/agent.pid" ] && kill -0 "$(cat "$SHIM_DIR/agent.pid")" 2>/dev/null
}
case "$1" in
    daemon-reload) ;;
    enable) [ "$2" = "--now" ] && start "$3" ;;
    restart) stop; start "$2" ;;
    stop) stop ;;
    start) running || start "$2" ;;
    is-active) running || exit 3 ;;
    *) echo "systemctl shim: $1 is not supported" >&2; exit 1 ;;
esac
"""


@dataclass
class Technician:
    """Runs what the technician types on the gateway, with the shim on PATH, and keeps the list of it."""

    workdir: Path
    home: GatewayHome
    unit_dir: Path
    typed: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        shim = self.workdir / "shim"
        return {
            **os.environ,
            "PATH": f"{shim}:{STOREGATE.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SHIM_DIR": str(shim),
            "SHIM_UNIT_DIR": str(self.unit_dir),
            "STOREGATE_AGENT_HOME": str(self.home.root),
            # What sysfs would say about the devices plugged in (ptys have no USB ids): read by the agent's USB
            # port lister only, in every storegate process the technician starts (edge_agent.hotplug).
            BENCH_USB_PORTS_ENV: str(self.workdir / "usb-ports.json"),
        }

    def plugs_in(self, ports: list[dict[str, object]]) -> None:
        """The devices the technician plugs in, as the USB port list describes them."""
        (self.workdir / "usb-ports.json").write_text(json.dumps(ports))

    def install_shim(self) -> None:
        shim = self.workdir / "shim"
        shim.mkdir(parents=True)
        (shim / "systemctl").write_text(SYSTEMCTL_SHIM)
        (shim / "systemctl").chmod(0o755)
        (self.workdir / "systemd-runtime").mkdir()  # as /run/systemd/system is where systemd runs

    def types(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one typed command (``storegate ...`` or ``systemctl ...``) as the technician would."""
        self.typed.append(" ".join(command))
        program = str(STOREGATE) if command[0] == "storegate" else command[0]
        return subprocess.run(
            [program, *command[1:]], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def types_and_acts(self, *command: str, act: Callable[[str], None], timeout: float = 60) -> tuple[int, str]:
        """Run one typed command that asks for acts: ``act`` hears each line it prints (the technician reading
        the screen); its exit code and everything it printed."""
        self.typed.append(" ".join(command))
        with subprocess.Popen(
            [str(STOREGATE), *command[1:]],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as running:
            assert running.stdout is not None
            lines = []
            for line in running.stdout:
                lines.append(line.rstrip("\n"))
                act(lines[-1])
            return running.wait(timeout=timeout), "\n".join(lines)

    def agent_pid(self) -> int | None:
        path = self.workdir / "shim" / "agent.pid"
        return int(path.read_text()) if path.exists() else None

    def agent_log(self) -> str:
        path = self.workdir / "shim" / "agent.log"
        return path.read_text() if path.exists() else ""


def technician_enrols(technician: Technician, *, hub_url: str, token: str) -> subprocess.CompletedProcess[str]:
    """The first command on a fresh gateway: enrol with the token and start the agent (one command typed)."""
    return technician.types(
        "storegate",
        "provision",
        "enroll",
        "--hub",
        hub_url,
        "--token",
        token,
        # Where a real gateway takes the defaults (/var/lib/storegate, /etc/systemd/system, /run/systemd/system).
        "--home",
        str(technician.home.root),
        "--unit-dir",
        str(technician.unit_dir),
        "--systemd-runtime-dir",
        str(technician.workdir / "systemd-runtime"),
        "--user",  # the account the package makes on a gateway; here, whoever runs the tests
        getpass.getuser(),
    )


def hub_settings(tls: TlsBroker, workdir: Path) -> HubSettings:
    """The production shape: the hub runs the CA, writes the broker's files and reloads it, serves gateways."""
    pid_file = workdir / "mosquitto.pid"
    pid_file.write_text(f"{tls.broker.process.pid}\n")
    return load_hub_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{workdir / 'hub.sqlite3'}",
        mqtt=tls.hub_settings(),
        client_id="storegate-hub",
        secrets_dir=workdir / "secrets",  # where running_tls_broker made the CA
        http_port=free_port(HOST),
        accept_unknown_gateways=False,
        broker={
            "files_dir": tls.files.directory,
            "port": tls.port,
            "bind_address": HOST,
            "persistence_dir": None,
            "run_as": getpass.getuser(),
            "pid_file": pid_file,
        },
        enrolment={"broker_host": HOST, "broker_port": tls.port},
        snapshots={
            "listen_host": HOST,
            "listen_port": free_port(HOST),
            "tls_certfile": tls.ca.broker_cert_path,
            "tls_keyfile": tls.ca.broker_key_path,
            "directory": workdir / "stills",
        },
    )


@contextlib.contextmanager
def agent_stopped_after(technician: Technician) -> Iterator[None]:
    """Stop the agent the shim started (not our child: the shim ran it under setsid) when the block ends."""
    try:
        yield
    finally:
        pid = technician.agent_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

            def gone() -> bool:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                return False

            wait_until(gone, timeout=20, what="the agent stopped")


@contextlib.asynccontextmanager
async def hub_served(tls: TlsBroker, workdir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, HubSettings]]:
    settings = hub_settings(tls, workdir)
    async with served(settings) as client:
        yield client, settings


async def stored_events(database_url: str, *, device_id: str, kinds: tuple[str, ...]) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(StoredEvent)
                .where(StoredEvent.store_id == STORE, StoredEvent.device_id == device_id, StoredEvent.kind.in_(kinds))
            )
            return int(count or 0)
    finally:
        await engine.dispose()


def systemd_seen(technician: Technician) -> tuple[str, str]:
    """Where the typed commands look for systemd (on a gateway: /run/systemd/system, the default)."""
    return ("--systemd-runtime-dir", str(technician.workdir / "systemd-runtime"))


@contextlib.asynccontextmanager
async def plugged_in(technician: Technician) -> AsyncIterator[tuple[SimulatedSerialScanner, ShelfSimulator]]:
    """A Zebra scanner and a Storegate shelf (250 g items) on ptys, described by the USB ids their models have."""
    async with PtyPort() as scanner_port, PtyPort() as shelf_port:
        scanner = SimulatedSerialScanner(port=scanner_port, terminator="crlf", aim_ids=True)
        shelf = ShelfSimulator(
            port=shelf_port, slots=[SlotSpec(unit_weight_g=250.0, items=2)] * 8, rng=random.Random(3)
        )
        technician.plugs_in(
            [
                usb(scanner_port.port, 0x05E0, 0x1701, "S22", "Symbol Bar Code Scanner"),
                usb(shelf_port.port, 0x2E8A, 0x000A, "SGS-0001", "Storegate shelf"),
            ]
        )
        tasks = [asyncio.create_task(scanner.run()), asyncio.create_task(shelf.run())]
        try:
            yield scanner, shelf
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def usb(device: str, vid: int, pid: int, serial: str, product: str) -> dict[str, object]:
    return {
        "device": device,
        "vid": vid,
        "pid": pid,
        "serial_number": serial,
        "manufacturer": "Maker",
        "product": product,
        "location": f"1-1.{vid % 7}:1.0",
    }


async def until_agent_runs(technician: Technician, database_url: str, device_ids: tuple[str, ...]) -> None:
    """The restarted agent has opened each device: their ``device.attached`` events are at the hub."""

    async def attached() -> bool:
        counts = [await stored_events(database_url, device_id=d, kinds=("device.attached",)) for d in device_ids]
        return all(counts)

    await eventually(attached, timeout=30, what=f"the agent running {device_ids}\n{technician.agent_log()}")


async def test_a_technician_enrols_a_fresh_gateway_with_three_commands_and_its_events_reach_the_hub(
    tmp_path: Path,
) -> None:
    technician = Technician(
        workdir=tmp_path / "pi", home=GatewayHome(tmp_path / "pi" / "home"), unit_dir=tmp_path / "pi" / "units"
    )
    technician.install_shim()
    with running_tls_broker(tmp_path, ()) as tls, agent_stopped_after(technician):
        async with hub_served(tls, tmp_path) as (hub, settings):
            # At the office (or on the phone): a technician of the store makes a token through the hub's API.
            desk = {"Authorization": f"Bearer {await token_in_database(settings.database_url, 'technician')}"}
            made = await hub.post(
                "/api/v1/enrolment-tokens", json={"store_id": STORE, "gateway_id": GATEWAY}, headers=desk
            )
            assert made.status_code == 201, made.text
            hub_url = str(hub.base_url).rstrip("/")
            assert (
                made.json()["command"] == f"storegate provision enroll --hub {hub_url} --token {made.json()['token']}"
            )

            # On the gateway: one command.
            # (In a thread: the hub serves from this test's event loop.)
            enrolled = await asyncio.to_thread(
                technician_enrols, technician, hub_url=hub_url, token=made.json()["token"]
            )
            assert enrolled.returncode == 0, enrolled.stderr
            assert f"enrolled as {STORE}/{GATEWAY}" in enrolled.stdout
            assert f"{AGENT_UNIT} enabled and started" in enrolled.stdout
            assert is_private(technician.home.key_file)
            calls = (technician.workdir / "shim" / "calls").read_text().splitlines()
            assert calls == ["systemctl daemon-reload", f"systemctl enable --now {AGENT_UNIT}"]

            async def online() -> dict[str, object]:
                answer = await hub.get(f"/api/v1/stores/{STORE}/gateways/{GATEWAY}", headers=desk)
                body: dict[str, object] = answer.json()
                return body if body.get("online") else {}

            gateway = await eventually(
                online, timeout=30, what=f"the agent online at the hub\n{technician.agent_log()}"
            )
            assert gateway["enrolment"] == "token"
            assert gateway["certificate_expires_at"] is not None

            # The technician plugs in a scanner and a shelf (simulated firmware on ptys) and types the second
            # command: the agent's config gets their entries and the agent restarts to run them.
            loop = asyncio.get_running_loop()
            async with plugged_in(technician) as (scanner, shelf):
                added = await asyncio.to_thread(
                    technician.types, "storegate", "provision", "detect", "--add", *systemd_seen(technician)
                )
                assert added.returncode == 0, added.stdout + added.stderr
                lines = added.stdout.splitlines()
                assert [line for line in lines if line.startswith("added ")] == [
                    f"added scanner-1 (zebra-ds-cdc, identity usb-05e0:1701-S22) to {technician.home.config}",
                    f"added shelf-1 (storegate-shelf-v1, identity usb-2e8a:000a-SGS-0001) to {technician.home.config}",
                ]
                assert lines[-1] == f"restarted {AGENT_UNIT}: the agent now runs the added devices"
                assert is_private(technician.home.config)
                await until_agent_runs(technician, settings.database_url, ("scanner-1", "shelf-1"))

                # The third: the self-test stops the service, walks the devices, starts it again. The test is the
                # technician's hands: it scans the code shown and puts two 250 g items (the known 500 g) on slot 1.
                def act(line: str) -> None:
                    if line.startswith("  -> scan this code with scanner-1: "):
                        code = line.rsplit(" ", 1)[-1]
                        loop.call_soon_threadsafe(lambda: scanner.queue_scan(code, aim="]E0"))
                    elif line == "  -> put 500 g on slot 1 of shelf-1":
                        loop.call_soon_threadsafe(lambda: shelf.put(1, 2))

                code, printed = await asyncio.to_thread(
                    technician.types_and_acts,
                    "storegate",
                    "provision",
                    "selftest",
                    "--yes",
                    *systemd_seen(technician),
                    act=act,
                )
                assert code == 0, f"{printed}\n{technician.agent_log()}"
                said = printed.splitlines()
                # In this order (the agent's log lines on stderr may come between them).
                stopping = said.index(
                    f"stopping {AGENT_UNIT} (it holds the devices); it starts again after the self-test"
                )
                scanned = next(at for at, line in enumerate(said) if line.startswith("scanner-1: PASSED: read "))
                weighed = said.index("shelf-1: PASSED: slot 1 read +500 g for 500 g (± 15 g)")
                assert stopping < scanned < weighed < said.index(f"started {AGENT_UNIT} again")
                assert said[-1].startswith("selftest PASSED: 2 passed, 0 failed, 0 skipped; report selftest-")
                calls = (technician.workdir / "shim" / "calls").read_text().splitlines()
                assert calls[-3:] == [
                    f"systemctl is-active --quiet {AGENT_UNIT}",
                    f"systemctl stop {AGENT_UNIT}",
                    f"systemctl start {AGENT_UNIT}",
                ]

                # The report is at the hub, readable by the office.
                reports = await hub.get(f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/selftests", headers=desk)
                assert reports.status_code == 200, reports.text
                (report,) = reports.json()["items"]
                assert report["passed"] is True
                assert {r["device_id"]: r["outcome"] for r in report["report"]["results"]} == {
                    "scanner-1": "passed",
                    "shelf-1": "passed",
                }

                # The agent runs the devices again: a scan in the shop reaches the hub over TLS.
                async def scans_stored() -> int:
                    scanner.queue_scan("8480010001136", aim="]E0")
                    return await stored_events(settings.database_url, device_id="scanner-1", kinds=SCANS)

                await eventually(scans_stored, timeout=30, what=f"a scan at the hub\n{technician.agent_log()}")
    assert len(technician.typed) <= MAX_COMMANDS, technician.typed
