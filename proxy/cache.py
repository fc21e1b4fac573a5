"""The read-through cache: an LRU + TTL map of Redis strings, and the policy that fills it.

Two parts, kept apart as cachetools keeps its maps apart from its `cached()` decorator:

* `Entries` is the map: a `TTLCache` (capacity in keys, TTL counted from insertion, LRU by
  reads) that also holds a byte budget (keys and values), and for an entry whose key Redis
  will expire, that deadline: it is never served past it. It counts its evictions and
  expirations. Indexing a key it does not hold raises KeyError, as every cachetools map
  does, so reading the map can never reach Redis.
* `ReadThroughCache` owns the map, the one lock around it and the fetches in progress.
  `peek()` and `peek_run()` index the map under the lock and do nothing else: the event loops
  call them. `lookup()` indexes it too and, on a miss, joins or leads a fetch of the key with
  the lock released, so hits never wait behind a miss and concurrent misses on one key share
  a single fetch (a `_Flight`) and its value or error.

docs/architecture.md ("The cache and its lock") says why the fetch is not in `__missing__`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cachetools import Cache, TTLCache

from proxy.errors import BackendError


class Fetched(NamedTuple):
    """One key as read from Redis: its value (None if absent) and, if Redis will expire it,
    the seconds it has left (its PTTL, read in the same round trip)."""

    value: bytes | None
    ttl: float | None = None


# Reads one key from Redis: its value and seconds to live, as Fetched (or a plain pair).
Load = Callable[[bytes], tuple["bytes | None", "float | None"]]


@dataclass
class CacheStats:
    """Counters since start, updated under the cache lock."""

    lookups: int = 0  # reads answered: hits, and lookups that went on to Redis
    fetches: int = 0  # misses that went to Redis
    coalesced: int = 0  # misses that waited for another thread's fetch of the same key
    evictions: int = 0  # entries dropped to make room (least recently read first)
    too_large: int = 0  # values fetched but not stored: larger than CACHE_MAX_ITEM_BYTES
    expirations: int = 0  # entries dropped because their TTL ran out
    fetch_errors: Counter[str] = field(default_factory=Counter)  # by BackendError.kind
    invalidations: int = 0  # keys Redis said changed (CACHE_INVALIDATION=tracking)
    negative_hits: int = 0  # reads of a key remembered as absent (CACHE_NEGATIVE_TTL)
    flushes: int = 0  # "everything changed": FLUSHALL/FLUSHDB, or the invalidation link lost


class Read(NamedTuple):
    """What one lookup found: the value (None if Redis has none) and whether it was cached."""

    value: bytes | None
    hit: bool

    @property
    def outcome(self) -> str:
        """The label metrics count this read under."""
        if self.value is None:
            return "not_found"
        return "hit" if self.hit else "miss"


class _Absent(bytes):
    """The type of ABSENT: told apart from a real (possibly empty) value by identity."""


# What the map holds for a key Redis did not have (CACHE_NEGATIVE_TTL): readers that may not
# answer "absent" themselves (the event loops' peeks) treat it as not cached.
ABSENT = _Absent()


class Entries(TTLCache[bytes, bytes]):
    """The map: LRU + TTL, capacity in keys and in bytes, TTL from insertion and never
    extended by reads, and a shorter deadline for an entry Redis will expire sooner."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        timer: Callable[[], float],
        stats: CacheStats,
        maxbytes: int | None = None,
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self.stats = stats
        self.maxbytes = maxbytes  # keys and values held at most (None: keys alone bound it)
        self.bytes = 0  # keys and values held now
        self.absent = 0  # ABSENT entries held now
        self.deadlines: dict[bytes, float] = {}  # keys Redis expires before the TTL would

    def past_deadline(self, key: bytes) -> bool:
        """True (and the entry dropped, as expired) if Redis has expired `key` by now. The
        readers ask only while some entry has a deadline (`deadlines` is not empty), so the
        common read pays one truth test, not a call."""
        deadline = self.deadlines.get(key)
        if deadline is None or self.timer() < deadline:
            return False
        del self[key]
        self.stats.expirations += 1
        return True

    def store(self, key: bytes, value: bytes, deadline: float | None) -> None:
        """Hold `value` for CACHE_TTL, or only until `deadline` (the timer's clock) when Redis
        expires it sooner; least recently read entries go first until both budgets hold."""
        if key in self:
            del self[key]
        size = len(key) + len(value)
        while self.maxbytes is not None and self.bytes + size > self.maxbytes and len(self):
            self.popitem()
        self[key] = value
        self.bytes += size
        self.absent += value is ABSENT
        if deadline is not None:
            self.deadlines[key] = deadline

    def __delitem__(self, key: bytes) -> None:
        self._forget(key, Cache.__getitem__(self, key))
        super().__delitem__(key)

    def _forget(self, key: bytes, value: bytes) -> None:
        self.bytes -= len(key) + len(value)
        self.absent -= value is ABSENT
        self.deadlines.pop(key, None)

    def popitem(self) -> tuple[bytes, bytes]:
        """Evict the least recently read entry (cachetools calls this when full)."""
        item = super().popitem()
        self.stats.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[bytes, bytes]]:
        """Drop expired entries (cachetools calls this before inserting and when sizing)."""
        expired = super().expire(time)
        for key, value in expired:
            self._forget(key, value)
        self.stats.expirations += len(expired)
        return expired

    def clear(self) -> None:
        super().clear()
        self.bytes = self.absent = 0
        self.deadlines.clear()


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


