"""USB cameras found by hot-plug: V4L2 capture nodes in a sysfs-like tree (the kernel's layout, faked in a
temporary directory because no camera is plugged into the test machine), each with the profile that fits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from device_drivers.camera.discovery import V4lLister, discover
from device_drivers.camera.profile import CameraProfile
from device_drivers.families import families
from device_drivers.profiles import load_catalog


def usb_camera(sys_root: Path, node: str, index: int, *, port: str, serial: str | None, product: str) -> None:
    """A V4L2 node whose ``device`` link points into a USB device directory, as on a Pi."""
    usb = sys_root / "devices" / "usb1" / port
    interface = usb / f"{port}:1.0"
    interface.mkdir(parents=True, exist_ok=True)
    for name, value in {
        "idVendor": "046d",
        "idProduct": "0825",
        "manufacturer": "Logitech",
        "product": product,
    }.items():
        (usb / name).write_text(value + "\n")
    if serial is not None:
        (usb / "serial").write_text(serial + "\n")
    folder = sys_root / "class" / "video4linux" / node
    folder.mkdir(parents=True)
    (folder / "name").write_text(f"{product}\n")
    (folder / "index").write_text(f"{index}\n")
    (folder / "device").symlink_to(interface)


def test_capture_nodes_are_listed_with_usb_identity_and_the_generic_profile(tmp_path: Path) -> None:
    usb_camera(tmp_path, "video0", 0, port="1-1.2", serial="A1B2C3", product="C270 HD WEBCAM")
    usb_camera(tmp_path, "video1", 1, port="1-1.2", serial="A1B2C3", product="C270 HD WEBCAM")  # metadata node
    usb_camera(tmp_path, "video2", 0, port="1-1.3", serial=None, product="USB Camera")
    root = tmp_path / "class" / "video4linux"
    catalog = load_catalog()
    profiles = [p for p in catalog.of_kind("camera") if isinstance(p, CameraProfile)]
    ports = V4lLister(profiles=profiles, root=root, dev=Path("/dev")).list_ports()
    assert [p.address for p in ports] == ["/dev/video0", "/dev/video2"]
    assert {p.profile_hint for p in ports} == {"usb-uvc-camera"}
    first, second = ports
    assert (first.identity.vendor_id, first.identity.product_id, first.identity.product) == (
        "046d",
        "0825",
        "C270 HD WEBCAM",
    )
    assert first.stable_key == "usb-046d:0825-A1B2C3"  # follows the camera to another port
    assert second.stable_key == "port-1-1.3"  # no serial: the port it is plugged into


def test_no_v4l2_means_no_cameras(tmp_path: Path) -> None:
    assert discover(tmp_path / "absent") == []


def test_the_family_registers_its_lister_for_hot_plug() -> None:
    camera = next(f for f in families() if f.kind == "camera")
    assert camera.port_lister is not None
    lister = camera.port_lister(load_catalog().of_kind("camera"), object())  # type: ignore[arg-type]
    assert isinstance(lister, V4lLister)
    assert [p.id for p in lister.profiles] == ["usb-uvc-camera"]  # the RTSP profile is configured, not found


def test_loading_the_profiles_and_hot_plug_imports_no_opencv() -> None:
    # A gateway without cameras never pays for OpenCV (tens of MB): only opening a camera imports it.
    probe = (
        "import sys\n"
        "from device_drivers.profiles import load_catalog, parse_settings\n"
        "import edge_agent.hotplug\n"
        "catalog = load_catalog()\n"
        "for profile in catalog.of_kind('camera'):\n"
        "    parse_settings(profile, {})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cv2', 'numpy')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
