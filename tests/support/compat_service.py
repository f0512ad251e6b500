"""A service of the older kind, moved by changing its import: ``AsyncServiceBusHandler`` with an
echo processor, run as its own process by tests that SIGKILL it midway.

    python -m tests.support.compat_service <in_queue> <out_queue> [--slow-complete]

Each message ``{"n": 7}`` becomes the result ``{"n": 7, "echo": true}``, and field ``7`` of the
Redis hash ``compat-service:processed:<in_queue>`` counts how often it was processed; SIGTERM
stops it. ``--slow-complete`` makes each complete take a while on the (real, local) bus, as over
a slow link to Service Bus, so a kill reliably finds results sent for messages not yet completed.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import time
from collections.abc import Sequence

import redis.asyncio

from bridge.bus import ReceivedMessage
from bridge.local_bus import LocalBus, LocalReceiver
from compat.logger import get_logger
from compat.service_bus import AsyncServiceBusHandler
from settings import get_settings

# Slow enough that a test can kill the process with messages in flight.
PROCESS_SECS = 0.02
# With --slow-complete: how long each complete takes.
SLOW_COMPLETE_SECS = 0.2


class SlowToComplete(LocalReceiver):
    def complete(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        time.sleep(SLOW_COMPLETE_SECS)
        return super().complete(messages)


class SlowSettlingBus(LocalBus):
    def receiver(self, queue: str) -> LocalReceiver:
        return SlowToComplete(self, queue)


def processed_key(in_queue: str) -> str:
    return f"compat-service:processed:{in_queue}"


async def process_data(counts: redis.asyncio.Redis, in_queue: str, body: dict) -> dict:
    await counts.hincrby(processed_key(in_queue), str(body["n"]), 1)
    await asyncio.sleep(PROCESS_SECS)
    return {"n": body["n"], "echo": True}


async def main(in_queue: str, out_queue: str, slow_complete: bool) -> None:
    get_logger("compat_service").info("compat service starting")
    counts = redis.asyncio.Redis.from_url(get_settings().broker_url)
    bus = SlowSettlingBus.from_settings(get_settings()) if slow_complete else None
    handler = AsyncServiceBusHandler(
        processor_function=functools.partial(process_data, counts, in_queue),
        in_queue_name=in_queue,
        out_queue_name=out_queue,
        max_wait_time=1.0,
        message_batch_size=8,
        bus=bus,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(handler.stop()))
    try:
        await handler.listen()
    finally:
        await counts.aclose()
        if bus is not None:
            bus.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--slow-complete" in sys.argv[3:]))
