"""``storegate provision detect``: the devices plugged in, matched by hot-plug's own matcher, with entries to paste.

The ports are real ptys and a 1-Wire directory; only the USB ids pyserial would read from sysfs are faked, at its
lowest layer (``serial.tools.list_ports.comports``), as a pty has none. ``--add`` restarts the agent through a
``systemctl`` shim on PATH (systemd is not PID 1 here).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from device_drivers.simulated.pty import PtyPort
from edge_agent.config import load_agent_config
from edge_agent.hotplug import BENCH_USB_PORTS_ENV, SerialPortLister
from provisioning.detect import run_detect
from provisioning.service import AgentService
from storegate.private_files import is_private
from tests.provisioning.conftest import Systemd

IDS = 'store_id = "store-0042"\ngateway_id = "gw-1"\n'


def usb_port(device: str, vid: int, pid: int, serial: str | None, product: str) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, pid, serial
    info.manufacturer, info.product, info.location = "Maker", product, f"1-1.{vid % 7}:1.0"
    return info


@pytest.fixture
async def plugged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, str]]:
    """A shelf, a Zebra scanner and an unknown CH340 adapter on ptys, a DS18B20 probe on a 1-Wire directory."""
    async with PtyPort() as shelf, PtyPort() as scanner, PtyPort() as adapter:
        ports = [
            usb_port(shelf.port, 0x2E8A, 0x000A, "SGS-0001", "Storegate shelf"),
            usb_port(scanner.port, 0x05E0, 0x1701, "S22", "Symbol Bar Code Scanner"),
            usb_port(adapter.port, 0x1A86, 0x7523, None, "USB Serial"),
            ListPortInfo("/dev/ttyAMA0", skip_link_detection=True),  # the board's own UART: not plugged in
        ]
        monkeypatch.setattr(list_ports, "comports", lambda *args, **kwargs: ports)
        w1 = tmp_path / "w1"
        (w1 / "28-0316a279b0ff").mkdir(parents=True)
        (w1 / "w1_bus_master1").mkdir()
        yield {"shelf": shelf.port, "scanner": scanner.port, "adapter": adapter.port, "w1": str(w1)}


def write_config(tmp_path: Path, w1: str, devices: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'{IDS}[hotplug]\nw1_root = "{w1}"\n{devices}')
    return path


def ours(report: dict[str, Any], plugged: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The report's devices that this test plugged in, by address (the machine's own, if any, left out)."""
    mine = {plugged["shelf"], plugged["scanner"], plugged["adapter"], f"{plugged['w1']}/28-0316a279b0ff"}
    return {device["address"]: device for device in report["devices"] if device["address"] in mine}


async def test_every_device_with_its_profile_and_the_entry_to_paste(tmp_path: Path, plugged: dict[str, str]) -> None:
    config = write_config(tmp_path, plugged["w1"])
    text, code = run_detect(config, as_json=True)
    assert code == 1  # the CH340 adapter is unknown
    found = ours(json.loads(text), plugged)
    assert len(found) == 4  # the board's UART is no plugged-in device
    shelf = found[plugged["shelf"]]
    assert (shelf["profile"], shelf["suggested_device_id"], shelf["identity"]) == (
        "storegate-shelf-v1",
        "shelf-1",
        "usb-2e8a:000a-SGS-0001",
    )
    scanner = found[plugged["scanner"]]
    assert (scanner["profile"], scanner["suggested_device_id"]) == ("zebra-ds-cdc", "scanner-1")
    probe = found[f"{plugged['w1']}/28-0316a279b0ff"]
    assert (probe["profile"], probe["suggested_device_id"]) == ("ds18b20", "probe-1")
    unknown = found[plugged["adapter"]]
    assert unknown["profile"] is None
    assert unknown["toml"] is None
    assert unknown["usb_id"] == "1a86:7523"
    assert unknown["advice"].startswith("no profile knows this device (USB 1a86:7523, product USB Serial)")

    # Pasted as printed, the entries make a config the agent loads, and detect then knows them.
    entries = "".join(device["toml"] for device in found.values() if device["toml"])
    pasted = write_config(tmp_path, plugged["w1"], entries)
    loaded = load_agent_config(pasted)
    assert sorted(device.device_id for device in loaded.devices) == ["probe-1", "scanner-1", "shelf-1"]
    assert tomllib.loads(shelf["toml"])["devices"][0]["identity"] == shelf["identity"]
    again = ours(json.loads(run_detect(pasted, as_json=True)[0]), plugged)
    assert again[plugged["shelf"]]["configured_as"] == "shelf-1"
    assert again[plugged["shelf"]]["advice"] == "already in the config as 'shelf-1' (profile storegate-shelf-v1)"


async def test_the_text_report_and_configured_devices_not_plugged_in(tmp_path: Path, plugged: dict[str, str]) -> None:
    absent = '[[devices]]\ndevice_id = "till-2"\nprofile = "zebra-ds-cdc"\nidentity = "usb-05e0:1701-GONE"\n'
    text, code = run_detect(write_config(tmp_path, plugged["w1"], absent), as_json=False)
    assert code == 1
    lines = text.splitlines()
    at = lines.index(f"{plugged['shelf']}: shelf-1 (profile storegate-shelf-v1)")
    assert lines[at + 1] == (
        "  identity usb-2e8a:000a-SGS-0001, USB 2e8a:000a, serial number SGS-0001, Maker Storegate shelf"
    )
    assert lines[at + 3 : at + 7] == [
        "    [[devices]]",
        '    device_id = "shelf-1"',
        '    profile = "storegate-shelf-v1"',
        '    identity = "usb-2e8a:000a-SGS-0001"',
    ]
    assert lines[-1] == "configured but not plugged in: till-2"


