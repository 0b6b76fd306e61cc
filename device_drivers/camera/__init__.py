"""Cameras (OpenCV): USB (UVC) cameras, RTSP/HTTP streams and video files; motion, tamper, footfall, stills.

Importing the family loads no OpenCV: the analysis and the driver import it when a camera is opened.
"""

from __future__ import annotations

from device_drivers.camera.discovery import port_lister
from device_drivers.camera.profile import CameraProfile, CameraSettings
from device_drivers.families import DeviceFamily

# USB cameras are V4L2 nodes, not serial ports: hot-plug lists them with the family's own lister (sysfs).
FAMILY = DeviceFamily(
    kind="camera",
    profile=CameraProfile,
    settings=CameraSettings,
    driver="device_drivers.camera.driver:create",
    port_lister=port_lister,
)
