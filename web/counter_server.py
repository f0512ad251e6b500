"""The older counter's API on a lean server of its own: ``python -m web.counter_server`` (the
``counter`` Procfile process, on COUNTER_PORT, WEB_CONCURRENCY processes).

Why a server of its own: callers of the older counter make two requests per model call (lock,
then report), so the counter's cost per request is what they feel. Profiled under gunicorn's
threaded worker, a lock + report pair spent most of its time in the server rather than in the
quota decision: gunicorn parses HTTP in Python, hands every request from its poller to a thread,
and the threads pass the GIL back and forth around each Redis round trip; a trivial WSGI app
there tops out near 3,400 requests/s on this machine. Here, on one event loop (uvicorn with
uvloop and httptools), a request is parsed in C, and locks are granted from quota leases
(quota/leases.py, QUOTA_LEASE_SECONDS): room charged in the shared Redis window that this process
grants from in memory, writing its grants behind the answers. A lock, and a report that follows
it at once, then cost no Redis round trip, which the older counter never paid either; a later
report is one, from whichever process it reaches. Near the limit leases shrink to nothing and
each lock is one awaited EVALSHA. ``python -m bench.counter_api`` measures it against the older
counter.

Served: POST ``/lock``, ``/report``, ``/release`` and GET ``/status`` of every pool (also under
``/embedding/`` and ``/whisper/``), and GET ``/health``, with the bodies, status codes and
credentials of the web app's routes (web/counter.py holds the answers both give). Anything else is
a 404 naming the web app's port, where the dashboard, the quota API and the voice agent live.
Bounds: a body over MAX_REQUEST_BYTES is 413; a request line and headers over MAX_HEAD_BYTES are
431 and the connection closed (:class:`BoundedHttpToolsProtocol`: uvicorn's httptools protocol
bounds neither; its h11 protocol does, but measured here it halved the throughput).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from logship import start_log_shipping, stop_log_shipping
from quota import AsyncQuotaLimiter, QuotaLeases
from settings import Settings, configure_logging, get_logger, settings_or_exit
from settings.jsonsafe import JsonRejected, loads_bounded
from settings.state_redis import async_state_redis
from telemetry import configure_tracing
from web.auth import Authenticator, AuthError
from web.counter import (
    ACTIONS,
    POOL_PREFIXES,
    UNREACHABLE,
    Answer,
    BadCount,
    answer_call_async,
    counter_call,
    counter_status,
    unreachable_detail,
)
from web.strict_json import MAX_REQUEST_BYTES

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

# A request's line and headers together: the older counter's callers send a handful of short
# headers and an Entra ID token is under 3 KB; gunicorn allows 100 fields of 8 KB each, this is
# less generous because nothing here needs more.
MAX_HEAD_BYTES = 16 * 1024
# An idle keep-alive connection is closed after this long (uvicorn's default is 5 s).
KEEP_ALIVE_SECS = 30
# Open requests are given this long to finish on Ctrl-C / SIGTERM.
GRACEFUL_STOP_SECS = 5
CHALLENGE: Header = (b"www-authenticate", b'Bearer error="invalid_token"')
# Built once: json.dumps with an argument builds an encoder per call. Compact, as the older
# counter (FastAPI) answered.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class _Headers:
    """A request's headers as the Authenticator reads them (``headers.get``), from the ASGI
    scope's list; a header sent twice counts as its first value."""

    def __init__(self, raw: list[Header]) -> None:
        self._fields = dict(reversed(raw))

    def get(self, name: str, default: str | None = None) -> str | None:
        # ASGI servers lower-case header names.
        value = self._fields.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


class _Request:
    def __init__(self, headers: _Headers) -> None:
        self.headers = headers
        self.args: dict[str, str] = {}  # the counter's routes take no query credential


