"""ESC/POS receipt printers on USB (usblp), serial or the network (raw TCP 9100)."""

from __future__ import annotations

from device_drivers.families import DeviceFamily
from device_drivers.printer.discovery import port_lister
from device_drivers.printer.profile import PrinterProfile, PrinterSettings

# USB printers are usblp device files, not serial ports: hot-plug lists them with the family's own lister.
FAMILY = DeviceFamily(
    kind="printer",
    profile=PrinterProfile,
    settings=PrinterSettings,
    driver="device_drivers.printer.driver:create",
    port_lister=port_lister,
)
