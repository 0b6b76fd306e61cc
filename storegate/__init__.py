"""Storegate: edge gateway and central hub for chain stores.

This package holds what the edge agent and the hub share without importing each
other: the wire contract (:mod:`storegate.wire`), the MQTT link, logging, config
files, the clock and process helpers. It imports nothing else of the project (an
import-linter contract checks it); the ``storegate`` command lives in :mod:`launcher`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("storegate")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
