"""Tasks about the worker itself: proof that a message goes round trip through a live worker."""

from __future__ import annotations

import os
import socket
import time

from celery import shared_task

# A ping may be asked to take a while (to exercise redelivery); never long enough to hog a slot.
MAX_PING_DELAY_SECS = 30.0


@shared_task(name="worker.ping")
def ping(delay_s: float = 0.0) -> dict[str, object]:
    """Answer with who ran it; ``delay_s`` holds the slot that long first (max 30 s)."""
    if not 0 <= delay_s <= MAX_PING_DELAY_SECS:
        raise ValueError(f"delay_s must be between 0 and {MAX_PING_DELAY_SECS}, got {delay_s}")
    time.sleep(delay_s)
    return {"pong": True, "hostname": socket.gethostname(), "pid": os.getpid()}