def test_a_broken_config_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(IDS + "[hotplug]\npoll_intervl_s = 1\n")
    text, code = run_detect(path, as_json=False)
    assert code == 2
    assert "hotplug.poll_intervl_s: unknown key (check its spelling and section); did you mean 'poll_interval_s'?" in (
        text
    )


async def test_add_appends_each_new_device_once_and_restarts_the_agent(
    tmp_path: Path, plugged: dict[str, str], systemd: Systemd
) -> None:
    absent = '[[devices]]\ndevice_id = "shelf-1"\nprofile = "zebra-ds-cdc"\nidentity = "usb-05e0:1701-GONE"\n'
    config = write_config(tmp_path, plugged["w1"], absent)
    config.chmod(0o600)
    text, code = run_detect(config, as_json=False, add=True, service=systemd.service)
    assert code == 1  # the CH340 adapter is still unknown, and the configured shelf-1 is not plugged in
    lines = text.splitlines()
    assert sorted(line for line in lines if line.startswith("added ")) == [
        f"added probe-1 (ds18b20, identity dev-28-0316a279b0ff) to {config}",
        f"added scanner-1 (zebra-ds-cdc, identity usb-05e0:1701-S22) to {config}",
        f"added shelf-2 (storegate-shelf-v1, identity usb-2e8a:000a-SGS-0001) to {config}",
    ]
    assert lines[-1] == "restarted storegate-agent.service: the agent now runs the added devices"
    assert systemd.calls == ["restart storegate-agent.service"]
    assert is_private(config)
    assert sorted(device.device_id for device in load_agent_config(config).devices) == [
        "probe-1",
        "scanner-1",
        "shelf-1",
        "shelf-2",  # the suggested id never reuses one the config has
    ]
    assert f"{plugged['shelf']}: shelf-2 (profile storegate-shelf-v1)" in lines  # the report as the agent sees it

    # Run again: nothing new, nothing doubled, no restart.
    text, _ = run_detect(config, as_json=True, add=True, service=systemd.service)
    assert json.loads(text)["added"] == []
    assert len(load_agent_config(config).devices) == 4
    assert systemd.calls == ["restart storegate-agent.service"]
    assert list(tmp_path.glob(".agent.toml.*")) == []


async def test_add_without_systemd_says_how_and_a_failed_restart_is_said(
    tmp_path: Path, plugged: dict[str, str], systemd: Systemd
) -> None:
    config = write_config(tmp_path, plugged["w1"])
    no_systemd = AgentService(runtime_dir=tmp_path / "no-systemd")
    text, code = run_detect(config, as_json=False, add=True, service=no_systemd)
    assert code == 1  # the unknown adapter
    assert text.splitlines()[-1] == (
        f"systemd is not running here (no {tmp_path / 'no-systemd'}): restart the agent by hand to use them "
        f"(stop it, then start `storegate agent --config {config}` again)"
    )
    assert systemd.calls == []

    config.write_text(config.read_text().split("[[devices]]")[0])  # the entries gone again
    systemd.fails("restart")
    text, code = run_detect(config, as_json=False, add=True, service=systemd.service)
    assert code == 1
    assert text.splitlines()[-1] == (
        "the agent was not restarted: systemctl restart storegate-agent.service failed: Job for "
        "storegate-agent.service failed because the control process exited with error code.; restart it by hand: "
        "sudo systemctl restart storegate-agent.service"
    )
    assert len(load_agent_config(config).devices) == 3  # the config has them: a restart by hand is all it takes


async def test_add_leaves_a_config_it_would_break_as_it_was(
    tmp_path: Path, plugged: dict[str, str], systemd: Systemd
) -> None:
    config = write_config(tmp_path, plugged["w1"])
    config.write_text(IDS + "devices = []\n" + f'[hotplug]\nw1_root = "{plugged["w1"]}"\n')
    before = config.read_text()
    text, code = run_detect(config, as_json=False, add=True, service=systemd.service)
    assert code == 2
    assert text.startswith(f"nothing added: {config} would not load with the entries added:")
    assert config.read_text() == before
    assert list(tmp_path.glob(".agent.toml.*")) == []
    assert systemd.calls == []
    assert run_detect(None, as_json=False, add=True) == ("--add needs the agent's config (--config)", 2)


def test_a_forged_bench_port_list_is_refused_and_the_lister_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = tmp_path / "usb-ports.json"
    monkeypatch.setenv(BENCH_USB_PORTS_ENV, str(bench))
    for forged in (
        "not json",
        json.dumps([{"device": "/dev/ttyACM0", "vid": 70000}]),  # beyond 16 bits
        json.dumps([{"device": "/dev/ttyACM0", "vid": 1, "command": "rm -rf /"}]),  # a key no port has
        json.dumps([{"device": "/dev/" + "x" * 5000, "vid": 1}]),
    ):
        bench.write_text(forged)
        assert SerialPortLister().list_ports() == []
    bench.unlink()
    assert SerialPortLister().list_ports() == []  # a missing file: logged, nothing listed
    bench.write_text(json.dumps([{"device": "/dev/ttyACM7", "vid": 0x05E0, "pid": 0x1701, "serial_number": "S22"}]))
    (port,) = SerialPortLister().list_ports()
    assert (port.address, port.stable_key) == ("/dev/ttyACM7", "usb-05e0:1701-S22")
