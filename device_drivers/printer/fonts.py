"""Finding a font with Chinese glyphs, for printers that cannot print Chinese themselves (the text goes as a bitmap).

Fontconfig knows which installed fonts cover Chinese (``fc-list :lang=zh``); without it, a few
common paths of Debian/Raspberry Pi OS font packages are tried (``fonts-wqy-microhei``,
``fonts-noto-cjk``, ``fonts-arphic-uming``, ``fonts-droid-fallback``). None found: the driver
logs it once and such text prints as ``?`` (the job's result says so).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

COMMON_CJK_FONTS: Final = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)

Runner = Callable[[Sequence[str]], str]


def _fc_list(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False).stdout


def find_cjk_font(*, run: Runner = _fc_list, candidates: Sequence[Path] = COMMON_CJK_FONTS) -> Path | None:
    """A font file that covers Chinese, or None (logged) when the system has none."""
    try:
        listed = [Path(line.strip()) for line in run(["fc-list", ":lang=zh", "file"]).splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        listed = []  # no fontconfig: try the usual paths
    for path in [*(Path(str(p).rstrip(":")) for p in sorted(listed)), *candidates]:
        if path.is_file():
            return path
    log.warning("no_cjk_font", hint="install fonts-wqy-microhei: Chinese on printers without GB18030 prints as '?'")
    return None
