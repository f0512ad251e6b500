"""Which bus the bridge talks to: ``connect_bus(settings)``, and the bus interface re-exported.

Service Bus when a namespace or connection string is configured, else the local bus in Redis.
The interface itself is in ``bus_api.py``, which both implementations import: this module
imports them, so they must not import it (that was an import cycle).

    bus = connect_bus(settings)
    bus.send("form_iq", [OutgoingMessage(body='{"id": 1}', message_id="m-1")])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.bus_api import Bus, OutgoingMessage, PropertyValue, ReceivedMessage, Receiver
from bridge.local_bus import LocalBus

if TYPE_CHECKING:
    from settings import Settings

__all__ = [
    "Bus",
    "OutgoingMessage",
    "PropertyValue",
    "ReceivedMessage",
    "Receiver",
    "connect_bus",
]


def connect_bus(settings: Settings) -> Bus:
    """Service Bus when a namespace or connection string is configured, else the local bus."""
    if settings.uses_local_bus:
        return LocalBus.from_settings(settings)
    # Deliberately lazy: the azure-servicebus SDK is heavy, and the local bus never needs it.
    from bridge.servicebus import ServiceBus

    return ServiceBus.from_settings(settings)