class ReadThroughCache:
    """The cache both front ends read: peeks on their event loops, lookups off them."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        load: Load,
        timer: Callable[[], float] = time.monotonic,
        *,
        maxbytes: int | None = None,
        max_item_bytes: int | None = None,
        negative_ttl: float = 0.0,
    ) -> None:
        self.stats = CacheStats()
        self._entries = Entries(maxsize, ttl, timer, self.stats, maxbytes)
        self._max_item_bytes = max_item_bytes  # a larger key + value is served, not stored
        self._negative_ttl = negative_ttl  # how long a key Redis lacks is remembered (0: not)
        self._timer = timer
        self._load = load
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight] = {}
        self._storing = True  # False while invalidations cannot reach us (see suspend())

    @property
    def capacity(self) -> int:
        """CACHE_MAXSIZE: the most keys held at once."""
        return int(self._entries.maxsize)

    @property
    def byte_capacity(self) -> int | None:
        """CACHE_MAXBYTES: the most key and value bytes held at once."""
        return self._entries.maxbytes

    def held_bytes(self) -> int:
        """Key and value bytes held now."""
        with self._lock:
            return self._entries.bytes

    def peek(self, key: bytes) -> bytes | None:
        """The value if `key` is cached and fresh (a hit: it becomes the most recently read),
        else None. Never fetches, so an event loop may call it."""
        entries = self._entries
        with self._lock:
            try:
                value = entries[key]
            except KeyError:
                return None
            if value is ABSENT or (entries.deadlines and entries.past_deadline(key)):
                return None
            self.stats.lookups += 1
        return value

    def peek_run(self, keys: list[bytes]) -> list[bytes]:
        """The values of the leading `keys` that are hits, up to the first that is not; as
        peek(), under one lock acquisition for the whole run (a pipeline of GETs)."""
        values: list[bytes] = []
        entries = self._entries
        with self._lock:
            try:
                for key in keys:
                    values.append(entries[key])
            except KeyError:
                pass
            if entries.deadlines or entries.absent:  # the run ends at the first of those
                for index, key in enumerate(keys[: len(values)]):
                    if values[index] is ABSENT or entries.past_deadline(key):
                        del values[index:]
                        break
            self.stats.lookups += len(values)
        return values

    def lookup(self, key: bytes) -> Read:
        """The value under `key`, from the map or else from Redis (this may block on Redis).

        The map is indexed again even after a peek missed: another request may have stored
        the key since, and that is what lets concurrent misses share one fetch.
        """
        entries = self._entries
        with self._lock:
            self.stats.lookups += 1
            try:
                value = entries[key]
            except KeyError:
                pass
            else:
                if not (entries.deadlines and entries.past_deadline(key)):
                    if value is ABSENT:
                        self.stats.negative_hits += 1
                        return Read(None, True)
                    return Read(value, True)
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                self.stats.fetches += 1
                leader = True
            else:
                self.stats.coalesced += 1
                leader = False
        if leader:
            return Read(self._fetch(key, flight), False)
        return Read(flight.result(), False)

    def _fetch(self, key: bytes, flight: _Flight) -> bytes | None:
        """Load `key` from Redis for every waiter of `flight`, and store it unless it went
        stale meanwhile. A key Redis lacks is remembered as absent only for CACHE_NEGATIVE_TTL
        (off by default), so a later SET shows at once or within that."""
        started = self._timer()  # Redis's TTL runs from no earlier than this
        try:
            value, ttl = self._load(key)
        except BaseException as exc:
            # Waiters get this same error; nothing is stored, so the next miss asks again.
            with self._lock:
                del self._flights[key]
                if isinstance(exc, BackendError):
                    self.stats.fetch_errors[exc.kind] += 1
            flight.finish(None, exc)
            raise
        with self._lock:
            del self._flights[key]
            if self._storing and not flight.stale:
                if value is not None:
                    self._store(key, value, None if ttl is None else started + ttl)
                elif self._negative_ttl:
                    self._store(key, ABSENT, started + self._negative_ttl)
        flight.finish(value, None)
        return value

    def _store(self, key: bytes, value: bytes, deadline: float | None) -> None:
        """Store a fetched value (a fresh TTL, counted from now) unless it is too large to be
        worth it or Redis has expired it already; keep Redis's deadline if it comes first."""
        if self._max_item_bytes is not None and len(key) + len(value) > self._max_item_bytes:
            self.stats.too_large += 1  # served, but it would crowd out everything else
            return
        if deadline is not None:
            now = self._timer()
            if deadline <= now:
                return  # Redis has expired it by now
            if deadline >= now + self._entries.ttl:
                deadline = None  # the TTL ends first: no deadline to keep
        self._entries.store(key, value, deadline)

    def invalidate(self, keys: list[bytes]) -> None:
        """Forget `keys` (they changed in Redis), including values being fetched right now."""
        with self._lock:
            for key in keys:
                self.stats.invalidations += 1
                flight = self._flights.get(key)
                if flight is not None:
                    flight.stale = True
                with contextlib.suppress(KeyError):  # absent, or expired (removed anyway)
                    del self._entries[key]

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
        self._entries.clear()
        for flight in self._flights.values():
            flight.stale = True

    def size(self) -> int:
        """Number of live (unexpired) entries."""
        with self._lock:
            return len(self._entries)
