"""``common.service_bus`` → ``AsyncServiceBusHandler`` over bridge/'s bus adapters, for services
that keep their own process instead of moving onto Celery.

    handler = AsyncServiceBusHandler(
        processor_function=process_data,
        in_queue_name="input-queue",
        out_queue_name="output-queue",
        fully_qualified_namespace="namespace.servicebus.windows.net",
    )
    await handler.listen()          # until handler.stop()

The older constructor and methods, with better guarantees:

- **At least once.** Messages are received in peek-lock and completed only *after* the result was
  sent (the older handler completed first, so a crash lost the message). A crash between the send
  and the complete redelivers the message; the result is sent again with the same ``message_id``
  (derived from the input's) and the bus's duplicate detection drops it, so the output queue holds
  each result once. The result's ``correlation_id`` is the input's ``message_id``.
- **Retries, then dead-letter.** A processor that raises has the message abandoned after a backoff
  of ``retry_delay`` doubling per attempt, and redelivered; the attempt after ``max_retries``
  retries dead-letters it with reason ``ProcessingFailed`` and the error as description. The count
  is the bus's delivery count, so it survives restarts. A body that is not JSON is dead-lettered
  at once (``InvalidMessageBody``), as is a result over the bus's size limit (``ResultTooLarge``).
- **Adaptive idle polling.** Each receive waits up to ``max_wait_time`` for messages (a long
  poll); after empty receives the handler also sleeps, doubling up to ``COMPAT_MAX_IDLE_SECONDS``,
  and is back to full speed as soon as a message arrives.
- **Which bus.** As the bridge decides (bridge.bus.connect_bus): Service Bus when
  ``SERVICE_BUS_NAMESPACE`` or ``SERVICE_BUS_CONNECTION_STRING`` is set
  (``fully_qualified_namespace`` then names the namespace, as before), else the local bus in
  Redis, with a warning when a namespace was passed: the older services set
  ``SERVICE_BUS_NAMESPACE``, so they get Service Bus.

The processor gets the JSON-decoded body and may be async or blocking (run in the compat pool);
what it returns is sent as the result's JSON body (``None``: nothing is sent).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.bus import Bus, OutgoingMessage, ReceivedMessage, Receiver, connect_bus
from bridge.errors import BridgeError, MessageTooLarge
from compat.threads import run_blocking
from settings import Settings, get_logger, get_settings, log_context

log = get_logger(__name__)

# The first idle sleep after an empty receive; doubled per empty receive up to the setting.
FIRST_IDLE_SECS = 0.25
# The longest backoff before a failed message is abandoned: shorter than the bus's lock (60 s by
# default), so the lock is still ours when we give the message back.
MAX_RETRY_BACKOFF_SECS = 30.0
# Namespace of the derived result ids (any fixed UUID; this one is Conduit's compat handler's).
RESULT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3d4b-5e6f-9a0b-1c2d3e4f5a6b")


def result_message_id(in_queue: str, message_id: str) -> str:
    """The result's ``message_id``: the same for every delivery of one input message, so the
    bus's duplicate detection drops a result sent again after a redelivery."""
    return str(uuid.uuid5(RESULT_ID_NAMESPACE, f"{in_queue}\n{message_id}"))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _json_body(value: Any) -> str:
    """A message body: a str as it is (already JSON, as the older handler sent it), else JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _bus_for(settings: Settings, namespace: str | None) -> Bus:
    if settings.uses_local_bus:
        if namespace:
            log.warning(
                "fully_qualified_namespace=%s is not used: neither SERVICE_BUS_NAMESPACE nor "
                "SERVICE_BUS_CONNECTION_STRING is set, so this handler uses the local bus in "
                "Redis; set SERVICE_BUS_NAMESPACE=%s to use Service Bus",
                namespace,
                namespace,
            )
        return connect_bus(settings)
    if namespace and settings.service_bus_connection_string is None:
        settings = settings.model_copy(update={"service_bus_namespace": namespace})
    return connect_bus(settings)


class AsyncServiceBusHandler:
    """The older ``common.service_bus.AsyncServiceBusHandler`` (see the module docstring)."""

    def __init__(  # noqa: PLR0917 - the older constructor's positional order
        self,
        processor_function: Callable[[Any], Any],
        in_queue_name: str,
        out_queue_name: str,
        fully_qualified_namespace: str | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_wait_time: float = 5.0,
        message_batch_size: int = 10,
        *,
        bus: Bus | None = None,
    ) -> None:
        if max_retries < 0 or retry_delay < 0 or max_wait_time < 0 or message_batch_size < 1:
            raise ValueError(
                "max_retries, retry_delay and max_wait_time must be >= 0, message_batch_size >= 1"
            )
        settings = get_settings()
        self.processor_function = processor_function
        self.in_queue_name, self.out_queue_name = in_queue_name, out_queue_name
        self.max_retries, self.retry_delay = max_retries, retry_delay
        self.max_wait_time, self.message_batch_size = max_wait_time, message_batch_size
        self.max_idle_s = settings.compat_max_idle_s
        self._bus = bus or _bus_for(settings, fully_qualified_namespace)
        self._owns_bus = bus is None
        # Receivers are not thread-safe: every call on ours goes through one thread (per listen).
        self._receiver_thread: ThreadPoolExecutor | None = None
        self._receiver: Receiver | None = None
        self._stop = asyncio.Event()
        self.processed = 0  # messages settled (completed or dead-lettered), for health and tests

    # --- the older methods -----------------------------------------------------------------------
    async def listen(self) -> None:
        """Receive and process messages until :meth:`stop` is called."""
        self._stop.clear()
        self._receiver_thread = ThreadPoolExecutor(1, thread_name_prefix="compat-receiver")
        empty_receives = 0
        log.info("listening on %s, results to %s", self.in_queue_name, self.out_queue_name)
        try:
            while not self._stop.is_set():
                try:
                    batch = await self._on_receiver(
                        "receive", self.message_batch_size, self.max_wait_time
                    )
                except BridgeError as error:
                    log.warning("receive from %s failed: %s", self.in_queue_name, error)
                    batch = []
                if batch:
                    empty_receives = 0
                    outcomes = await asyncio.gather(
                        *(self.process_message(m) for m in batch), return_exceptions=True
                    )
                    for outcome in outcomes:
                        if isinstance(outcome, BridgeError):
                            # Unsettled: the bus delivers the message again when its lock ends.
                            log.warning("settling a message failed: %s", outcome)
                        elif isinstance(outcome, BaseException):
                            raise outcome
                    continue
                empty_receives += 1
                idle = min(self.max_idle_s, FIRST_IDLE_SECS * 2 ** (empty_receives - 1))
                try:
                    await asyncio.wait_for(self._stop.wait(), idle)
                except TimeoutError:
                    pass
        finally:
            await self._close()

    async def stop(self) -> None:
        """Stop listening: the batch in hand is finished, then the connections are closed."""
        self._stop.set()

    async def send_message(self, message_body: Any, *, message_id: str | None = None) -> str:
        """Send ``message_body`` (JSON-encoded unless it is already a str) to the output queue;
        returns its ``message_id`` (a new one unless given)."""
        message = OutgoingMessage(
            body=_json_body(message_body), message_id=message_id or uuid.uuid4().hex
        )
        await run_blocking(self._bus.send, self.out_queue_name, [message])
        return message.message_id

    async def process_message(self, message: ReceivedMessage) -> None:
        """Process one received message: result sent, then completed; or retried/dead-lettered."""
        with log_context(message_id=message.message_id):
            try:
                body = json.loads(message.body)
            except (ValueError, RecursionError) as error:  # not JSON, or nested past parsing
                await self._dead_letter(message, "InvalidMessageBody", _one_line(error))
                return
            try:
                result = await self._call_processor(body)
                # Serialised here, so a result that is not JSON counts as the processor's failure.
                result_body = None if result is None else _json_body(result)
            except Exception as error:  # noqa: BLE001 - any processor failure is retried
                await self._failed(message, error)
                return
            try:
                if result_body is not None:
                    await self._send_result(message, result_body)
            except MessageTooLarge as error:
                await self._dead_letter(message, "ResultTooLarge", _one_line(error))
                return
            except BridgeError as error:
                log.warning("result not sent, message returned to the queue: %s", error)
                await self._on_receiver("abandon", [message])
                return
            lost = await self._on_receiver("complete", [message])
            if lost:
                # Redelivered later; its result was sent, and the re-send will be dropped.
                log.warning("lock lost before completing; the message will come again")
            self.processed += 1

    # --- helpers ---------------------------------------------------------------------------------
    async def _call_processor(self, body: Any) -> Any:
        if inspect.iscoroutinefunction(self.processor_function):
            return await self.processor_function(body)
        result = await run_blocking(self.processor_function, body)
        if inspect.isawaitable(result):
            return await result
        return result

    async def _send_result(self, message: ReceivedMessage, body: str) -> None:
        outgoing = OutgoingMessage(
            body=body,
            message_id=result_message_id(self.in_queue_name, message.message_id),
            correlation_id=message.message_id,
        )
        await run_blocking(self._bus.send, self.out_queue_name, [outgoing])

    async def _failed(self, message: ReceivedMessage, error: Exception) -> None:
        attempt = max(1, message.delivery_count)
        if attempt > self.max_retries:
            await self._dead_letter(
                message, "ProcessingFailed", f"{_one_line(error)} (after {attempt} attempts)"
            )
            return
        backoff = min(MAX_RETRY_BACKOFF_SECS, self.retry_delay * 2 ** (attempt - 1))
        log.warning(
            "processing failed (attempt %d of %d), retrying in %.1f s: %s",
            attempt,
            self.max_retries + 1,
            backoff,
            _one_line(error),
        )
        await asyncio.sleep(backoff)
        await self._on_receiver("abandon", [message])

    async def _dead_letter(self, message: ReceivedMessage, reason: str, description: str) -> None:
        log.error("message dead-lettered (%s): %s", reason, description)
        await self._on_receiver("dead_letter", message, reason, description)
        self.processed += 1

    async def _on_receiver(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._receiver_thread is None:
            self._receiver_thread = ThreadPoolExecutor(1, thread_name_prefix="compat-receiver")

        def call() -> Any:
            if self._receiver is None:
                self._receiver = self._bus.receiver(self.in_queue_name)
            return getattr(self._receiver, method)(*args)

        return await loop.run_in_executor(self._receiver_thread, call)

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()

        def close() -> None:
            if self._receiver is not None:
                self._receiver.close()
                self._receiver = None
            if self._owns_bus:
                self._bus.close()

        executor, self._receiver_thread = self._receiver_thread, None
        if executor is None:
            close()
            return
        await loop.run_in_executor(executor, close)
        executor.shutdown(wait=True)
        log.info("stopped listening on %s", self.in_queue_name)
