"""``storegate provision selftest``: a guided walk through every configured device, pass or fail for each, in words.

The technician has installed the devices; before leaving the store they want each proven to work end to end, not
just "port open". The self-test runs each device's real driver (built as the agent builds it, from the config and the
profile catalog) and asks the technician for one act per device, then checks what the driver reports:

- a **scanner** must read exactly the code shown (a real EAN-13, picked at random each run, so an old scan in a
  buffer cannot pass);
- a **shelf** must read the known weight put on a slot, within a tolerance, against the slot's weight before;
- a **door** must report opened, then closed;
- an environment **sensor** must read a plausible value for what it measures (:data:`PLAUSIBLE`);
- a **printer** must print a test page (the driver's own ``print`` command: status read before and after);
- a **camera** must give a still (the driver's own ``snapshot`` command) that decodes and is not blank: a covered
  lens, a dark room or a dead sensor give a flat grey picture (:data:`BLANK_SPREAD`).

Each step has a time limit. The agent must not run meanwhile (it holds the same serial ports): when it runs as the
systemd service the command stops it and starts it again afterwards, whatever happens; an agent run otherwise (by
hand) is left alone and the walk refuses, saying so.
The report is written (0600) to ``selftests/pending`` beside the config and sent to the hub's gateway listener
(``snapshots.hub_url``, with the gateway's certificate); one the hub has not taken waits there for the next run or
``--upload-only``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

import httpx
import structlog
from pydantic import JsonValue

from device_drivers.base import Driver, Reading
from device_drivers.ports import PortInfo
from device_drivers.profiles import kind_of
from edge_agent.config import AgentConfig, DeviceConfig, ProfiledDeviceConfig, catalog_of, load_agent_config
from edge_agent.devices import DriverBuilder
from edge_agent.hotplug import default_lister
from edge_agent.snapshots import client_ssl_context
from edge_agent.status import running_agent_pid
from provisioning.service import AgentService, ServiceError
from storegate import wire
from storegate.configfile import ConfigError
from storegate.private_files import write_private
from storegate.process import EXIT_CONFIG
from storegate.wire import utc_now

log = structlog.get_logger(__name__)

# The hub's route for reports on its gateway listener (hub.selftests.gateway_api; the gateway may not import the hub).
REPORT_PATH: Final = "/api/v1/gateway/selftests"
# Real EAN-13 codes (zxing-cpp's test set, shared/data/barcodes): one is shown per run.
TEST_CODES: Final = ("8886316200561", "8480010001136", "3560070169443", "4045787034318")
# What a store's environment sensors can plausibly read, by quantity (beyond: a broken or misplaced probe).
PLAUSIBLE: Final[dict[wire.Quantity, tuple[float, float]]] = {
    wire.Quantity.TEMPERATURE: (-40.0, 60.0),
    wire.Quantity.HUMIDITY: (0.0, 100.0),
    wire.Quantity.CO2: (250.0, 10_000.0),
    wire.Quantity.LIGHT: (0.0, 200_000.0),
}
# A shelf's tolerance on the known weight: this share of it, and at least MIN_TOLERANCE_G.
WEIGHT_TOLERANCE: Final = 0.03
MIN_TOLERANCE_G: Final = 10.0
# A shelf reports its slots this often during the walk (its configured interval is minutes).
SHELF_REPORT_S: Final = 1.0


# The report's models are the wire's: the same document goes to the hub's gateway listener.
Outcome = wire.SelftestOutcome
DeviceResult = wire.SelftestDeviceResult
SelftestReport = wire.SelftestReport


class Prompter(Protocol):
    """The technician's side: instructions shown, and whether to test a device now."""

    async def ready(self, device_id: str, what: str) -> bool:
        """Whether to test ``device_id`` now (False: skip it)."""
        ...

    async def instruct(self, device_id: str, text: str) -> None:
        """Tell the technician what to do now (the device's reading is the answer)."""
        ...

    def show(self, text: str) -> None:
        """A line of progress or a result."""
        ...


@dataclass(frozen=True, slots=True)
class SelftestOptions:
    """The walk's knobs: time per step, the shelf's slot and known weight, and the code to show (None: random)."""

    step_timeout_s: float = 60.0
    shelf_slot: int = 1
    weight_g: float = 500.0
    code: str | None = None


