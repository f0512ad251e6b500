"""Tracing set-up, trace context carriers and the fleet's Redis metrics (telemetry/)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from opentelemetry import trace

from settings import load_settings
from telemetry import configure_tracing, context_from_carrier, current_carrier, tracer
from telemetry.fleet_metrics import FleetMetrics
from tests.support.otlp import ReceivedSpan, running_otlp_receiver
from tests.support.processes import REPO_ROOT

PRODUCER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{PRODUCER_TRACE_ID}-b7ad6b7169203331-01"


def run_traced(
    script: str, done: Callable[[list[ReceivedSpan]], bool]
) -> tuple[subprocess.CompletedProcess[str], list[ReceivedSpan]]:
    """Run ``script`` in a child process exporting to a local OTLP receiver (tracing is set up
    once per process for good, so never in the test's own); its output and the spans received."""
    with running_otlp_receiver() as receiver:
        env = {
            "PATH": "/usr/bin:/bin",
            "CONDUIT_ENV_FILE": "/dev/null",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "LOG_FORMAT": "json",
        }
        finished = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr
        return finished, receiver.wait_for(done, 10, "the script's spans")


def test_tracing_off_sets_up_nothing_and_starts_no_thread() -> None:
    threads_before = set(threading.enumerate())
    assert configure_tracing("conduit-test", settings=load_settings()) is False
    assert set(threading.enumerate()) == threads_before
    # The API's default provider: spans are non-recording, so instrumented code pays ~nothing.
    with tracer.start_as_current_span("anything") as span:
        assert not span.is_recording()
    assert type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.trace")
    assert current_carrier() == {}


def test_a_carrier_with_a_traceparent_continues_that_trace() -> None:
    # Service Bus hands application properties back as bytes.
    context = context_from_carrier({b"traceparent": TRACEPARENT.encode(), b"other": b"x"})
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert context_from_carrier({"other": "x"}) is None
    assert context_from_carrier(None) is None


def test_spans_and_log_lines_reach_an_otlp_receiver_from_a_configured_process() -> None:
    script = f"""
import logging
from opentelemetry import propagate
from settings import configure_logging, get_settings
from telemetry import configure_tracing, context_from_carrier, current_carrier, tracer
from telemetry.tracing import shutdown_tracing
configure_logging(get_settings())
assert configure_tracing("conduit-probe", "1.2.3")
parent = context_from_carrier({{"traceparent": "{TRACEPARENT}"}})
with tracer.start_as_current_span("probe.work", context=parent) as span:
    span.set_attribute("probe.size", 3)
    logging.getLogger("probe").warning("inside the span")
    print("CARRIER", current_carrier()["traceparent"], flush=True)
shutdown_tracing()
"""
    done, spans = run_traced(script, lambda s: any(x.name == "probe.work" for x in s))
    (span,) = [s for s in spans if s.name == "probe.work"]
    assert span.service == "conduit-probe"
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_id == "b7ad6b7169203331"
    assert span.attributes["probe.size"] == 3
    # The context handed on names this span; the log line names its trace.
    assert f"-{span.span_id}-" in done.stdout
    line = next(json.loads(x) for x in done.stderr.splitlines() if "inside the span" in x)
    assert line["trace_id"] == span.trace_id
    assert line["span_id"] == span.span_id


def test_fleet_metrics_add_up_in_redis(redis_client) -> None:
    metrics = FleetMetrics(redis_client)
    for _ in range(3):
        metrics.count("conduit_tasks_total", task="ai.send_prompt", state="succeeded")
    metrics.count("conduit_tasks_total", task="ai.send_prompt", state="failed")
    for seconds in (0.02, 0.3, 0.3, 100.0):
        metrics.observe("conduit_upstream_request_duration_seconds", seconds, pool="completion")

    counters = FleetMetrics(redis_client).read_counters()["conduit_tasks_total"]
    assert {(c.labels["state"], c.value) for c in counters} == {("succeeded", 3), ("failed", 1)}
    (histogram,) = FleetMetrics(redis_client).read_histograms()[
        "conduit_upstream_request_duration_seconds"
    ]
    cumulative = dict(histogram.cumulative)
    assert cumulative[0.05] == 1
    assert cumulative[0.5] == 3
    assert cumulative[60.0] == 3
    assert cumulative[float("inf")] == histogram.count == 4
    assert histogram.total == pytest.approx(100.62)


def test_an_undeclared_metric_is_refused(redis_client) -> None:
    with pytest.raises(ValueError, match="declare it"):
        FleetMetrics(redis_client).count("conduit_made_up_total")


def test_a_client_call_outside_traced_work_starts_no_trace() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased
    from opentelemetry.trace import SpanKind

    from telemetry.tracing import NoLoneClientCalls

    sampler = ParentBased(root=NoLoneClientCalls(1.0))
    trace_id = int(PRODUCER_TRACE_ID, 16)
    # The bridge polling Redis with nothing going on: dropped.
    assert sampler.should_sample(None, trace_id, "LLEN", SpanKind.CLIENT).decision == Decision.DROP
    # A message arriving: kept, and so is a Redis call made while handling it.
    assert sampler.should_sample(None, trace_id, "receive", SpanKind.CONSUMER).decision == (
        Decision.RECORD_AND_SAMPLE
    )
    parent = context_from_carrier({"traceparent": TRACEPARENT})
    assert sampler.should_sample(parent, trace_id, "LLEN", SpanKind.CLIENT).decision == (
        Decision.RECORD_AND_SAMPLE
    )


def test_a_voice_turn_is_one_trace_with_its_marks() -> None:
    script = """
import time
from telemetry import configure_tracing
from telemetry.tracing import shutdown_tracing
from voice.latency import LatencySamples, LatencyTool
assert configure_tracing("conduit-web")
tool = LatencyTool("call-7", process=None)
eou = time.monotonic()
tool.begin_turn(1, eou)
for point, after in (("stt_final", 0.05), ("llm_first_token", 0.12), ("tts_first_audio", 0.2),
                     ("first_frame", 0.25)):
    tool.mark(1, point, at=eou + after)
print(tool.end_turn(1))
tool.barge_in(eou + 1.0, eou + 1.04)
shutdown_tracing()
"""
    _, spans = run_traced(script, lambda s: {x.name for x in s} >= {"voice.turn", "voice.barge_in"})
    (turn,) = [s for s in spans if s.name == "voice.turn"]
    (barge_in,) = [s for s in spans if s.name == "voice.barge_in"]
    assert turn.parent_id == "" and turn.trace_id != barge_in.trace_id  # one turn, one trace
    assert turn.events == ("stt_final", "llm_first_token", "tts_first_audio", "first_frame")
    assert turn.attributes["conduit.call_id"] == "call-7"
    assert turn.attributes["conduit.first_frame_ms"] == 250.0
    assert barge_in.attributes["conduit.barge_in_ms"] == 40.0


def test_voice_turns_add_to_the_fleet_histogram(redis_client) -> None:
    from voice import latency

    latency._fleet_metrics.cache_clear()
    tool = latency.LatencyTool("call-8", process=latency.LatencySamples())
    tool.begin_turn(1, 100.0)
    tool.mark(1, "first_frame", at=100.3)
    tool.end_turn(1)
    latency._fleet_metrics.cache_clear()

    samples = FleetMetrics(redis_client).read_histograms()["conduit_voice_turn_seconds"]
    (first_frame,) = [h for h in samples if h.labels == {"stage": "first_frame"}]
    assert first_frame.count == 1
    assert dict(first_frame.cumulative)[0.3] == 1 and dict(first_frame.cumulative)[0.2] == 0
