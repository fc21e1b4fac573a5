"""The read-through cache: the policy that fills the map (proxy/entries.py) from Redis.

`ReadThroughCache` owns the map, the one lock around it and the fetches in progress.
`peek()` and `peek_run()` index the map under the lock and do nothing else: the event loops
call them. `lookup()` indexes it too and, on a miss, joins or leads a fetch of the key with
the lock released, so hits never wait behind a miss and concurrent misses on one key share
a single fetch (a `Flight`) and its answer or error. `lookup_many()` (proxy/batches.py) does
the same for many keys, fetching their misses together.

docs/architecture.md ("The cache and its lock") says why the fetch is not in `__missing__`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from proxy.batches import BatchReads
from proxy.entries import ABSENT, CacheStats, Entries
from proxy.errors import BackendError, BackendTimeout, BackendUnavailable
from proxy.reads import Answer, Fetched, Flight, Load, LoadMany, Read

__all__ = ["Answer", "Fetched", "Load", "LoadMany", "Read", "ReadThroughCache"]

# The failures that mean Redis is down or too slow: a stale value may answer them. Redis
# refusing the read (WRONGTYPE, ACL, OOM) is an answer, not an outage.
OUTAGES = (BackendUnavailable, BackendTimeout)


class ReadThroughCache(BatchReads):
    """The cache both front ends read: peeks on their event loops, lookups off them (one
    key at a time here, many at once in BatchReads)."""

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
        stale_if_error: float = 0.0,
        load_many: LoadMany | None = None,
        batch_size: int = 1000,
    ) -> None:
        self.stats = CacheStats()
        self._entries = Entries(
            maxsize, ttl, timer, self.stats, maxbytes=maxbytes, stale_window=stale_if_error
        )
        self._max_item_bytes = max_item_bytes  # a larger key + value is served, not stored
        self._negative_ttl = negative_ttl  # how long a key Redis lacks is remembered (0: not)
        self._timer = timer
        self._load = load
        # Many keys in one round trip, at most `batch_size` at a time (MGET's misses); without
        # it, one by one.
        self._load_many = load_many
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._flights: dict[bytes, Flight] = {}
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
            if value is ABSENT or (
                (entries.deadlines or entries.fresh_until) and entries.spoiled(key)
            ):
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
            if entries.deadlines or entries.fresh_until or entries.absent:
                for index, key in enumerate(keys[: len(values)]):  # the run ends at the first
                    if values[index] is ABSENT or entries.spoiled(key):
                        del values[index:]
                        break
            self.stats.lookups += len(values)
        return values

    def lookup(self, key: bytes) -> Read:
        """The value under `key`, from the map or else from Redis (this may block on Redis).

        The map is indexed again even after a peek missed: another request may have stored
        the key since, and that is what lets concurrent misses share one fetch.
        """
        with self._lock:
            held = self._held(key)
            if held is not None:
                return held
            flight, leader = self._board(key)
        if leader:
            return self._fetch(key, flight)
        return self._join(flight)

    def _held(self, key: bytes) -> Read | None:
        """The fresh entry under `key` as a hit, or None (under the lock)."""
        entries = self._entries
        self.stats.lookups += 1
        if not entries.holds(key):  # the common case here: a peek has just missed it
            return None
        try:
            value = entries[key]
        except KeyError:  # held, but past its time
            return None
        if (entries.deadlines or entries.fresh_until) and entries.spoiled(key):
            return None
        if value is ABSENT:
            self.stats.negative_hits += 1
            return Read(None, True)
        return Read(value, True)

    def _board(self, key: bytes, done: threading.Event | None = None) -> tuple[Flight, bool]:
        """The fetch of `key` in progress, joined, or a new one led (under the lock), whose
        waiters wait on `done` if given (shared by the keys of one round trip)."""
        flight = self._flights.get(key)
        if flight is not None:
            self.stats.coalesced += 1
            return flight, False
        flight = self._flights[key] = Flight(done)
        self.stats.fetches += 1
        return flight, True

    def _join(self, flight: Flight) -> Read:
        found = flight.result()
        if found.stale:
            with self._lock:
                self.stats.stale_answers += 1
        return found

    def _fetch(self, key: bytes, flight: Flight) -> Read:
        """Load `key` from Redis for every waiter of `flight`. What was held for the key is
        older than this answer, so it goes; the answer is held in its place unless the key
        changed meanwhile. If Redis is down or too slow, a value held past its TTL for less
        than CACHE_STALE_IF_ERROR answers instead of the error."""
        started = self._timer()  # Redis's TTL runs from no earlier than this
        try:
            value, ttl = self._load(key)
        except BaseException as exc:
            found = self._failed(key, exc)
            if found is None:
                flight.fail(exc)
                raise
        else:
            with self._lock:
                found = self._settle(key, flight, value, ttl, started)
        flight.finish(found)
        return found

    def _settle(
        self, key: bytes, flight: Flight, value: bytes | None, ttl: float | None, started: float
    ) -> Read:
        """The fetch of `key` is over (under the lock): what was held for it is older than
        the answer, so it goes; the answer is held in its place unless the key changed
        meanwhile or caching is suspended."""
        del self._flights[key]
        self._entries.discard(key)
        stored = self._storing and not flight.stale and self._keep(key, value, ttl, started)
        return Read(value, False, stored=stored)

    def _keep(self, key: bytes, value: bytes | None, ttl: float | None, started: float) -> bool:
        """Hold a fetched answer; whether it was held. A key Redis lacks is remembered as
        absent only for CACHE_NEGATIVE_TTL (off by default), so a later SET shows at once
        or within that."""
        if value is not None:
            return self._store(key, value, None if ttl is None else started + ttl)
        if self._negative_ttl:
            return self._store(key, ABSENT, started + self._negative_ttl)
        return False

    def _failed(self, key: bytes, exc: BaseException) -> Read | None:
        """After a failed fetch: the stale answer to give instead of `exc`, if any. Nothing
        new is stored, so the next miss asks Redis again."""
        with self._lock:
            del self._flights[key]
            if isinstance(exc, BackendError):
                self.stats.fetch_errors[exc.kind] += 1
            if not isinstance(exc, OUTAGES) or not self._entries.stale_window:
                return None
            value = self._entries.stale(key)
            if value is None:
                return None
            self.stats.stale_answers += 1
        return Read(value, False, stale=True)

    def _store(self, key: bytes, value: bytes, deadline: float | None) -> bool:
        """Store a fetched value (a fresh TTL, counted from now) unless it is too large to be
        worth it or Redis has expired it already; keep Redis's deadline if it comes first.
        Whether it was stored."""
        if self._max_item_bytes is not None and len(key) + len(value) > self._max_item_bytes:
            self.stats.too_large += 1  # served, but it would crowd out everything else
            return False
        if deadline is not None:
            now = self._timer()
            if deadline <= now:
                return False  # Redis has expired it by now
            if deadline >= now + self._entries.fresh_ttl:
                deadline = None  # the TTL ends first: no deadline to keep
        self._entries.store(key, value, deadline)
        return True

    def invalidate(self, keys: list[bytes]) -> None:
        """Forget `keys` (they changed in Redis), including values being fetched right now;
        a forgotten value is never answered again, not even stale."""
        with self._lock:
            for key in keys:
                self.stats.invalidations += 1
                flight = self._flights.get(key)
                if flight is not None:
                    flight.stale = True
                self._entries.discard(key)

    def invalidate_all(self) -> None:
        """Forget everything (the keyspace was flushed)."""
        with self._lock:
            self.stats.flushes += 1
            self._entries.clear()
            self._stale_flights()

    def suspend(self) -> None:
        """Invalidations can no longer reach us: stop storing, so every read goes to Redis
        until resume(). What is held stops being fresh now: it is kept only for
        CACHE_STALE_IF_ERROR, to answer if Redis fails (without a stale window it is gone)."""
        with self._lock:
            self._storing = False
            self.stats.flushes += 1
            self._entries.demote()
            self._stale_flights()

    def resume(self) -> None:
        """Invalidations flow again: store fetched values again. Fetches already in progress
        started before tracking applied to their connection, so they are not stored."""
        with self._lock:
            self._storing = True
            self._stale_flights()

    def _stale_flights(self) -> None:
        for flight in self._flights.values():
            flight.stale = True

    def size(self) -> int:
        """Number of entries held (fresh, and stale ones kept for CACHE_STALE_IF_ERROR)."""
        with self._lock:
            return len(self._entries)