# A still whose grey levels spread less than this (standard deviation, of 255) shows nothing: a lens covered or
# taped over, a dark room, a dead sensor. The camera's own tamper rule uses the same idea on the live picture.
BLANK_SPREAD: Final = 6.0
# Between snapshot attempts while the camera has no frame yet (it opens its stream first).
_SNAPSHOT_RETRY_S: Final = 0.2


class _StepFailed(Exception):
    pass


class _Readings:
    """A running driver's readings, taken one at a time with a deadline."""

    def __init__(self, driver: Driver) -> None:
        self.queue: asyncio.Queue[Reading | BaseException] = asyncio.Queue()
        self.driver = driver

    async def pump(self) -> None:
        try:
            async for reading in self.driver.readings():
                self.queue.put_nowait(reading)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the device went away: the waiting step fails with it
            self.queue.put_nowait(err)

    async def next(self, deadline: float, waiting_for: str) -> Reading:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                item = await self.queue.get()
        except TimeoutError:
            raise _StepFailed(f"no {waiting_for} in time") from None
        if isinstance(item, BaseException):
            raise _StepFailed(f"the device failed: {item}")
        return item


# One device's step: the device, its readings, the step's deadline (loop time), the prompter; the reason it passed.
Step = Callable[[ProfiledDeviceConfig, "_Readings", float, Prompter], Awaitable[str]]


async def run_selftest(
    config: AgentConfig,
    prompter: Prompter,
    options: SelftestOptions,
    *,
    ports: Sequence[PortInfo] | None = None,
    rng: random.Random | None = None,
) -> SelftestReport:
    """Walk through every configured device; ``ports``: the ports present (default: hot-plug's listers now)."""
    started = utc_now()
    catalog = catalog_of(config)
    if ports is None:
        ports = await asyncio.to_thread(default_lister(config.hotplug, catalog).list_ports)
    addresses = {port.stable_key: port.address for port in ports}
    build = DriverBuilder(catalog=catalog)
    code = options.code or (rng or random.SystemRandom()).choice(TEST_CODES)
    results = []
    for device in config.devices:
        kind = kind_of(catalog.get(device.profile)) if isinstance(device, ProfiledDeviceConfig) else None
        result = await _test_device(device, build, kind, addresses, prompter, options, code)
        log.info("selftest_device", device_id=result.device_id, outcome=result.outcome.value, reason=result.reason)
        prompter.show(f"{result.device_id}: {result.outcome.value.upper()}: {result.reason}")
        results.append(result)
    return SelftestReport(
        store_id=config.store_id,
        gateway_id=config.gateway_id,
        started_at=started,
        finished_at=utc_now(),
        results=results,
    )


async def _test_device(
    device: DeviceConfig,
    build: DriverBuilder,
    kind: str | None,
    addresses: dict[str, str],
    prompter: Prompter,
    options: SelftestOptions,
    code: str,
) -> DeviceResult:
    if not isinstance(device, ProfiledDeviceConfig) or kind is None:
        return DeviceResult(
            device_id=device.device_id, outcome=Outcome.SKIPPED, reason="a simulated driver: nothing to test"
        )
    base = {"device_id": device.device_id, "profile": device.profile, "kind": kind}
    step, what = _step_of(kind, options, code)
    if step is None:
        return DeviceResult(**base, outcome=Outcome.SKIPPED, reason=f"{what}: not part of the walk yet")
    if device.identity is not None:
        address = addresses.get(device.identity)
        if address is None:
            return DeviceResult(
                **base,
                outcome=Outcome.FAILED,
                reason=f"not plugged in: no device with identity {device.identity} (storegate provision detect)",
            )
        device = device.model_copy(update={"address": address})
    if kind == "shelf":  # the walk needs the slots' weights every second, not every few minutes
        device = device.model_copy(update={"settings": {**device.settings, "stock_interval_s": SHELF_REPORT_S}})
    if not await prompter.ready(device.device_id, what):
        return DeviceResult(**base, outcome=Outcome.SKIPPED, reason="skipped by the technician")
    try:
        driver = build(device)
        async with driver:
            readings = _Readings(driver)
            pump = asyncio.create_task(readings.pump(), name=f"selftest {device.device_id}")
            try:
                deadline = asyncio.get_running_loop().time() + options.step_timeout_s
                reason = await step(device, readings, deadline, prompter)
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
    except _StepFailed as failed:
        return DeviceResult(**base, outcome=Outcome.FAILED, reason=f"{failed} (within {options.step_timeout_s:.0f} s)")
    except Exception as err:  # the driver would not open: a wrong address, a port in use (the agent running?)
        return DeviceResult(
            **base, outcome=Outcome.FAILED, reason=f"cannot open it: {err} (is the agent stopped? is it plugged in?)"
        )
    return DeviceResult(**base, outcome=Outcome.PASSED, reason=reason)


