"""The read-through cache: an LRU + TTL map whose misses fetch from the backing Redis.

Locking, in short (the README's "The cache and its lock" has the long form):

* cachetools maps are not thread-safe, and even a read reorders the LRU list, so every map
  operation runs under `self._lock`.
* `lookup()` takes the lock and indexes the map. On a miss `TTLCache.__getitem__` calls
  `__missing__` *with the lock still held*; `__missing__` releases it for the Redis round
  trip and takes it back before touching the map again. Hits never wait behind a miss.
* Concurrent misses on one key share a single fetch (a `_Flight`): the first thread (the
  leader) fetches, the others wait on the flight's event and get the same value or error.
* Only `lookup()` fetches. `cached()` and `cached_run()` (the RESP loop's hits) index the map
  too, but there `__missing__` answers None.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cachetools import TTLCache

from proxy.errors import BackendError

Fetch = Callable[[bytes], "bytes | None"]


class _Flight:
    """One fetch in progress, shared by every miss on its key until it completes."""

    __slots__ = ("_done", "_error", "_value", "stale")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: bytes | None = None
        self._error: BaseException | None = None
        self.stale = False  # invalidated while fetching: answer the waiters, but do not store

    def finish(self, value: bytes | None, error: BaseException | None) -> None:
        self._value, self._error = value, error
        self._done.set()

    def result(self) -> bytes | None:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class _Fetched:
    """What __missing__ hands back through TTLCache.__getitem__: a value that was not a hit."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | None) -> None:
        self.value = value


@dataclass
class CacheStats:
    """Counters since start, updated under the cache lock."""

    lookups: int = 0
    fetches: int = 0  # misses that went to Redis
    coalesced: int = 0  # misses that waited for another thread's fetch of the same key
    evictions: int = 0  # entries dropped to make room (least recently read first)
    expirations: int = 0  # entries dropped because their TTL ran out
    fetch_errors: Counter[str] = field(default_factory=Counter)  # by BackendError.kind
    invalidations: int = 0  # keys Redis said changed (CACHE_INVALIDATION=tracking)
    flushes: int = 0  # "everything changed": FLUSHALL/FLUSHDB, or the invalidation link lost


class ReadThroughCache(TTLCache):
    """LRU + TTL cache of Redis strings: capacity in keys, TTL from insertion, never extended."""

    def __init__(
        self, maxsize: int, ttl: float, fetch: Fetch, timer: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._fetch = fetch
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight] = {}
        self.stats = CacheStats()
        self._may_fetch = False  # set by lookup() around its own indexing, under the lock
        self._storing = True  # False while invalidations cannot reach us (see suspend())

    def lookup(self, key: bytes) -> tuple[bytes | None, bool]:
        """The value under `key` (None if Redis has none), and whether it was a cache hit."""
        with self._lock:
            self.stats.lookups += 1
            self._may_fetch = True  # for this __getitem__ only: __missing__ clears it
            try:
                result = self[key]
            finally:
                self._may_fetch = False
        if isinstance(result, _Fetched):
            return result.value, False
        return result, True

    def cached(self, key: bytes) -> bytes | None:
        """The value if `key` is cached and fresh (a hit: its recency is refreshed), else None.

        Never fetches, so an event loop can call it; on None, call lookup() off the loop.
        """
        # cached_run() for one key, without its list: every unpipelined RESP GET comes here,
        # and the list and loop were a quarter of this call's cost (measured, ~0.25 µs).
        with self._lock:
            value = self[key]  # __missing__ answers None: only lookup() lets it fetch
            if value is not None:
                self.stats.lookups += 1
        return value

    def cached_run(self, keys: list[bytes]) -> list[bytes]:
        """The values of the leading `keys` that are hits, up to the first that is not.

        As cached(), under one lock acquisition: a pipelined run of GETs costs one.
        """
        values: list[bytes] = []
        with self._lock:
            for key in keys:
                value = self[key]  # as in cached(): __missing__ answers None
                if value is None:
                    break
                values.append(value)
            self.stats.lookups += len(values)
        return values

    def invalidate(self, keys: list[bytes]) -> None:
        """Forget `keys` (they changed in Redis), including values being fetched right now."""
        with self._lock:
            for key in keys:
                self.stats.invalidations += 1
                flight = self._flights.get(key)
                if flight is not None:
                    flight.stale = True
                with contextlib.suppress(KeyError):  # absent, or expired (then removed anyway)
                    del self[key]

    def invalidate_all(self) -> None:
        """Forget everything (the keyspace was flushed)."""
        with self._lock:
            self._forget_everything()

    def suspend(self) -> None:
        """Invalidations can no longer reach us: forget everything and stop storing, so every
        read goes to Redis until resume()."""
        with self._lock:
            self._storing = False
            self._forget_everything()

    def resume(self) -> None:
        """Invalidations flow again: store fetched values again. Fetches already in progress
        started before tracking applied to their connection, so they are not stored."""
        with self._lock:
            self._storing = True
            for flight in self._flights.values():
                flight.stale = True

    def _forget_everything(self) -> None:
        self.stats.flushes += 1
        self.clear()
        for flight in self._flights.values():
            flight.stale = True

    def size(self) -> int:
        """Number of live (unexpired) entries."""
        with self._lock:
            return len(self)

    def __missing__(self, key: bytes) -> _Fetched | None:
        # Entered from __getitem__ with self._lock held. Only lookup() may fetch; any other
        # indexing (cached(), cached_run()) is a peek that finds nothing.
        if not self._may_fetch:
            return None
        # Cleared before the lock is released below, so peeks by other threads meanwhile
        # still find nothing rather than fetching.
        self._may_fetch = False
        flight = self._flights.get(key)
        if flight is not None:
            self.stats.coalesced += 1
            with self._unlocked():
                return _Fetched(flight.result())
        flight = self._flights[key] = _Flight()
        self.stats.fetches += 1
        try:
            with self._unlocked():
                value = self._fetch(key)
            # Absent keys are not cached (a later SET shows at once); nor is a value that was
            # invalidated while it was being fetched.
            if value is not None and self._storing and not flight.stale:
                self[key] = value  # a fresh TTL, counted from now
        except BaseException as exc:
            # Waiters get this same error; nothing is stored, so the next miss asks again.
            if isinstance(exc, BackendError):
                self.stats.fetch_errors[exc.kind] += 1
            flight.finish(None, exc)
            raise
        else:
            flight.finish(value, None)
            return _Fetched(value)
        finally:
            del self._flights[key]

    def popitem(self) -> tuple[bytes, bytes]:
        """Evict the least recently read entry (cachetools calls this when full)."""
        item = super().popitem()
        self.stats.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[bytes, bytes]]:
        """Drop expired entries (cachetools calls this before inserting and when sizing)."""
        expired = super().expire(time)
        self.stats.expirations += len(expired)
        return expired

    @contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Release the map lock for a slow wait, and always take it back."""
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
