"""The handler factory, keyed by ``ACS_STREAMING_MODE`` (the older system's name and values).

On an accepted media socket::

    handler = create_handler(settings.acs_streaming_mode, socket, call_id=..., settings=...,
                             engines=provider)
    handler.run()

A mode is one line of registration: ``register_handler("VOICE_LIVE", VoiceLiveHandler)`` (call
control registers VOICE_LIVE next to its handler). Every handler takes the same keyword
arguments as :class:`~voice.handlers.base.CallHandler` and has ``run()``.
"""

from __future__ import annotations

from typing import Any

from voice.handlers.base import CallHandler, MediaSocket, SocketClosed
from voice.handlers.media import MediaHandler
from voice.handlers.transcription import TranscriptionHandler
from voice.handlers.voice_live import VoiceLiveHandler

HANDLERS: dict[str, type[CallHandler]] = {}


class UnknownStreamingMode(ValueError):
    """No handler is registered for the configured ACS_STREAMING_MODE."""


def register_handler(mode: str, handler: type[CallHandler]) -> None:
    HANDLERS[mode.upper()] = handler


def create_handler(mode: str, socket: MediaSocket, **options: Any) -> CallHandler:
    try:
        handler = HANDLERS[mode.upper()]
    except KeyError:
        known = ", ".join(sorted(HANDLERS))
        raise UnknownStreamingMode(
            f"ACS_STREAMING_MODE={mode} has no handler in this build (known: {known})"
        ) from None
    return handler(socket, **options)


register_handler("MEDIA", MediaHandler)
register_handler("TRANSCRIPTION", TranscriptionHandler)
register_handler("VOICE_LIVE", VoiceLiveHandler)

__all__ = [
    "HANDLERS",
    "CallHandler",
    "MediaSocket",
    "SocketClosed",
    "UnknownStreamingMode",
    "create_handler",
    "register_handler",
]
