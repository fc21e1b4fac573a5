"""Reads of many keys at once (an MGET, a run of pipelined GETs): part of the cache.

`BatchReads.lookup_many()` finds each key as `ReadThroughCache.lookup()` would, but fetches
the keys that are neither held nor being fetched together, `batch_size` per round trip. It is
ReadThroughCache's own code, kept in a module of its own: it works under the cache's lock,
on its flights, and settles each answer with the cache's `_settle` and `_failed`, which
are declared here for the type checker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from proxy.errors import BackendError, WrongType
from proxy.reads import Answer, Flight, Load, LoadMany, Read


class BatchReads:
    """The many-key reads of ReadThroughCache (proxy/cache.py), which provides the rest."""

    _lock: threading.Lock
    _timer: Callable[[], float]
    _load: Load
    _load_many: LoadMany | None  # many keys in one round trip (None: one by one)
    _batch_size: int

    def _held(self, key: bytes) -> Read | None:
        raise NotImplementedError

    def _board(self, key: bytes, done: threading.Event | None = None) -> tuple[Flight, bool]:
        raise NotImplementedError

    def _join(self, flight: Flight) -> Read:
        raise NotImplementedError

    def _settle(
        self, key: bytes, flight: Flight, value: bytes | None, ttl: float | None, started: float
    ) -> Read:
        raise NotImplementedError

    def _failed(self, key: bytes, exc: BaseException) -> Read | None:
        raise NotImplementedError

    def lookup_many(self, keys: list[bytes]) -> list[Read | BackendError]:
        """Each key's Read, in order, as lookup() would find it, but the keys that are neither
        held nor being fetched are fetched together: at most `batch_size` in one round trip
        to Redis. A key Redis failed alone (WrongType; on a cluster, its node's error) has
        that error in its place. If a round trip fails, every waiter of every key in it gets
        the error (or a stale value), as does the caller."""
        found: dict[bytes, Read | BackendError] = {}
        joined: dict[bytes, Flight] = {}
        led: dict[bytes, Flight] = {}
        done = threading.Event()  # the waiters' event for the current round trip's keys
        with self._lock:
            for key in dict.fromkeys(keys):  # each key once, in order
                held = self._held(key)
                if held is not None:
                    found[key] = held
                    continue
                if led and len(led) % self._batch_size == 0:
                    done = threading.Event()
                flight, leader = self._board(key, done)
                (led if leader else joined)[key] = flight
        if led:
            found.update(self._fetch_many(led))
        for key, flight in joined.items():
            try:
                found[key] = self._join(flight)
            except BackendError as exc:
                found[key] = exc
        return [found[key] for key in keys]

    def _fetch_many(self, led: dict[bytes, Flight]) -> dict[bytes, Read | BackendError]:
        """Fetch the keys `led` in chunks of `batch_size`, one round trip each; a failure
        ends every flight still led (so no waiter is left behind) and is raised."""
        found: dict[bytes, Read | BackendError] = {}
        keys = list(led)
        for at in range(0, len(keys), self._batch_size):
            chunk = keys[at : at + self._batch_size]
            started = self._timer()
            try:
                answers = self._load_chunk(chunk)
            except BaseException as exc:
                if not self._fail_all(keys[at:], led, exc, found):
                    raise
                return found  # Redis failed, and every key left had a stale value
            found.update(self._keep_chunk(chunk, answers, led, started))
        return found

    def _load_chunk(self, keys: list[bytes]) -> list[Answer]:
        if self._load_many is not None:
            return self._load_many(keys)
        answers: list[Answer] = []
        for key in keys:
            try:
                answers.append(self._load(key))
            except WrongType as exc:  # Redis's answer for this key; an outage ends the chunk
                answers.append(exc)
        return answers

    def _keep_chunk(
        self,
        chunk: list[bytes],
        answers: list[Answer],
        led: dict[bytes, Flight],
        started: float,
    ) -> dict[bytes, Read | BackendError]:
        """Settle each key as _fetch settles one, then answer all their waiters at once. A
        key that failed alone fails as a GET of it would (a stale value where it may)."""
        found: dict[bytes, Read | BackendError] = {}
        with self._lock:
            for key, answer in zip(chunk, answers, strict=True):
                if not isinstance(answer, BackendError):
                    found[key] = read = self._settle(key, led[key], *answer, started)
                    led[key].finish(read, signal=False)
        for key, answer in zip(chunk, answers, strict=True):
            if isinstance(answer, BackendError):
                stale = self._end_failed(key, led[key], answer)
                found[key] = answer if stale is None else stale
        led[chunk[0]].signal()  # the chunk's keys share one event
        return found

    def _fail_all(
        self,
        keys: list[bytes],
        led: dict[bytes, Flight],
        exc: BaseException,
        found: dict[bytes, Read | BackendError],
    ) -> bool:
        """End the flights of `keys` after a failed round trip: a stale value where
        CACHE_STALE_IF_ERROR has one, else the error. Whether every key had a stale value."""
        covered = True
        for key in keys:
            stale = self._end_failed(key, led[key], exc)
            if stale is None:
                covered = False
            else:
                found[key] = stale
        for key in keys:  # (a rare path: an event set again costs little)
            led[key].signal()
        return covered

    def _end_failed(self, key: bytes, flight: Flight, exc: BaseException) -> Read | None:
        """End `flight` after `exc`, without waking its waiters yet: with the stale value
        CACHE_STALE_IF_ERROR may have (returned), else with the error."""
        stale = self._failed(key, exc)
        if stale is None:
            flight.fail(exc, signal=False)
        else:
            flight.finish(stale, signal=False)
        return stale