def _step_of(kind: str, options: SelftestOptions, code: str) -> tuple[Step | None, str]:
    if kind == "barcode":
        return _scanner_step(code), f"scan the code {code}"
    if kind == "shelf":
        return _shelf_step(options), f"put {options.weight_g:g} g on slot {options.shelf_slot}"
    if kind == "door":
        return _door_step, "open the door and close it"
    if kind.endswith("sensor"):
        return _sensor_step, "read the sensor"
    if kind == "printer":
        return _printer_step, "print a test page"
    if kind == "camera":
        return _camera_step, "take a still (point the camera at its view)"
    return None, f"a {kind}"


def _scanner_step(code: str) -> Step:
    async def step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
        await prompter.instruct(device.device_id, f"scan this code with {device.device_id}: {code}")
        reading = await readings.next(deadline, "scan")
        read = str(reading.payload.get("code", ""))
        if read != code:
            raise _StepFailed(f"it read {read!r}, not the code shown {code!r}")
        return f"read {code} exactly"

    return step


def _shelf_step(options: SelftestOptions) -> Step:
    slot, weight = options.shelf_slot, options.weight_g
    tolerance = max(weight * WEIGHT_TOLERANCE, MIN_TOLERANCE_G)

    async def step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
        before = await _slot_weight(readings, deadline, slot, f"weight of slot {slot}")
        await prompter.instruct(device.device_id, f"put {weight:g} g on slot {slot} of {device.device_id}")
        last = before
        while True:
            try:
                last = await _slot_weight(readings, deadline, slot, f"change of slot {slot}")
            except _StepFailed:
                raise _StepFailed(
                    f"slot {slot} read {last - before:+.0f} g, not {weight:g} g ± {tolerance:.0f} g "
                    "(a load cell to calibrate, or the wrong slot?)"
                ) from None
            if abs(last - before - weight) <= tolerance:
                return f"slot {slot} read {last - before:+.0f} g for {weight:g} g (± {tolerance:.0f} g)"

    return step


async def _slot_weight(readings: _Readings, deadline: float, slot: int, waiting_for: str) -> float:
    while True:
        reading = await readings.next(deadline, waiting_for)
        if reading.payload.get("slot") != slot:
            continue
        if reading.kind in (wire.EventKind.SHELF_STOCK, wire.EventKind.SHELF_PUT, wire.EventKind.SHELF_PICK):
            return float(reading.payload["weight_g"])  # type: ignore[arg-type]
        if reading.kind == wire.EventKind.SHELF_FAULT and reading.payload.get("fault") != "cleared":
            raise _StepFailed(f"slot {slot} is faulty: {reading.payload.get('fault')}")


async def _door_step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
    await readings.next(deadline, "door state")  # the state on open, before anything is asked
    await prompter.instruct(device.device_id, f"open the door of {device.device_id}, then close it")
    seen_open = False
    while True:
        reading = await readings.next(deadline, "door closed after opened" if seen_open else "door opened")
        if reading.kind == wire.EventKind.DOOR_OPENED:
            seen_open = True
        elif reading.kind == wire.EventKind.DOOR_CLOSED and seen_open:
            return "reported opened, then closed"


async def _sensor_step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
    await prompter.instruct(device.device_id, f"reading {device.device_id} (nothing to do)")
    while True:
        reading = await readings.next(deadline, "reading")
        if reading.kind != wire.EventKind.ENVIRONMENT_READING:
            continue
        value = wire.EnvironmentReading.model_validate(reading.payload)
        low, high = PLAUSIBLE[value.quantity]
        if not low <= value.value <= high:
            raise _StepFailed(
                f"it read {value.value:g} {value.unit} for {value.quantity.value}, outside {low:g} to {high:g}: "
                "a broken or misplaced probe?"
            )
        return f"{value.quantity.value} {value.value:g} {value.unit}, plausible"


def _device_command(device: ProfiledDeviceConfig, name: str, args: dict[str, JsonValue]) -> wire.Command:
    """A command for the device's own driver, as the hub would send it (the walk runs the driver itself)."""
    return wire.Command(
        command_id=uuid.uuid4(),
        store_id="selftest",
        gateway_id="selftest",
        device_id=device.device_id,
        name=name,
        args=args,
        issued_at=utc_now(),
    )