def _routes() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(method, path) -> (action, pool, the endpoint name web/auth.py's rules know it by)."""
    routes = {("GET", "/health"): ("health", "", "health.health")}
    for pool, prefix in POOL_PREFIXES.items():
        name = "" if pool == "completion" else f"{pool}_"
        for action in (*ACTIONS, "status"):
            method = "GET" if action == "status" else "POST"
            routes[(method, f"{prefix}/{action}")] = (action, pool, f"counter.{name}{action}")
    return routes


class BodyTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request's line and headers bounded (uvicorn bounds
    neither): a peer that never ends its headers would otherwise grow this process's memory
    without limit. Two counts, because httptools hands a header over only once it is whole: the
    fields handed over (exact), and the chunks that arrived while a head was unfinished (what
    httptools holds meanwhile; a chunk that ends a head is not counted, so no body is)."""

    _in_head = True  # from a connection's start or a message's end until headers end
    _heads_ended = 0
    _unfinished_bytes = 0
    _field_bytes = 0
    _refused = False

    def data_received(self, data: bytes) -> None:
        was_in_head, heads_ended = self._in_head, self._heads_ended
        super().data_received(data)
        if was_in_head and self._heads_ended == heads_ended:  # the chunk is all head
            self._unfinished_bytes += len(data)
            if self._unfinished_bytes > MAX_HEAD_BYTES:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._field_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._field_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_bytes += len(name) + len(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._heads_ended, self._unfinished_bytes = False, self._heads_ended + 1, 0
        if self._field_bytes > MAX_HEAD_BYTES:
            self._refuse()  # and no request starts
        else:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        if not self._refused:
            super().on_message_complete()

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        body = json.dumps({"detail": f"request line and headers over {MAX_HEAD_BYTES} bytes"})
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n{body}".encode()
        )
        self.transport.close()


class CounterServer:
    """The ASGI app. ``limiter``: one to use (tests); else one is built on the state Redis
    (STATE_REDIS_URL, else REDIS_URL) when the server starts (ASGI lifespan), in each process."""

    def __init__(self, settings: Settings, limiter: AsyncQuotaLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter
        # What answers locks, reports and releases: the limiter's leases, or the limiter itself
        # when QUOTA_LEASE_SECONDS is 0. Built with the limiter, on the server's event loop.
        self.quota: AsyncQuotaLimiter | QuotaLeases | None = None
        self._authenticator = Authenticator(settings)
        self._routes = _routes()
        self._paths = {path for _, path in self._routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # uvicorn runs this app with WebSockets off
            return
        status, body, headers = await self._respond(scope, receive)
        payload = _ENCODER.encode(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        own_client = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.limiter is None:
                    own_client = async_state_redis(self.settings, health_check_interval=30)
                    self.limiter = AsyncQuotaLimiter(own_client, self.settings)
                lease_s = self.settings.quota_lease_s
                self.quota = QuotaLeases(self.limiter, lease_s) if lease_s else self.limiter
                start_log_shipping(self.settings)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if isinstance(self.quota, QuotaLeases):
                    await self.quota.aclose()
                stop_log_shipping()
                if own_client is not None:
                    await own_client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, scope: Scope, receive: Receive) -> tuple[int, Any, list[Header]]:
        route = self._routes.get((scope["method"], scope["path"]))
        if route is None:
            if scope["path"] in self._paths:
                return 405, {"detail": "Method Not Allowed"}, []
            detail = (
                "Not found: this port serves the older counter's /lock, /report, /release and "
                f"/status; the rest of Conduit is on the web app's port ({self.settings.web_port})"
            )
            return 404, {"detail": detail}, []
        action, pool, endpoint = route
        if action == "health":
            return 200, {"status": "healthy"}, []
        headers = _Headers(scope["headers"])
        try:
            await self._authenticate(headers, endpoint)
        except AuthError as error:
            return 401, {"detail": str(error)}, [CHALLENGE]
        status, body = await self._answer(headers, receive, action, pool)
        return status, body, []

    async def _authenticate(self, headers: _Headers, endpoint: str) -> None:
        request = _Request(headers)
        if request.headers.get("authorization") and not request.headers.get("x-api-key"):
            # A bearer token may need the signing keys fetched (web/auth.py): off the event
            # loop, so one slow JWKS endpoint does not hold every other caller.
            await asyncio.to_thread(self._authenticator.authenticate, request, endpoint)  # type: ignore[arg-type]
        else:
            self._authenticator.authenticate(request, endpoint)  # type: ignore[arg-type]

    async def _answer(  # noqa: PLR0911 - one answer per kind of failure reads best flat
        self, headers: _Headers, receive: Receive, action: str, pool: str
    ) -> Answer:
        quota = self.quota
        assert quota is not None, "the lifespan builds the limiter before any request"
        try:
            if action == "status":
                model = quota.protocol.defaults[pool].deployment
                return 200, counter_status(await quota.model_status(pool, model))
            # The same bounded, strict parser as every route of the web app (web/strict_json.py).
            data = loads_bounded(await _read_body(headers, receive), max_bytes=MAX_REQUEST_BYTES)
            return await answer_call_async(quota, counter_call(action, pool, data, quota.protocol))
        except BodyTooLarge:
            return 413, {"detail": f"the body is over {MAX_REQUEST_BYTES} bytes"}
        except (JsonRejected, BadCount) as error:
            return 400, {"detail": str(error)}
        except ValidationError as error:
            # FastAPI's 422 shape, as web/errors.py answers it for the web app's routes.
            problems = error.errors(include_url=False, include_context=False, include_input=False)
            return 422, {"detail": problems}
        except UNREACHABLE as error:
            return 503, {"detail": unreachable_detail(error)}
        except Exception:
            log.exception("unhandled error in a counter request")
            return 500, {"detail": "Internal server error; the log has the details."}


async def _read_body(headers: _Headers, receive: Receive) -> bytes:
    """The request body, refused with :class:`BodyTooLarge` as soon as it is over the bound
    (by its Content-Length before reading, or by what arrived for a chunked one)."""
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def create_counter_app() -> CounterServer:
    """uvicorn's factory, run in every server process."""
    settings = settings_or_exit("counter")
    configure_logging(settings)
    configure_tracing("conduit-counter")
    return CounterServer(settings)


def main() -> None:
    settings = settings_or_exit("counter")
    uvicorn.run(
        "web.counter_server:create_counter_app",
        factory=True,
        host=settings.web_host,
        port=settings.counter_port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,
        ws="none",
        lifespan="on",
        # Logging is settings.configure_logging's (secret filter, JSON or colour), not uvicorn's;
        # no access log: it would only repeat what the callers log.
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECS,
        timeout_graceful_shutdown=GRACEFUL_STOP_SECS,
    )


if __name__ == "__main__":
    main()
