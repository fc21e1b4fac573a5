"""What a read of the cache produces, and the fetch in progress that concurrent misses share.

`Read` is what a lookup answers (and how: hit, miss, stored, collapsed, stale); a `Flight` is
one fetch of a key from Redis, joined by every miss on that key until it completes, which then
sees its answer or its error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from proxy.errors import BackendError


class Fetched(NamedTuple):
    """One key as read from Redis: its value (None if absent) and, if Redis will expire it,
    the seconds it has left (its PTTL, read in the same round trip)."""

    value: bytes | None
    ttl: float | None = None


# Reads one key from Redis: its value and seconds to live, as Fetched (or a plain pair).
Load = Callable[[bytes], tuple["bytes | None", "float | None"]]


class Read(NamedTuple):
    """What one lookup found and how: `value` is None if Redis has none."""

    value: bytes | None
    hit: bool  # answered from the map (a value, or a key remembered as absent)
    stored: bool = False  # fetched and now held, so the next read is a hit
    collapsed: bool = False  # answered by another request's fetch of the same key
    stale: bool = False  # Redis failed: the value held past its TTL (CACHE_STALE_IF_ERROR)

    @property
    def outcome(self) -> str:
        """The label metrics and the access log count this read under."""
        if self.stale:
            return "stale"
        if self.value is None:
            return "not_found"
        return "hit" if self.hit else "miss"


UNANSWERED = Read(None, False)  # what a flight holds until its fetch is answered


class Flight:
    """One fetch in progress, shared by every miss on its key until it completes. The keys
    fetched in one round trip share one `done` event: it is set once, when all are answered
    (an event per key would cost more than the fetch saves)."""

    __slots__ = ("_done", "_error", "_read", "stale")

    def __init__(self, done: threading.Event | None = None) -> None:
        self._done = done or threading.Event()
        self._read = UNANSWERED
        self._error: BaseException | None = None
        self.stale = False  # invalidated while fetching: answer the waiters, but do not store

    def finish(self, read: Read, signal: bool = True) -> None:
        """Answer the waiters with `read` (`signal` False: the caller sets the shared event
        once all the flights sharing it are answered)."""
        self._read = read
        if signal:
            self._done.set()

    def fail(self, error: BaseException, signal: bool = True) -> None:
        self._error = error
        if signal:
            self._done.set()

    def signal(self) -> None:
        self._done.set()

    def result(self) -> Read:
        """What the fetch answered, as a waiter on it sees it."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._read._replace(collapsed=True)


# One key of a batch read from Redis: its value and seconds to live, or its own error in its
# place (WrongType; on a cluster, the error of the key's node).
Answer = tuple["bytes | None", "float | None"] | BackendError
# Reads up to MAX_BATCH_KEYS keys from Redis in one round trip (backend.Backend.get_many).
LoadMany = Callable[[Sequence[bytes]], list[Answer]]