async def _printer_step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
    await readings.next(deadline, "printer status")  # read on open: the printer answers
    command = _device_command(device, "print", {"document": "test_page"})
    try:
        async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
            result = await readings.driver.execute(command)
    except TimeoutError:
        raise _StepFailed("the test page did not finish in time") from None
    except Exception as err:  # not ready (paper out, cover open), gone mid-job: the driver says which in words
        raise _StepFailed(f"no test page: {err}") from None
    if result.status != "done":
        raise _StepFailed(f"no test page: {result.detail}")
    await prompter.instruct(device.device_id, f"take the test page from {device.device_id}: is it readable?")
    return f"test page printed ({result.detail})"


async def _camera_step(device: ProfiledDeviceConfig, readings: _Readings, deadline: float, prompter: Prompter) -> str:
    loop = asyncio.get_running_loop()
    while True:  # the camera opens its stream first: "no frame yet" until it has one
        command = _device_command(device, "snapshot", {"reason": "requested"})
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                result = await readings.driver.execute(command)
        except TimeoutError:
            raise _StepFailed("no still in time") from None
        except Exception as err:  # the stream failed: the driver says why in words
            raise _StepFailed(f"no still: {err}") from None
        if result.status == "done":
            break
        if result.status != "failed" or loop.time() + _SNAPSHOT_RETRY_S >= deadline:
            raise _StepFailed(f"no still: {result.detail}")
        await asyncio.sleep(_SNAPSHOT_RETRY_S)
    while True:  # motion or tamper readings may come first
        reading = await readings.next(deadline, "still from the camera")
        if reading.attachment is not None:
            break
    spread, size = await asyncio.to_thread(_grey_spread, reading.attachment)
    if spread is None:
        raise _StepFailed("the still is not a readable JPEG")
    if spread < BLANK_SPREAD:
        raise _StepFailed(
            f"the still is blank (grey levels spread {spread:.1f}, under {BLANK_SPREAD:g}): "
            "a covered lens, a dark room or a dead sensor?"
        )
    return f"a still {size}, not blank (grey spread {spread:.0f}; {result.detail})"


def _grey_spread(jpeg: bytes) -> tuple[float | None, str]:
    """The standard deviation of a JPEG's grey levels and its size, or None when it does not decode."""
    import cv2  # the camera's own dependency; only a walk with a camera needs it
    import numpy as np

    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None, "unreadable"
    return float(image.std()), f"{image.shape[1]}x{image.shape[0]}"


class TerminalPrompter:
    """Instructions on the terminal; with ``yes`` nothing is asked, otherwise Enter starts a device and s skips it."""

    def __init__(self, *, yes: bool, echo: Callable[[str], None] = print) -> None:
        self.yes = yes
        self.echo = echo

    async def ready(self, device_id: str, what: str) -> bool:
        """Ask before each device unless ``yes``."""
        if self.yes:
            self.echo(f"{device_id}: {what}")
            return True
        answer = await asyncio.to_thread(input, f"{device_id}: {what}. Enter to start, s to skip: ")
        return answer.strip().lower() != "s"

    async def instruct(self, device_id: str, text: str) -> None:
        """Print what to do now."""
        self.echo(f"  -> {text}")

    def show(self, text: str) -> None:
        """Print a result."""
        self.echo(text)


def pending_dir(config_dir: Path) -> Path:
    """Where reports wait for the hub: ``selftests/pending`` beside the config (sent ones go to ``selftests/sent``)."""
    return config_dir / "selftests" / "pending"


def write_report(report: SelftestReport, config_dir: Path) -> Path:
    """Write the report to wait for the hub, 0600 (it names the store's devices); the path written."""
    stamp: datetime = report.finished_at
    path = pending_dir(config_dir) / f"selftest-{stamp:%Y%m%dT%H%M%S%fZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, report.model_dump_json(indent=2))
    return path


