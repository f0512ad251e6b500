"""The errors the bridge acts on. Third-party errors are mapped onto them at one boundary each:
azure-servicebus and redis in the bus adapters, kombu and redis in the Celery publisher.

    BridgeError
    ├── BusUnavailable       the bus cannot be reached now: wait and try again
    ├── BusError             the bus refused an operation (bad queue name, no permission ...)
    │   └── MessageTooLarge  one message is over the bus's size limit
    └── BrokerUnavailable    Celery's broker refused or dropped a publish: abandon, retry later
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class BusUnavailable(BridgeError):
    """Service Bus or the local bus cannot be reached; the operation may succeed later."""


class BusError(BridgeError):
    """Service Bus or the local bus refused the operation; retrying the same call will not help."""


class MessageTooLarge(BusError):
    """The message ``message_id`` is over the bus's size limit: it can never be sent."""

    def __init__(self, message_id: str, detail: str) -> None:
        super().__init__(detail)
        self.message_id = message_id


class BrokerUnavailable(BridgeError):
    """Publishing to Celery's broker failed; nothing after the failed message was published."""
