"""``GET /metrics``: Prometheus text that parses, moves with the work, and needs a credential."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from settings import load_settings
from telemetry.fleet_metrics import FleetMetrics
from tests.support.processes import REPO_ROOT
from voice.calls import ACTIVE_CALLS
from web.app import create_app


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


@pytest.fixture
def client(redis_url: str):
    settings = load_settings(auth_disabled=True, tpm_quota=1000, rpm_quota=60)
    with create_app(settings).test_client() as test_client:
        yield test_client


def test_metrics_follow_quota_tasks_and_upstream_calls(client, redis_client) -> None:
    deployment = load_settings().openai_engine
    pool = (("deployment", deployment), ("pool", "completion"))
    assert client.post("/lock", json={"app_id": "a", "token_count": 100}).json["allowed"]

    before = scrape(client)
    assert before[("conduit_quota_locked_tokens", pool)] == 100
    assert before[("conduit_quota_limit_tokens", pool)] == 1000
    assert ("conduit_celery_tasks_in_progress", ()) in before
    assert before[("conduit_voice_calls_active", ())] == 0

    fleet = FleetMetrics(redis_client)
    fleet.count("conduit_tasks_total", task="ai.send_prompt", state="succeeded")
    fleet.count("conduit_upstream_requests_total", pool="completion", status="429")
    fleet.observe("conduit_upstream_request_duration_seconds", 0.3, pool="completion")

    redis_client.zadd(ACTIVE_CALLS, {"call-1": 1.0})

    after = scrape(client)
    assert after[("conduit_voice_calls_active", ())] == 1
    task = (("state", "succeeded"), ("task", "ai.send_prompt"))
    assert after[("conduit_tasks_total", task)] == 1
    throttled = (("pool", "completion"), ("status", "429"))
    assert after[("conduit_upstream_requests_total", throttled)] == 1
    latency = (("pool", "completion"),)
    assert after[("conduit_upstream_request_duration_seconds_count", latency)] == 1
    bucket = "conduit_upstream_request_duration_seconds_bucket"
    assert after[(bucket, (("le", "0.5"), *latency))] == 1
    assert after[(bucket, (("le", "0.25"), *latency))] == 0


def test_metrics_need_a_credential_outside_dev_mode(redis_url: str) -> None:
    settings = load_settings(auth_api_key="scrape-key-0123456789")
    with create_app(settings).test_client() as client:
        assert client.get("/metrics").status_code == 401
        response = client.get("/metrics", headers={"X-API-Key": "scrape-key-0123456789"})
        assert response.status_code == 200


def test_the_grafana_dashboard_asks_only_for_metrics_we_serve(client) -> None:
    """docs/grafana-dashboard.json cannot drift from /metrics: every name it queries is served."""
    response = client.get("/metrics")
    # Every family, even one with no samples yet (no bridge has run here), with its suffixes.
    served = {
        family.name + suffix
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }

    dashboard = json.loads((REPO_ROOT / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"conduit_[a-z_]+", target["expr"])
    }
    assert queried and queried <= served, sorted(queried - served)
