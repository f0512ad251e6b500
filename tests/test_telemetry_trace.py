"""One message is one trace: producer → bridge → worker → Azure OpenAI → outbox → output queue.

Real processes (bridge, Celery worker, the OpenAI emulator) export their spans over OTLP/HTTP
to a receiver this test runs; the producer's ``traceparent`` on the Service Bus message is
continued, and the result sent to the output queue carries the trace onward.
"""

from __future__ import annotations

import json
import socket

import pytest

from bridge.bus import OutgoingMessage
from bridge.local_bus import LocalBus
from bridge.metrics import HEARTBEATS_KEY
from telemetry.fleet_metrics import FleetMetrics
from tests.support.otlp import ReceivedSpan, running_otlp_receiver
from tests.support.processes import ManagedProcess, python_args

pytestmark = pytest.mark.slow

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
RESULT_TIMEOUT_SECS = 120.0


def ancestors(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[str]:
    """The span ids above ``span``, nearest first, as far as the received spans go."""
    parents = {s.span_id: s.parent_id for s in spans}
    chain, current = [], span.parent_id
    while current in parents:
        chain.append(current)
        current = parents[current]
    return [*chain, current]


def by_name(spans: list[ReceivedSpan], prefix: str) -> ReceivedSpan:
    matches = [span for span in spans if span.name.startswith(prefix)]
    assert len(matches) == 1, f"{prefix}: {[(s.service, s.name) for s in spans]}"
    return matches[0]


def test_one_message_is_one_trace_across_the_processes(
    start_emulator, start_worker, conduit_env, redis_client, tmp_path
) -> None:
    emulator = start_emulator()
    with running_otlp_receiver() as receiver:
        env = {
            **conduit_env,
            **emulator.client_env(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            # Export within a tenth of a second instead of five: the test waits for the spans.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "BRIDGE_MAX_IDLE_SECONDS": "1",
            # Redis's own spans too (off by default for their cost).
            "TRACING_REDIS": "true",
        }
        start_worker(**env)
        bridge = ManagedProcess(
            python_args("-m", "bridge"), env, tmp_path / "bridge.log", name="bridge"
        )
        bridge.ready = lambda: (
            redis_client.zscore(HEARTBEATS_KEY, f"{socket.gethostname()}:{bridge.pid}") is not None
        )
        bridge.start()
        try:
            bus = LocalBus(redis_client)
            form = {"id": "f-1", "language": "en", "text": "The delivery was quick and kind."}
            bus.send(
                "form_iq",
                [
                    OutgoingMessage(
                        body=json.dumps(form),
                        message_id="traced-1",
                        application_properties={
                            "traceparent": f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"
                        },
                    )
                ],
            )
            bridge.wait_until(
                lambda: bool(bus.peek("form_oq", 1)), RESULT_TIMEOUT_SECS, "the result"
            )
            [result] = bus.peek("form_oq", 1)
            expected = (
                "bridge.receive",
                "apply_async/",
                "run/",
                "quota.acquire",
                "openai.completion",
                "outbox.write",
                "bridge.send",
            )
            spans = receiver.wait_for(
                lambda s: all(any(x.name.startswith(name) for x in s) for name in expected),
                RESULT_TIMEOUT_SECS,
                "every process's spans",
            )
        finally:
            bridge.stop()

    trace = [span for span in spans if span.trace_id == PRODUCER_TRACE]
    receive = by_name(trace, "bridge.receive form_iq")
    publish = by_name(trace, "apply_async/")
    run = by_name(trace, "run/")
    write = by_name(trace, "outbox.write")
    send = by_name(trace, "bridge.send form_oq")

    assert receive.parent_id == PRODUCER_SPAN
    assert (receive.service, publish.service, send.service) == ("conduit-bridge",) * 3
    assert (run.service, write.service) == ("conduit-worker",) * 2
    assert publish.parent_id == receive.span_id
    assert run.parent_id == publish.span_id
    assert run.span_id in ancestors(write, trace)
    # Inside the task: the quota decision, then the request to Azure OpenAI with its tokens.
    acquire = by_name(trace, "quota.acquire")
    upstream = by_name(trace, "openai.completion")
    assert run.span_id in ancestors(acquire, trace) and run.span_id in ancestors(upstream, trace)
    assert acquire.attributes["conduit.allowed"] is True
    assert acquire.attributes["conduit.lane"] == "batch"
    assert upstream.attributes["conduit.deployment"] == acquire.attributes["conduit.deployment"]
    assert upstream.attributes["http.response.status_code"] == "200"
    assert upstream.attributes["gen_ai.usage.output_tokens"] > 0
    # With TRACING_REDIS, the outbox's script call is a Redis span under the write.
    assert any(s.parent_id == write.span_id and s.name.startswith("EVALSHA") for s in trace)
    assert send.parent_id == write.span_id
    # The result on the output queue carries the trace on, from the send span.
    assert result.application_properties["traceparent"] == f"00-{PRODUCER_TRACE}-{send.span_id}-01"
    assert receive.attributes["messaging.message.id"] == "traced-1"

    # The same work moved the fleet's metrics, which /metrics reads (tests/test_web_metrics.py).
    fleet = FleetMetrics(redis_client)
    counters = fleet.read_counters()
    upstream_statuses = {c.labels["status"] for c in counters["conduit_upstream_requests_total"]}
    assert upstream_statuses == {"200"}
    finished = {(c.labels["task"], c.labels["state"]) for c in counters["conduit_tasks_total"]}
    assert ("processors.feedback", "succeeded") in finished
