"""``storegate provision bundle``: the files that let a gateway enrol itself on first boot, and a QR code of the link.

Two files go into ``--out`` (e.g. the boot partition of a freshly written SD card):

- ``storegate-enrol.json`` (0600): the hub's address and the one-time token; :mod:`provisioning.enroll` reads it with
  ``--from-file`` and deletes it once the token is spent;
- ``storegate-firstboot.service``: the unit that runs that enrolment once the network is up, while the file exists.
  It belongs in the gateway image once (``/etc/systemd/system``, enabled); each gateway then needs only its own
  enrolment file.

The enrolment link (the hub and, in the fragment, the token) is printed as a QR code for a phone: the technician can
check on the hub which token the card carries, or hand it to ``storegate provision enroll --link``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import segno

from provisioning.enroll import EnrolmentFile, EnrolRefusedError, check_hub_url
from provisioning.units import FIRSTBOOT_UNIT, unit_template
from storegate.enrolment import TokenFormatError, enrolment_link, parse_token

ENROLMENT_FILE_NAME: Final = "storegate-enrol.json"
# Where Raspberry Pi OS (bookworm and later) mounts the boot partition; older images use /boot.
DEFAULT_BOOT_PATH: Final = Path("/boot/firmware")


@dataclass(frozen=True, slots=True)
class Bundle:
    """The files written and the link they carry."""

    enrolment_file: Path
    unit_file: Path
    link: str


def render_firstboot_unit(*, executable: Path, enrolment_file: Path, home: Path) -> str:
    """The first-boot unit for a gateway whose enrolment file will be at ``enrolment_file``."""
    text = unit_template(FIRSTBOOT_UNIT)
    for placeholder, value in (
        ("@EXEC@", str(executable)),
        ("@ENROLMENT_FILE@", str(enrolment_file)),
        ("@HOME@", str(home)),
    ):
        text = text.replace(placeholder, value)
    return text


def write_bundle(
    out: Path, *, hub_url: str, token: str, executable: Path, home: Path, boot_path: Path = DEFAULT_BOOT_PATH
) -> Bundle:
    """Write the enrolment file (0600) and the first-boot unit into ``out``; EnrolRefusedError for a bad token."""
    hub = check_hub_url(hub_url)
    try:
        text = parse_token(token).text
    except TokenFormatError as err:
        raise EnrolRefusedError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    enrolment_file = out / ENROLMENT_FILE_NAME
    EnrolmentFile(hub_url=hub, token=text).write(enrolment_file)
    unit_file = out / FIRSTBOOT_UNIT
    unit_file.write_text(
        render_firstboot_unit(executable=executable, enrolment_file=boot_path / ENROLMENT_FILE_NAME, home=home),
        encoding="utf-8",
    )
    os.chmod(unit_file, 0o644)
    return Bundle(enrolment_file=enrolment_file, unit_file=unit_file, link=enrolment_link(hub, text))


def qr_code(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a phone to scan from the terminal."""
    buffer = io.StringIO()
    # Error correction M: still scans from a screen photographed at an angle; the link fits in version 9.
    segno.make(text, error="m").terminal(out=buffer, compact=True)
    return buffer.getvalue()
