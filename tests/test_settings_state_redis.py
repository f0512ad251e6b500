"""Which Redis Conduit's state lives on: STATE_REDIS_URL (or the older QUOTA_REDIS_URL), else the
broker's; a Redis Cluster when the URL or STATE_REDIS_CLUSTER says so."""

from __future__ import annotations

import pytest
import redis
import redis.cluster

from settings import load_settings
from settings.state_redis import on_broker, on_cluster, state_redis


def test_unset_the_state_is_the_brokers_redis_and_shares_its_client(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/0")
    settings = load_settings()
    assert settings.state_url == settings.broker_url == "redis://127.0.0.1:6390/0"
    assert on_broker(settings) and not on_cluster(settings)
    broker = redis.Redis.from_url(settings.broker_url)
    assert state_redis(settings, broker=broker) is broker
    broker.close()


@pytest.mark.parametrize(
    ("env", "url", "cluster"),
    [
        ({"STATE_REDIS_URL": "redis://state:6379/0"}, "redis://state:6379/0", False),
        ({"QUOTA_REDIS_URL": "redis://older:6379/0"}, "redis://older:6379/0", False),
        (
            {"STATE_REDIS_URL": "redis://new:6379/0", "QUOTA_REDIS_URL": "redis://older:6379/0"},
            "redis://new:6379/0",
            False,
        ),
        ({"STATE_REDIS_URL": "redis+cluster://c:7000/0"}, "redis+cluster://c:7000/0", True),
        ({"STATE_REDIS_URL": "redis://c:7000/0", "STATE_REDIS_CLUSTER": "true"}, None, True),
        ({"QUOTA_REDIS_URL": "redis://c:7000/0", "QUOTA_REDIS_CLUSTER": "true"}, None, True),
    ],
)
def test_the_state_url_and_the_cluster_switch_and_their_older_names(monkeypatch, env, url, cluster):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(redis_url="redis://broker:6379/0")
    if url is not None:
        assert settings.state_url == url
    assert on_cluster(settings) is cluster
    assert not on_broker(settings)


def test_a_cluster_url_gives_a_cluster_client_that_finds_every_primary(redis_cluster):
    url = redis_cluster.url.replace("redis://", "redis+cluster://", 1)
    settings = load_settings(state_redis_url=url)
    # health_check_interval is a plain client's option: dropped for the cluster, not an error.
    client = state_redis(settings, decode_responses=True, health_check_interval=30)
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()
