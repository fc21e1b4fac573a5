"""One worker's parts besides Flask: backend, cache, metrics, RESP server, and their lifecycle.

create_app() builds it; gunicorn.conf.py's post_worker_init starts it inside the worker; the
worker stops RESP accepting on SIGTERM and shuts everything down when its run loop ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from proxy.backend import Backend
from proxy.cache import ReadThroughCache
from proxy.config import Settings
from proxy.invalidation import Invalidator
from proxy.metrics import ConnectionCounts, Metrics
from proxy.resp import RespServer, start_resp_server

log = logging.getLogger(__name__)


class BackingStore(Protocol):
    """What the proxy needs of the backing Redis (Backend; a fake in unit tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Runtime:
    """The parts one worker shares between its HTTP and RESP front ends."""

    settings: Settings
    backend: BackingStore
    cache: ReadThroughCache
    metrics: Metrics
    invalidator: Invalidator | None = None
    resp: RespServer | None = None

    @classmethod
    def build(cls, settings: Settings, backend: BackingStore | None = None) -> Runtime:
        tracking = settings.cache_invalidation == "tracking"
        backend = backend or Backend(settings.redis_url, settings.redis_timeout, tracking)
        cache = ReadThroughCache(settings.cache_maxsize, settings.cache_ttl, backend.get)
        invalidator = Invalidator(cache, backend) if tracking else None  # type: ignore[arg-type]
        metrics = Metrics(cache, invalidator)
        return cls(settings, backend, cache, metrics, invalidator)

    def start(self, http: ConnectionCounts) -> None:
        """Inside the worker: watch the HTTP front end and start the RESP one."""
        log.info("redis-cache-proxy starting: %s", self.settings.describe())
        self.metrics.watch_connections("http", http)
        if self.invalidator is not None:
            self.invalidator.start()
        self.resp = start_resp_server(self.settings, self.cache, self.metrics.requests["resp"])
        if self.resp is not None:
            self.metrics.watch_connections("resp", self.resp)

    def stop_accepting(self) -> None:
        """On SIGTERM: no new RESP clients (Gunicorn stops HTTP accepting itself)."""
        if self.resp is not None:
            self.resp.stop_accepting()

    def shutdown(self, timeout: float) -> None:
        """After HTTP has drained: let RESP requests finish, then close RESP and Redis."""
        if self.resp is not None:
            self.resp.stop(timeout)
        if self.invalidator is not None:
            self.invalidator.stop()
        self.backend.close()
        log.info("redis-cache-proxy stopped")
