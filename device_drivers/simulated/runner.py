"""``storegate simulate-store``: the demo's simulated store devices in a process of their own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from device_drivers.simulated.store import SimulatedStore
from storegate.logs import configure_logging
from storegate.process import EXIT_FAILED, EXIT_OK, stop_on_signals

log = structlog.get_logger(__name__)

MANIFEST = "devices.json"


async def _serve(workdir: Path, seed: int) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        async with SimulatedStore(workdir=workdir, seed=seed) as store:
            store.write_manifest(workdir / MANIFEST)
            log.info("simulated_store_ready", devices=[d.device_id for d in store.devices], manifest=MANIFEST)
            running = asyncio.create_task(store.run(), name="simulated store")
            stopping = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in (running, stopping):
                task.cancel()
            await asyncio.gather(running, stopping, return_exceptions=True)
            if running in done and running.exception() is not None:
                raise RuntimeError("the simulated store failed") from running.exception()


def run_simulated_store(workdir: Path, *, seed: int = 0) -> int:
    """Run until SIGINT/SIGTERM; 0 after a clean stop, 1 if the simulation failed."""
    configure_logging(process="simulated-store")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(_serve(workdir, seed))
    except Exception as err:
        log.error("simulated_store_failed", error=repr(err), exc_info=err)
        return EXIT_FAILED
    return EXIT_OK
