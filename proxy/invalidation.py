"""CACHE_INVALIDATION=tracking: Redis tells the proxy when a key it cached changes.

Redis server-assisted client-side caching in default (not BCAST) mode: every pooled read
connection runs `CLIENT TRACKING on REDIRECT <id>` as it connects (Backend), so Redis tracks
exactly the keys this proxy read, and sends the invalidations to one dedicated connection
(InvalidationLink) that a background thread reads here. While that link is down nothing can
reach the cache, so the cache is emptied and stores nothing (every read goes to Redis) until
the link is back and every pooled connection tracks again.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from proxy.backend import NOTHING, InvalidationLink
from proxy.cache import ReadThroughCache
from proxy.errors import BackendError

log = logging.getLogger(__name__)

RECEIVE_WAIT_SECONDS = 0.2  # how often the thread looks at its stop flag
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0


class TrackedBackend(Protocol):
    timeout: float
    url: str

    def track_reads_for(self, client_id: int) -> None: ...


class Invalidator:
    """The thread that applies Redis's invalidation messages to the cache."""

    def __init__(self, cache: ReadThroughCache, backend: TrackedBackend) -> None:
        self.cache = cache
        self.backend = backend
        self.connected = False
        self.drops = 0  # times an established link was lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invalidation", daemon=True)
        cache.suspend()  # nothing is cached until invalidations can reach us

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RECEIVE_WAIT_SECONDS + self.backend.timeout + 1)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            link = InvalidationLink(self.backend.url, self.backend.timeout)
            try:
                self._connect(link)
                backoff = FIRST_BACKOFF_SECONDS
                self._apply_messages(link)
            except BackendError as exc:
                self._lost(exc, backoff)
            finally:
                link.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _connect(self, link: InvalidationLink) -> None:
        client_id = link.open()
        self.backend.track_reads_for(client_id)
        self.cache.resume()
        self.connected = True
        log.info("invalidation link up (client id %d): caching with CLIENT TRACKING", client_id)

    def _apply_messages(self, link: InvalidationLink) -> None:
        while not self._stop.is_set():
            keys = link.receive(RECEIVE_WAIT_SECONDS)
            if keys is None:
                self.cache.invalidate_all()  # FLUSHALL / FLUSHDB
            elif keys is not NOTHING:
                self.cache.invalidate(keys)

    def _lost(self, error: BackendError, backoff: float) -> None:
        self.cache.suspend()
        if self.connected:
            self.drops += 1
            log.warning("invalidation link lost (%s): cache emptied, reading through", error)
        else:
            log.warning("invalidation link not up (%s): retrying in %.2f s", error, backoff)
        self.connected = False
