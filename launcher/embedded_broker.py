"""The embedded demo broker: amqtt on one loopback listener, anonymous, MQTT 3.1.1.

Only for ``storegate demo`` on machines without Mosquitto. It keeps nothing on
disk and accepts anyone on loopback, which is why nothing else uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from amqtt.broker import Broker


async def serve(host: str, port: int) -> None:
    """Run the broker until SIGINT or SIGTERM."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    """Entry point: ``python -m launcher.embedded_broker --port N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # amqtt logs every TCP probe of its port (how the demo waits for it) as an error.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
