"""Debian's Chromium as the browser tests, the console benchmark and the screenshot script start it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

# Debian's Chromium; STOREGATE_CHROMIUM names another build of it (never one Playwright downloads).
CHROMIUM: Final = Path(os.environ.get("STOREGATE_CHROMIUM", "/usr/bin/chromium"))
# Headless, and quiet: without these Chromium keeps calling Google's hosts, which a closed network never answers.
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
