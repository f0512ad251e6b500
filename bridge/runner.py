"""The bridge process: an ingress thread per route, the egress and the lost-task sweeper
threads, and a heartbeat.

SIGTERM or SIGINT drains it: every thread stops receiving, finishes the batch it holds
(publish and complete, or send and acknowledge), and the process closes its connections and
exits 0. A thread that dies of an unexpected error stops the whole process with status 1, so
its supervisor restarts it rather than leaving one route silently unserved.
"""

from __future__ import annotations

import signal
import threading

import redis

from bridge.bus import Bus, connect_bus
from bridge.celery_publisher import CeleryPublisher
from bridge.durability import bridge_durability
from bridge.egress import Egress
from bridge.errors import BridgeError
from bridge.ingress import Ingress
from bridge.ledger import Ledger, LostTaskSweeper
from bridge.metrics import HEARTBEAT_SECS, Counters, Heartbeat, celery_queue, new_bridge_id
from bridge.unrouted import UnroutedReporter
from logship import start_log_shipping, stop_log_shipping
from settings import Settings, configure_logging, get_logger
from settings.state_redis import on_broker, state_redis
from tasks.processors import UnknownProcessor, get_processor
from telemetry import configure_tracing

log = get_logger(__name__)


class Bridge:
    """Everything one bridge process runs, built from settings; :meth:`run` until stopped."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        # Deliberately lazy: importing worker builds its module-level Celery app from the
        # environment's settings, which `python -m bridge send/peek` never needs.
        from worker import create_celery

        self.bus = bus
        # Conduit's state (ledger, outbox, heartbeats and counters: STATE_REDIS_URL, else
        # REDIS_URL, maybe a cluster) apart from Celery's broker, which the publisher reaches
        # through kombu and the durability check asks directly.
        self.broker = redis.Redis.from_url(settings.broker_url, decode_responses=True)
        self.client = state_redis(settings, broker=self.broker, decode_responses=True)
        self.state_apart = not on_broker(settings)
        self.publisher = CeleryPublisher(create_celery(settings))
        self.bridge_id = new_bridge_id()
        counters = Counters()
        ledger = Ledger(self.client)
        republish_after_s = (
            settings.bridge_republish_after_s or settings.broker_visibility_timeout_s
        )
        assert republish_after_s is not None  # the settings' validator fills the timeout in
        self.sweeper = LostTaskSweeper(
            ledger,
            self.publisher,
            [route.out_queue for route in settings.routes],
            republish_after_s=float(republish_after_s),
            max_republishes=settings.bridge_max_republishes,
        )
        self.heartbeat = Heartbeat(self.client, self.bridge_id, settings.routes, counters)
        self.unrouted = UnroutedReporter(bus, self.client, settings.routes)
        self.ingresses = [
            Ingress(
                route,
                bus.receiver(route.in_queue),
                self.publisher,
                ledger,
                counters,
                batch_size=settings.bridge_batch_size,
                high_water=settings.bridge_high_water,
                max_idle_s=settings.bridge_max_idle_s,
                celery_queue=celery_queue(route),
                max_message_bytes=settings.bridge_max_message_bytes,
                max_json_depth=settings.bridge_max_json_depth,
            )
            for route in settings.routes
        ]
        self.egress = Egress(
            self.client,
            bus,
            [route.out_queue for route in settings.routes],
            self.bridge_id,
            counters,
            batch_size=settings.bridge_batch_size,
            reclaim_idle_s=settings.bridge_reclaim_idle_s,
            max_message_bytes=settings.bridge_max_message_bytes,
        )
        self.check_durability(local_bus=settings.uses_local_bus)
        for route in settings.routes:
            try:
                get_processor(route.processor)
            except UnknownProcessor as error:
                log.error("route %s: %s; its messages will be dead-lettered", route.in_queue, error)

    def check_durability(self, *, local_bus: bool) -> None:
        """Say at start whether a completed message has its task and ledger record on disk: one
        line per Redis that decides it (none when the local bus shares the broker's Redis; see
        durability.py)."""
        try:
            found = bridge_durability(
                self.broker, self.client, local_bus=local_bus, state_apart=self.state_apart
            )
        except redis.RedisError as error:
            log.warning("could not read the AOF policy of the broker or state Redis: %s", error)
            return
        for durability in found:
            if durability.durable:
                log.info("%s: a completed message's task survives a power loss", durability.detail)
            else:
                log.warning("%s", durability.detail)

    def run(self, stop: threading.Event) -> bool:
        """Run until ``stop`` is set, then drain; False when a thread died of an error."""
        threads = [
            threading.Thread(
                target=ingress.run,
                args=(stop,),
                daemon=True,
                name=f"ingress {ingress.route.in_queue}",
            )
            for ingress in self.ingresses
        ]
        threads.append(
            threading.Thread(target=self.egress.run, args=(stop,), daemon=True, name="egress")
        )
        threads.append(
            threading.Thread(
                target=self.sweeper.run, args=(stop,), daemon=True, name="lost-task sweeper"
            )
        )
        for thread in threads:
            thread.start()
        log.info("bridge %s running %d route(s)", self.bridge_id, len(self.ingresses))
        healthy = True
        while not stop.wait(HEARTBEAT_SECS):
            self.beat()
            if not all(thread.is_alive() for thread in threads):
                log.critical("a bridge thread died; stopping so the supervisor restarts us")
                healthy = False
                stop.set()
        log.info("bridge %s draining", self.bridge_id)
        for thread in threads:
            thread.join()
        try:
            self.heartbeat.stop()
        except redis.RedisError as error:
            log.warning("last heartbeat not written: %s", error)
        return healthy

    def beat(self) -> None:
        try:
            self.heartbeat.beat()
        except redis.RedisError as error:
            log.warning("heartbeat not written: %s", error)
        try:
            self.unrouted.tick()
        except (BridgeError, redis.RedisError) as error:
            log.warning("could not check for unrouted queues: %s", error)

    def close(self) -> None:
        self.publisher.close()
        self.bus.close()
        if self.client is not self.broker:
            self.client.close()
        self.broker.close()


def run_bridge(settings: Settings) -> int:
    """``python -m bridge``: run until SIGTERM/SIGINT; the process exit status."""
    configure_logging(settings)
    configure_tracing("conduit-bridge", settings=settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    bridge = Bridge(settings, connect_bus(settings))
    start_log_shipping(settings)
    try:
        healthy = bridge.run(stop)
    finally:
        bridge.close()
        stop_log_shipping()
    log.info("bridge stopped")
    return 0 if healthy else 1
