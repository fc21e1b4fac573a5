"""The cache's map: an LRU + TTL map of Redis strings, bounded in keys and in bytes.

`Entries` is a cachetools `TTLCache` and, like every cachetools map, it is not thread-safe
and cannot fetch: indexing a key it does not hold raises KeyError. The read-through policy,
the lock and the fetches live in proxy/cache.py, as cachetools keeps `cached()` apart from
its maps.

An entry can stop being fresh before the map drops it, in two ways:

* Redis will expire its key before CACHE_TTL ends: `deadlines` holds that moment, and the
  entry is dropped once it passes (Redis no longer has the value, so it is never answered).
* With a stale window (CACHE_STALE_IF_ERROR), every entry stays in the map for that long after
  CACHE_TTL ends, and `fresh_until` says when it stopped being fresh: such an entry is only
  answered when Redis fails, and it still counts toward both budgets.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import Cache, TTLCache


@dataclass
class CacheStats:
    """Counters since start, updated under the cache lock."""

    lookups: int = 0  # reads answered: hits, and lookups that went on to Redis
    fetches: int = 0  # misses that went to Redis
    coalesced: int = 0  # misses that waited for another thread's fetch of the same key
    evictions: int = 0  # entries dropped to make room (least recently read first)
    too_large: int = 0  # values fetched but not stored: larger than CACHE_MAX_ITEM_BYTES
    expirations: int = 0  # entries dropped because their TTL (and stale window) ran out
    fetch_errors: Counter[str] = field(default_factory=Counter)  # by BackendError.kind
    invalidations: int = 0  # keys Redis said changed (CACHE_INVALIDATION=tracking)
    negative_hits: int = 0  # reads of a key remembered as absent (CACHE_NEGATIVE_TTL)
    stale_answers: int = 0  # reads answered with an expired value as Redis failed
    flushes: int = 0  # "everything changed": FLUSHALL/FLUSHDB, or the invalidation link lost


class _Absent(bytes):
    """The type of ABSENT: told apart from a real (possibly empty) value by identity."""


# What the map holds for a key Redis did not have (CACHE_NEGATIVE_TTL): readers that may not
# answer "absent" themselves (the event loops' peeks) treat it as not cached.
ABSENT = _Absent()


class Entries(TTLCache[bytes, bytes]):
    """The map: LRU + TTL, capacity in keys and in bytes, TTL from insertion and never
    extended by reads, a shorter deadline for an entry Redis will expire sooner, and
    optionally a stale window after the TTL."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        timer: Callable[[], float],
        stats: CacheStats,
        *,
        maxbytes: int | None = None,
        stale_window: float = 0.0,
    ) -> None:
        # An entry stays in the map for its stale window after its TTL.
        super().__init__(maxsize=maxsize, ttl=ttl + stale_window, timer=timer)
        self.fresh_ttl = ttl  # CACHE_TTL
        self.stale_window = stale_window  # CACHE_STALE_IF_ERROR (0: no stale entries)
        self.stats = stats
        self.maxbytes = maxbytes  # keys and values held at most (None: keys alone bound it)
        self.bytes = 0  # keys and values held now
        self.absent = 0  # ABSENT entries held now
        self.deadlines: dict[bytes, float] = {}  # keys Redis expires before the TTL would
        self.fresh_until: dict[bytes, float] = {}  # with a stale window: every key's TTL end

    def spoiled(self, key: bytes) -> bool:
        """True if the entry held for `key` may not be answered as fresh: Redis has expired
        it (it is dropped now), or its TTL has ended and it is kept only to be answered if
        Redis fails. The readers ask only while some entry has a time of its own
        (`deadlines` or `fresh_until` is not empty), so the common read pays two truth
        tests, not a call."""
        now = self.timer()
        if self._expired_in_redis(key, now):
            return True
        fresh_until = self.fresh_until.get(key)
        return fresh_until is not None and now >= fresh_until

    def stale(self, key: bytes) -> bytes | None:
        """The value held for `key` if its TTL ended less than the stale window ago and
        Redis has not expired it; else None. Answered only when Redis fails."""
        now = self.timer()
        fresh_until = self.fresh_until.get(key)
        if fresh_until is None or now >= fresh_until + self.stale_window:
            return None
        if self._expired_in_redis(key, now):
            return None
        value = self.get(key)  # the map's own get: a hit or None, never a fetch
        return None if value is ABSENT else value

    def _expired_in_redis(self, key: bytes, now: float) -> bool:
        """True (and the entry dropped, as expired) if Redis has expired `key` by `now`."""
        deadline = self.deadlines.get(key)
        if deadline is None or now < deadline:
            return False
        del self[key]
        self.stats.expirations += 1
        return True

    def store(self, key: bytes, value: bytes, deadline: float | None) -> None:
        """Hold `value` for CACHE_TTL, or only until `deadline` (the timer's clock) when Redis
        expires it sooner; least recently read entries go first until both budgets hold."""
        self.discard(key)
        size = len(key) + len(value)
        while self.maxbytes is not None and self.bytes + size > self.maxbytes and len(self):
            self.popitem()
        self[key] = value
        self.bytes += size
        self.absent += value is ABSENT
        if deadline is not None:
            self.deadlines[key] = deadline
        if self.stale_window:
            self.fresh_until[key] = self.timer() + self.fresh_ttl

    # Is an entry held for the key, fresh or not? (One dictionary lookup: no timer, no LRU
    # move, no KeyError to raise and catch, which is what makes a miss cheap to tell.)
    holds = Cache.__contains__

    def discard(self, key: bytes) -> None:
        """Drop the entry held for `key`, fresh or not, if there is one."""
        if self.holds(key):  # held, even if past its time
            with contextlib.suppress(KeyError):  # past its time: dropped all the same
                del self[key]

    def demote(self) -> None:
        """Every fresh entry stops being fresh now (the invalidation link is lost, so a change
        in Redis may go unheard): entries are kept for the stale window from now, keys Redis
        said were absent are dropped. Without a stale window, everything is dropped."""
        if not self.stale_window:
            self.clear()
            return
        now = self.timer()
        for key, fresh_until in list(self.fresh_until.items()):
            if Cache.__getitem__(self, key) is ABSENT:
                self.discard(key)
            else:
                self.fresh_until[key] = min(fresh_until, now)

    def __delitem__(self, key: bytes) -> None:
        self._forget(key, Cache.__getitem__(self, key))
        super().__delitem__(key)

    def _forget(self, key: bytes, value: bytes) -> None:
        self.bytes -= len(key) + len(value)
        self.absent -= value is ABSENT
        self.deadlines.pop(key, None)
        self.fresh_until.pop(key, None)

    def popitem(self) -> tuple[bytes, bytes]:
        """Evict the least recently read entry (cachetools calls this when full)."""
        item = super().popitem()
        self.stats.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[bytes, bytes]]:
        """Drop expired entries (cachetools calls this before inserting and when sizing)."""
        expired = super().expire(time)
        if not expired:  # (every insertion asks)
            return expired
        for key, value in expired:
            self._forget(key, value)
        self.stats.expirations += len(expired)
        return expired

    def clear(self) -> None:
        super().clear()
        self.bytes = self.absent = 0
        self.deadlines.clear()
        self.fresh_until.clear()
