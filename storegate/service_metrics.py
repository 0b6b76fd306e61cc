"""Metrics every Storegate service exports beside its own: what runs (build info) and how the process does.

The hub and the agent each keep a registry of their own (several apps or agents share one test process), so
prometheus_client's default registry, which carries the process collector, is never scraped: each registry gets
its own here.
"""

from __future__ import annotations

import platform
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

from storegate import __version__

BUILD_INFO: Final = "storegate_build_info"
Service = Literal["hub", "agent"]


def register_service_metrics(registry: CollectorRegistry, service: Service) -> None:
    """Add ``storegate_build_info`` and the ``process_*`` and ``python_info`` metrics to ``registry``.

    ``process_*`` (CPU seconds, resident memory, open files, start time) are read from /proc at each scrape; on a
    system without /proc they are simply absent.
    """
    build = Gauge(
        BUILD_INFO,
        "always 1: the Storegate version, service and Python this process runs (join on it to label by version)",
        ["service", "version", "python", "implementation"],
        registry=registry,
    )
    build.labels(
        service=service,
        version=__version__,
        python=platform.python_version(),
        implementation=platform.python_implementation(),
    ).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