def upload_pending(config: AgentConfig, config_dir: Path, *, timeout_s: float = 30.0) -> list[str]:
    """Send every waiting report to the hub's gateway listener with the gateway's certificate; what happened, in
    words. A report the hub took moves to ``selftests/sent``; one it refuses for good (not a report, too large, not
    this gateway's) to ``selftests/refused``; any other failure leaves it waiting for the next run."""
    waiting = sorted(pending_dir(config_dir).glob("selftest-*.json"))
    if not waiting:
        return []
    hub_url, cert, key = config.snapshots.hub_url, config.mqtt.cert_file, config.mqtt.key_file
    if hub_url is None or cert is None:
        return [
            f"{len(waiting)} report(s) kept in {pending_dir(config_dir)}: set snapshots.hub_url (the hub's gateway "
            "listener) and the gateway's certificate (mqtt.cert_file) to send them"
        ]
    context = client_ssl_context(ca_file=config.mqtt.ca_file, cert_file=cert, key_file=key)
    said = []
    with httpx.Client(base_url=hub_url, verify=context, timeout=timeout_s) as client:
        for path in waiting:
            try:
                response = client.post(REPORT_PATH, content=path.read_bytes())
            except httpx.HTTPError as err:
                said.append(f"{path.name}: not sent, kept for the next run ({err or type(err).__name__})")
                log.warning("selftest_upload_failed", report=path.name, error=str(err))
                break  # the hub is not there: the others would fail alike
            if response.status_code == httpx.codes.CREATED:
                _move(path, config_dir / "selftests" / "sent")
                said.append(f"{path.name}: sent to the hub")
            elif response.status_code in _REFUSED_FOR_GOOD:
                _move(path, config_dir / "selftests" / "refused")
                said.append(f"{path.name}: refused by the hub ({response.status_code}: {_detail(response)})")
                log.warning("selftest_upload_refused", report=path.name, status=response.status_code)
            else:
                said.append(f"{path.name}: not taken ({response.status_code}: {_detail(response)}), kept")
                log.warning("selftest_upload_failed", report=path.name, status=response.status_code)
    return said


# Answers after which sending the same report again cannot help.
_REFUSED_FOR_GOOD: Final = frozenset({400, 413, 422})


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]


def _move(path: Path, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path.replace(directory / path.name)


def describe_report(report: SelftestReport) -> str:
    """The summary line."""
    counts = {outcome: sum(1 for r in report.results if r.outcome is outcome) for outcome in Outcome}
    verdict = "PASSED" if report.passed else "FAILED"
    return (
        f"selftest {verdict}: {counts[Outcome.PASSED]} passed, {counts[Outcome.FAILED]} failed, "
        f"{counts[Outcome.SKIPPED]} skipped"
    )


def _start_again(service: AgentService, prompter: Prompter) -> None:
    try:
        service.start()
    except ServiceError as err:
        prompter.show(f"the agent was not started again: {err}; start it by hand: sudo systemctl start {service.unit}")
    else:
        prompter.show(f"started {service.unit} again")


def run_selftest_command(
    config_path: Path,
    *,
    options: SelftestOptions,
    prompter: Prompter,
    as_json: bool,
    upload_only: bool = False,
    service: AgentService | None = None,
) -> tuple[str, int]:
    """``storegate provision selftest``: the summary (or the report as JSON) and the exit code.

    0: no device failed (with ``upload_only``: nothing left unsent); 1: a device failed (a report left unsent);
    2: the config cannot be used, or the agent runs outside systemd (it holds the ports). An agent that runs as the
    systemd service is stopped for the walk and started again afterwards, whatever happens.
    """
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        return str(err), EXIT_CONFIG
    config_dir = config_path.resolve().parent
    if upload_only:
        said = upload_pending(config, config_dir)
        left = list(pending_dir(config_dir).glob("selftest-*.json"))
        return "\n".join(said) or "no report waiting", 1 if left else 0
    service = service or AgentService()
    stopped = False
    if not service.active():
        pid = running_agent_pid(config.outbox.path)
        if pid is not None:
            return (
                f"the agent runs (pid {pid}), not as the {service.unit} service, and holds the devices: stop it "
                "first, run the self-test, then start it again",
                EXIT_CONFIG,
            )
    else:
        prompter.show(f"stopping {service.unit} (it holds the devices); it starts again after the self-test")
        try:
            service.stop()
        except ServiceError as err:
            return f"the self-test did not run: {err}", EXIT_CONFIG
        stopped = True
    try:
        report = asyncio.run(run_selftest(config, prompter, options))
    finally:
        if stopped:
            _start_again(service, prompter)
    written = write_report(report, config_dir)
    for line in upload_pending(config, config_dir):
        prompter.show(line)
    text = report.model_dump_json(indent=2) if as_json else f"{describe_report(report)}; report {written.name}"
    return text, 0 if report.passed else 1
