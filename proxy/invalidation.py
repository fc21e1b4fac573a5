"""CACHE_INVALIDATION=tracking: Redis tells the proxy when a key it cached changes.

Redis tracks on behalf of a *connection*, and forgets silently when that connection closes
(redis/redis issues 11767 and 13082). So the proxy's tracking state lives on exactly one
connection, the one a background thread here listens on (InvalidationLink): it runs
`CLIENT TRACKING on REDIRECT <its own id> BCAST`, so Redis reports every key that changes,
whichever connection read it, and the pooled read connections track nothing (Redis's idle
`timeout`, `CLIENT KILL` or a pool recycling them loses nothing). The contract follows:

* while the link is up, every write after it subscribed reaches the cache: the key is dropped,
  and a fetch of it in flight is answered but not stored;
* the link closing (a kill, a Redis restart, a network error) or going silent (no answer to
  its idle PING within REDIS_TIMEOUT) suspends the cache before anything more is stored: what
  it holds stops being fresh (it answers only an outage, with CACHE_STALE_IF_ERROR; without,
  it is dropped), reads go to Redis, fetches in flight are not stored;
* once a new link has subscribed, the cache stores again, but not what fetches begun before
  that return.

So a value is answered from the cache only while Redis would have reported its change, and
for a silent partition at most IDLE_PING_SECONDS + REDIS_TIMEOUT after it began. The price of
BCAST: Redis reports writes to keys the proxy never read too, each costing the thread a
dictionary miss.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import redis

from proxy.config import host_port
from proxy.errors import BackendError, BackendUnavailable
from proxy.link import NOTHING, InvalidationLink

log = logging.getLogger(__name__)

RECEIVE_WAIT_SECONDS = 0.2  # how often the thread looks at its stop and moved flags
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0


LINK_NAME = "redis-cache-proxy-invalidation"  # the link's name in CLIENT LIST


class TrackedBackend(Protocol):
    """What the link needs of the backend: connections to the master (or to a node)."""

    timeout: float

    def pool(
        self, client_name: str, node: tuple[str, int] | None = None
    ) -> redis.ConnectionPool: ...


class Coherent(Protocol):
    """What the link does to the cache (proxy/cache.py's ReadThroughCache, or one cluster
    primary's share of it: proxy/shards.py)."""

    def suspend(self) -> None: ...
    def resume(self) -> None: ...
    def invalidate(self, keys: list[bytes]) -> None: ...
    def invalidate_all(self) -> None: ...


class Invalidator:
    """The thread that applies Redis's invalidation messages to the cache: those of the
    master, or of one cluster primary (`node`)."""

    def __init__(
        self, cache: Coherent, backend: TrackedBackend, node: tuple[str, int] | None = None
    ) -> None:
        self.cache = cache
        self.backend = backend
        self.node = node
        self.connected = False
        self.drops = 0  # times an established link was lost
        self._moved = threading.Event()  # the master moved: leave it for the new one
        self._stop = threading.Event()
        name = "invalidation" if node is None else f"invalidation-{host_port(*node)}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        cache.suspend()  # nothing is cached until invalidations can reach us

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RECEIVE_WAIT_SECONDS + self.backend.timeout + 1)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stop.is_set():
            link = InvalidationLink(self.backend.pool(LINK_NAME, self.node), self.backend.timeout)
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

    def master_moved(self) -> None:
        """Sentinel named another master (proxy/failover.py): it has none of our tracking
        state, so the link moves to it and the cache is suspended until it is there."""
        self._moved.set()

    def _connect(self, link: InvalidationLink) -> None:
        self._moved.clear()  # a link opened from now on asks the Sentinels afresh
        client_id = link.open()
        self.cache.resume()
        self.connected = True
        log.info("invalidation link up (%s, client id %d): caching", self._where(), client_id)

    def _apply_messages(self, link: InvalidationLink) -> None:
        while not self._stop.is_set():
            if self._moved.is_set():
                raise BackendUnavailable("the master moved")
            keys = link.receive(RECEIVE_WAIT_SECONDS)
            if keys is None:
                self.cache.invalidate_all()  # FLUSHALL / FLUSHDB
            elif keys is not NOTHING:
                self.cache.invalidate(keys)

    def _lost(self, error: BackendError, backoff: float) -> None:
        self.cache.suspend()
        if self.connected:
            self.drops += 1
            log.warning(
                "invalidation link lost (%s: %s): cache suspended, reading through",
                self._where(),
                error,
            )
        else:
            log.warning(
                "invalidation link not up (%s: %s): retrying in %.2f s",
                self._where(),
                error,
                backoff,
            )
        self.connected = False

    def _where(self) -> str:
        return "the master" if self.node is None else f"primary {host_port(*self.node)}"
