"""``storegate demo`` as a user runs it: a subprocess, live events over HTTP, Ctrl-C, exit 0, nothing left."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from launcher.broker import free_port
from tests.conftest import wait_until

START_BUDGET_S = 20.0


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class Output:
    """The demo's console, read line by line on a thread while it runs."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text


def _sign_in(base: str, text: str) -> dict[str, str]:
    """Sign in with the login the demo printed; the session cookie to send."""
    found = re.search(r"sign in as\s+(\S+), password (\S+) \(shown only now\)", text)
    assert found is not None, f"the demo printed no login: {text[-2000:]}"
    response = httpx.post(f"{base}/login", data={"username": found.group(1), "password": found.group(2)}, timeout=5.0)
    assert response.status_code == 303, response.text
    session = next(c for c in response.headers.get_list("set-cookie") if c.startswith("__Host-storegate_session="))
    return {"Cookie": session.split(";")[0]}


def _events(base: str, session: dict[str, str], **params: str) -> list[dict[str, object]]:
    try:
        response = httpx.get(f"{base}/api/v1/events", params={"limit": 1000, **params}, headers=session, timeout=2.0)
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    items: list[dict[str, object]] = response.json()["items"]
    return items


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_shows_live_events_and_stops_cleanly_on_ctrl_c(tmp_path: Path, broker: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    demo = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "storegate"),  # the command run.py demo starts
            "demo",
            "--http-port",
            str(port),
            "--broker",
            broker,
            "--data-dir",
            str(tmp_path / "demo"),
            # A pipe would get JSON lines by default: the parts log as the demo was asked to.
            "--log-format",
            "console",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    children: set[int] = set()
    output = Output(demo)
    try:
        # No default password: the demo prints a login once, and everything below is read signed in with it.
        wait_until(
            lambda: "Storegate demo is running" in output.text, timeout=START_BUDGET_S, interval=0.2, what="the banner"
        )
        session = _sign_in(base, output.text)
        assert httpx.get(f"{base}/api/v1/events", timeout=2.0).status_code == 401  # and nothing without it

        def events_seen() -> list[dict[str, object]]:
            children.update(p.pid for p in _descendants(demo.pid))
            assert demo.poll() is None, f"demo exited early with {demo.returncode}"
            return _events(base, session)

        events = wait_until(events_seen, timeout=START_BUDGET_S, interval=0.2, what="events through the HTTP API")
        elapsed = time.monotonic() - started
        assert elapsed < START_BUDGET_S
        assert {e["store_id"] for e in events} == {"store-0001"}

        # The simulated store's devices, through their real drivers: every one attached, and each
        # reporting what it reports (the 1-Wire probe was found by hot-plug, not configured).
        expected = {
            ("shelf-a1", "device.attached"),
            ("till-1-scanner", "device.attached"),
            ("till-1-scanner", "scan.sale"),
            ("chiller-1", "environment.reading"),
            ("freezer-1", "environment.reading"),
            ("freezer-1-door", "door.closed"),
            ("dev-28-0316a279b0ff", "device.attached"),
            ("dev-28-0316a279b0ff", "environment.reading"),
            ("receipt-printer", "device.attached"),
            ("receipt-printer", "printer.status"),
            ("entrance-cam", "device.attached"),
        }

        def devices_reporting() -> bool:
            assert demo.poll() is None, f"demo exited early with {demo.returncode}"
            seen = {(str(e["device_id"]), str(e["kind"])) for e in _events(base, session)}
            return expected <= seen

        wait_until(devices_reporting, timeout=45, interval=0.5, what=f"events of every simulated device: {expected}")

        # The demo's catalog is loaded: the till's real baskets and the shelf's moves become stock movements.
        def stock_moving() -> set[str]:
            ledger = httpx.get(f"{base}/api/v1/stores/store-0001/ledger", headers=session, timeout=5.0).json()["items"]
            return {row["kind"] for row in ledger}

        wait_until(
            lambda: {"sale", "adjustment"} <= stock_moving(), timeout=30, interval=0.5, what="sales in the ledger"
        )
        unplaced = httpx.get(f"{base}/api/v1/stores/store-0001/unplaced-events", headers=session, timeout=5.0).json()[
            "items"
        ]
        assert unplaced == [], f"the demo catalog should place every scan and shelf move: {unplaced[:3]}"
        errors = _events(base, session, kind="device.error") + _events(base, session, kind="shelf.fault")
        assert errors == [], f"a simulated device failed, or its setup is wrong: {errors}"
        page = httpx.get(f"{base}/", headers=session, timeout=5.0)
        assert page.status_code == 200
        assert "store-0001" in page.text
        assert '<span class="who">demo-admin</span>' in page.text  # the console, signed in
        children.update(p.pid for p in _descendants(demo.pid))
        assert len(children) >= 4, "broker, hub, simulated devices and agent should run as children"

        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=45)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = output.finish()
    assert demo.returncode == 0, text[-3000:]
    assert "Storegate demo is running" in text
    assert "the demo broker is plain MQTT, anonymous and loopback-only" in text
    assert "demo catalog was not loaded" not in text
    for part in ("hub", "agent", "simulated-store"):
        assert re.search(rf"^\S+Z \[info\s*\] .* process={part}\b", text, re.MULTILINE), f"no console line of {part}"
    assert not re.search(r'^\{"', text, re.MULTILINE), "a JSON line despite --log-format console"
    left = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"
