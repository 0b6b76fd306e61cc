"""Printer profiles (the shipped ones and what a bad one is told), and finding USB printers in sysfs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from device_drivers.printer.discovery import UsbPrinterLister, discover, port_lister
from device_drivers.printer.profile import PrinterProfile, PrinterSettings
from device_drivers.printer.render import escpos_profile_known
from device_drivers.printer.transport import TcpLink, UsbLpLink, make_link, parse_network_address
from device_drivers.profiles import load_catalog, parse_settings
from edge_agent.config import ProfiledDeviceConfig
from storegate.wire import DeviceIdentity


def test_the_shipped_printer_profiles() -> None:
    catalog = load_catalog()
    printers = {p.id: p for p in catalog.of_kind("printer")}
    assert set(printers) == {"epson-tm-t20", "epson-tm-t88", "generic-58mm", "network-printer-9100"}
    assert all(isinstance(p, PrinterProfile) for p in printers.values())
    tm_t20 = printers["epson-tm-t20"]
    assert isinstance(tm_t20, PrinterProfile)
    assert (tm_t20.transport, tm_t20.chars_per_line, tm_t20.gb18030) == ("usb", 48, False)
    assert [(u.vendor_id, u.product_id) for u in tm_t20.usb] == [("04b8", "0e15")]
    small = printers["generic-58mm"]
    assert isinstance(small, PrinterProfile)
    assert (small.paper_width_mm, small.chars_per_line, small.gb18030, small.cutter) == (58, 32, True, False)
    network = printers["network-printer-9100"]
    assert isinstance(network, PrinterProfile)
    assert (network.transport, network.port, network.usb) == ("network", 9100, [])
    assert all(isinstance(p, PrinterProfile) and escpos_profile_known(p.escpos_profile) for p in printers.values())
    assert parse_settings(tm_t20, {}) == PrinterSettings()
    settings = parse_settings(tm_t20, {"status_interval_s": 2, "header": "Corner Shop"})
    assert settings == PrinterSettings(status_interval_s=2, header="Corner Shop")


BASE: dict[str, Any] = {"id": "p", "kind": "printer", "vendor": "v", "model": "m", "transport": "usb"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"code_pages": ["cp437", "utf-8"]}, "unknown code page"),
        ({"transport": "bluetooth"}, "transport"),
        ({"transport": "usb", "serial": {"baudrate": 9600}}, "'serial' is for transport = 'serial' only"),
        ({"transport": "network", "usb": [{"vendor_id": "04b8"}]}, "a network printer is not found on USB"),
        ({"escpos_profile": "TM NOPE"}, "escpos_profile"),
        ({"chars_per_line": 200}, "chars_per_line"),
        ({"paper_width_mm": 60}, "paper_width_mm"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_profile_says_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PrinterProfile.model_validate(BASE | changes)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.60", ("192.168.1.60", 9100)),
        ("192.168.1.60:9101", ("192.168.1.60", 9101)),
        ("tcp://printer.local:9100", ("printer.local", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("[fe80::1]", ("fe80::1", 9100)),
    ],
)
def test_network_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_network_address(address) == expected


@pytest.mark.parametrize("address", ["", "host:port", "host:70000", "/dev/usb/lp0", "[::1]x"])
def test_bad_network_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="not a printer address"):
        parse_network_address(address)


def test_the_transport_follows_the_profile() -> None:
    assert isinstance(make_link(PrinterProfile.model_validate(BASE), "/dev/usb/lp0"), UsbLpLink)
    network = make_link(PrinterProfile.model_validate(BASE | {"transport": "network", "port": 9101}), "10.0.0.9")
    assert isinstance(network, TcpLink)
    assert (network.host, network.port) == ("10.0.0.9", 9101)


def usb_printer(sys_root: Path, name: str, attributes: dict[str, str], interface: str = "1-1.2:1.0") -> None:
    """A usblp device as the kernel lists it: /sys/class/usbmisc/lpN/device -> the USB interface under its device."""
    device = sys_root.parent / "devices" / interface.split(":")[0]
    (device / interface).mkdir(parents=True)
    for key, value in attributes.items():
        (device / key).write_text(value + "\n")
    (sys_root / name).mkdir(parents=True)
    (sys_root / name / "device").symlink_to(device / interface)


def test_usb_printers_are_found_in_sysfs_with_their_identity(tmp_path: Path) -> None:
    sys_root = tmp_path / "class" / "usbmisc"
    usb_printer(
        sys_root,
        "lp0",
        {"idVendor": "04B8", "idProduct": "0e15", "serial": "X5E1234567", "manufacturer": "EPSON", "product": "TM-T20"},
    )
    usb_printer(sys_root, "lp1", {"idVendor": "0416", "idProduct": "5011", "product": "POS58 Printer"}, "1-1.3:1.0")
    usb_printer(sys_root, "lp3", {"idVendor": "not-hex"}, "1-1.4:1.0")  # an identity that makes no sense: left out
    (sys_root / "hiddev0").mkdir()  # another usbmisc device: not a printer
    (sys_root / "lp2").mkdir()  # unplugged while listing: no device link
    ports = discover(sys_root, Path("/dev/usb"))
    assert [p.address for p in ports] == ["/dev/usb/lp0", "/dev/usb/lp1"]
    assert ports[0].identity == DeviceIdentity(
        vendor_id="04b8",
        product_id="0e15",
        serial_number="X5E1234567",
        manufacturer="EPSON",
        product="TM-T20",
        location="1-1.2:1.0",
    )
    assert ports[0].stable_key == "usb-04b8:0e15-X5E1234567"
    assert ports[1].stable_key == "port-1-1.3:1.0"  # no serial number: the physical port
    catalog = load_catalog()
    assert catalog.match(ports[0]).id == "epson-tm-t20"  # type: ignore[union-attr]
    assert catalog.match(ports[1]).id == "generic-58mm"  # type: ignore[union-attr]
    assert UsbPrinterLister(sys_root=sys_root, dev_root=Path("/dev/usb")).list_ports() == ports


def test_no_usblp_lists_nothing(tmp_path: Path) -> None:
    assert discover(tmp_path / "absent", Path("/dev/usb")) == []
    assert isinstance(port_lister([], object()), UsbPrinterLister)  # type: ignore[arg-type]


def test_the_config_entries_in_the_docs_are_valid() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "devices" / "printers.md"
    blocks = re.findall(r"```toml\n(.*?)```", docs.read_text(encoding="utf-8"), flags=re.DOTALL)
    entries = [entry for block in blocks for entry in tomllib.loads(block)["devices"]]
    assert len(entries) == 2
    catalog = load_catalog()
    for entry in entries:
        device = ProfiledDeviceConfig.model_validate(entry)
        parse_settings(catalog.get(device.profile), device.settings)
