"""A real Mosquitto on the configuration the hub writes, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tls_broker import TlsBroker, running_tls_broker


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """Mosquitto with TLS, client certificates, the ACL and the CRL; store-a/gw-1 and store-b/gw-1 enrolled."""
    with running_tls_broker(tmp_path) as tls:
        yield tls
