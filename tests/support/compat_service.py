"""A service of the older kind, moved by changing its import: ``AsyncServiceBusHandler`` with an
echo processor, run as its own process by tests that SIGKILL it midway.

    python -m tests.support.compat_service <in_queue> <out_queue>

Each message ``{"n": 7}`` becomes the result ``{"n": 7, "echo": true}``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from compat.logger import get_logger
from compat.service_bus import AsyncServiceBusHandler

# Slow enough that a test can kill the process with messages in flight.
PROCESS_SECS = 0.02


async def process_data(body: dict) -> dict:
    await asyncio.sleep(PROCESS_SECS)
    return {"n": body["n"], "echo": True}


async def main(in_queue: str, out_queue: str) -> None:
    get_logger("compat_service").info("compat service starting")
    handler = AsyncServiceBusHandler(
        processor_function=process_data,
        in_queue_name=in_queue,
        out_queue_name=out_queue,
        max_wait_time=1.0,
        message_batch_size=8,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(handler.stop()))
    await handler.listen()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
