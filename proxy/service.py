"""The composition root: builds every part of one worker, starts them and stops them.

Only the Gunicorn worker (proxy/worker.py) imports this module; it owns the lifecycle:
build() when it loads the app, start() before it counts as booted, stop_accepting() on
SIGTERM and stop() once HTTP has drained. Everything else receives its parts ready-made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from flask import Flask

from proxy.access import Access
from proxy.backend import MAX_BATCH_KEYS, Backend
from proxy.cache import ReadThroughCache
from proxy.config import Settings
from proxy.failover import MasterWatch
from proxy.http import LoopHits, create_app
from proxy.invalidation import Invalidator
from proxy.metrics import ConnectionCounts, Metrics
from proxy.resp.server import RespServer
from proxy.shards import ClusterTracking

log = logging.getLogger(__name__)


@dataclass
class Service:
    """The parts one worker shares between its HTTP and RESP front ends."""

    settings: Settings
    backend: Backend
    cache: ReadThroughCache
    metrics: Metrics
    http_app: Flask
    loop_hits: LoopHits
    access: Access
    invalidator: Invalidator | ClusterTracking | None = None
    watch: MasterWatch | None = None
    resp: RespServer | None = None

    @classmethod
    def build(cls, settings: Settings) -> Service:
        """Every part, wired; nothing runs yet."""
        tracking = settings.cache_invalidation == "tracking"
        backend = Backend(
            settings.redis_url,
            settings.redis_timeout,
            settings.redis_sentinels,
            settings.redis_sentinel_master,
            settings.redis_cluster,
        )
        cache = ReadThroughCache(
            settings.cache_maxsize,
            settings.cache_ttl,
            backend.get,
            maxbytes=settings.cache_maxbytes,
            max_item_bytes=settings.cache_max_item_bytes,
            negative_ttl=settings.cache_negative_ttl,
            stale_if_error=settings.cache_stale_if_error,
            load_many=backend.get_many,
            batch_size=MAX_BATCH_KEYS,
        )
        invalidator = _invalidator(cache, backend, settings) if tracking else None
        access = Access(settings.proxy_password, settings.key_patterns, settings.protected)
        metrics = Metrics(cache, invalidator, backend.answers, access)
        http_app = create_app(
            cache,
            requests=metrics.requests["http"],
            check_ready=partial(readiness, backend, invalidator),
            exposition=metrics.exposition,
            access_log=settings.access_log,
            access=access,
        )
        loop_hits = LoopHits(cache, metrics.requests["http"], settings.access_log, access)
        watch = None
        if settings.sentinel:
            listeners = []
            if isinstance(invalidator, Invalidator):
                listeners.append(invalidator.master_moved)
            watch = MasterWatch(backend, listeners)
        parts = (backend, cache, metrics, http_app, loop_hits, access)
        return cls(settings, *parts, invalidator, watch)

    def start(self, http: ConnectionCounts) -> None:
        """Start the invalidation link and the RESP front end; watch both front ends' clients.
        Raises OSError if RESP_PORT cannot be bound."""
        log.info("redis-cache-proxy starting: %s", self.settings.describe())
        if self.settings.open_to_all:
            log.warning(
                "PROXY_HOST=%s, no PROXY_PASSWORD and PROTECTED_MODE=no: anyone who can reach "
                "the proxy reads every key (docs/security.md)",
                self.settings.proxy_host,
            )
        self.metrics.watch_connections("http", http)
        if self.invalidator is not None:
            self.invalidator.start()
        if self.watch is not None:
            self.watch.start()
        if self.settings.resp_port:
            self.resp = RespServer(
                self.cache,
                host=self.settings.proxy_host,
                port=self.settings.resp_port,
                max_parallel=self.settings.max_parallel,
                max_connections=self.settings.max_connections,
                stats=self.metrics.requests["resp"],
                request_timeout=self.settings.keepalive_timeout,
                idle_timeout=self.settings.resp_idle_timeout,
                access=self.access,
                tls=self.settings.tls_context(),
            ).start()
            self.metrics.watch_connections("resp", self.resp)

    def stop_accepting(self) -> None:
        """On SIGTERM: no new RESP clients (Gunicorn stops HTTP accepting itself)."""
        if self.resp is not None:
            self.resp.stop_accepting()

    def stop(self, timeout: float) -> None:
        """After HTTP has drained: let RESP requests finish, then close RESP and Redis."""
        if self.resp is not None:
            self.resp.stop(timeout)
        if self.watch is not None:
            self.watch.stop()
        if self.invalidator is not None:
            self.invalidator.stop()
        self.backend.close()
        log.info("redis-cache-proxy stopped")


def _invalidator(
    cache: ReadThroughCache, backend: Backend, settings: Settings
) -> Invalidator | ClusterTracking:
    """The link to the master, or (REDIS_CLUSTER) a link per primary."""
    if settings.redis_cluster:
        return ClusterTracking(cache, backend)
    return Invalidator(cache, backend)


def readiness(
    backend: Backend, invalidator: Invalidator | ClusterTracking | None
) -> dict[str, str]:
    """/readyz: raises the typed error if Redis does not answer PING. Ready otherwise, even
    while the invalidation link is down (every read then goes to Redis and is right, only
    slower); the answer says so."""
    backend.ping()
    if invalidator is None:
        return {}
    return {"invalidation": "up" if invalidator.connected else "down"}
