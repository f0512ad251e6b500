"""What moving Conduit's state to a Redis Cluster costs the bridge, against one plain Redis.

    python -m bench.state_cluster        -> bench/results/state_cluster.json

In one run, with Celery's broker on an embedded plain Redis throughout, the same measurements
(bench/bridge_throughput.py's) with the state (local bus, ledger, outbox, bridge stats) first on
that same Redis ("plain"), then on a real three-master Redis Cluster started from the same
``redis-server`` (tests/support/cluster.py; no replicas, no AOF), alternated round by round so
the machine's drift falls on both alike; each figure is the median of its rounds:

- ``ingress_plain_per_s`` / ``ingress_cluster_per_s``: messages moved from the local bus into
  the Celery queue by the bridge's ingress (receive with a lock, validate, record in the ledger,
  publish, complete); ``ingress_cluster_vs_plain`` the second over the first;
- ``e2e_plain_per_s`` / ``e2e_cluster_per_s``: a burst through a real ``celery worker`` and
  ``python -m bridge`` (echo processor) back to the output queue; ``e2e_cluster_vs_plain``;
  ``e2e_plain_p50_ms`` / ``e2e_cluster_p50_ms`` (and p95): the same path at a steady pace.

The cluster's nodes keep no AOF while the plain Redis fsyncs every second, which favours the
cluster a little; what the figures show is the cost of the routing (the cluster client, a
connection per node, the egress's per-slot reads). ``load_avg_before``/``load_avg_after``: the
machine's load averages around the run (a shared machine: read the ratios, not the rates).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import redis

from bench.bridge_throughput import ROUTE, measure_e2e, measure_ingress
from bench.report import median, write_result
from bridge.local_bus import LocalBus
from settings import load_settings
from settings.redis_server import RedisServer
from settings.state_redis import state_redis
from tests.support.cluster import RedisClusterServers

ROUNDS = 3
E2E_ROUNDS = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="per ingress round")
    parser.add_argument("--burst", type=int, default=1000, help="messages in the e2e burst")
    args = parser.parse_args(argv)

    from worker import create_celery

    defaults = load_settings()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-state-") as scratch,
        RedisServer(Path(scratch) / "redis", appendfsync=defaults.redis_fsync_policy) as server,
        RedisClusterServers(Path(scratch) / "cluster") as cluster,
    ):
        cluster_url = cluster.url.replace("redis://", "redis+cluster://", 1)
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "CONDUIT_ROUTES": f"{ROUTE.in_queue}:{ROUTE.processor}:{ROUTE.out_queue}",
            "LOG_LEVEL": "WARNING",
            "CONDUIT_ENV_FILE": os.devnull,
        }
        envs = {"plain": env, "cluster": {**env, "STATE_REDIS_URL": cluster_url}}
        settings = load_settings(redis_url=server.url)
        app = create_celery(settings)
        broker = redis.Redis.from_url(server.url, decode_responses=True)
        state = state_redis(
            load_settings(redis_url=server.url, state_redis_url=cluster_url),
            decode_responses=True,
        )
        buses = {"plain": LocalBus(broker), "cluster": LocalBus(state)}
        ingress: dict[str, list[float]] = {"plain": [], "cluster": []}
        for _ in range(ROUNDS):
            for name, bus in buses.items():
                ingress[name].append(
                    measure_ingress(app, bus, args.messages, settings.bridge_batch_size)
                )
                broker.delete("echo")  # published tasks no worker will take
        e2e: dict[str, list[dict]] = {"plain": [], "cluster": []}
        for _ in range(E2E_ROUNDS):
            for name, bus in buses.items():
                e2e[name].append(measure_e2e(app, bus, envs[name], Path(scratch), args.burst))
        app.close()
        state.close()
        broker.close()

    figures: dict[str, object] = {"rounds": ROUNDS, "e2e_rounds": E2E_ROUNDS}
    for name in ("plain", "cluster"):
        figures[f"ingress_{name}_per_s"] = round(median(ingress[name]), 1)
        for key in ("e2e_per_s", "e2e_p50_ms", "e2e_p95_ms"):
            figures[key.replace("e2e_", f"e2e_{name}_")] = median([run[key] for run in e2e[name]])
    figures["ingress_cluster_vs_plain"] = round(
        median(ingress["cluster"]) / median(ingress["plain"]), 2
    )
    e2e_plain, e2e_cluster = figures["e2e_plain_per_s"], figures["e2e_cluster_per_s"]
    assert isinstance(e2e_plain, float | int) and isinstance(e2e_cluster, float | int)
    figures["e2e_cluster_vs_plain"] = round(e2e_cluster / e2e_plain, 2)
    figures |= {
        "messages_per_round": args.messages,
        "e2e_burst_messages": args.burst,
        "cores": os.cpu_count(),
        "load_avg_before": [round(load, 2) for load in load_before],
        "load_avg_after": [round(load, 2) for load in os.getloadavg()],
    }
    write_result(
        "state_cluster",
        figures,
        f"ingress {figures['ingress_cluster_per_s']}/s on a cluster vs "
        f"{figures['ingress_plain_per_s']}/s plain ({figures['ingress_cluster_vs_plain']}); e2e "
        f"{e2e_cluster}/s vs {e2e_plain}/s ({figures['e2e_cluster_vs_plain']}), p50 "
        f"{figures['e2e_cluster_p50_ms']} vs {figures['e2e_plain_p50_ms']} ms",
    )


if __name__ == "__main__":
    main()
