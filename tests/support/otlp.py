"""A local OTLP/HTTP trace receiver: what the processes under test export, decoded for asserts.

Real protobuf over real HTTP on 127.0.0.1, as a collector would receive it, so a test sees the
spans every process actually sent (service name, trace and parent ids, attributes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(hash=False)
    events: tuple[str, ...] = ()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """Keeps every span it receives, decoded; or, with ``decode=False`` (a benchmark, where
    decoding would take the cores being measured, as a collector on another host would not),
    only counts the requests and bytes."""

    def __init__(self, decode: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests += 1
                    receiver.bytes += len(body)
                if decode:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=tuple(event.name for event in span.events),
                        )
                    )
        with self._lock:
            self.spans.extend(spans)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(
        self, check: Callable[[list[ReceivedSpan]], bool], timeout: float, what: str
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.snapshot()
            if check(spans):
                return spans
            time.sleep(0.1)
        names = sorted({(s.service, s.name) for s in self.snapshot()})
        raise AssertionError(f"timed out waiting for {what}; received spans: {names}")


@contextmanager
def running_otlp_receiver(decode: bool = True) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(decode)
    thread = threading.Thread(target=receiver._server.serve_forever, name="otlp-receiver")
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
        thread.join()
