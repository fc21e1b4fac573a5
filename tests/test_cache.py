"""ReadThroughCache: TTL, LRU, capacity, peeks and locking, with a fake timer and a fake Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from proxy.cache import Fetched, Load, Read, ReadThroughCache
from proxy.errors import BackendError, BackendTimeout, BackendUnavailable, WrongType

DEADLINE = 5.0  # seconds; generous, only reached when the behaviour under test is broken


class FakeTimer:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRedis:
    """A fetch function over a dict that counts calls per key."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data = dict(data or {})
        self.ttls: dict[bytes, float] = {}  # seconds Redis gives a key (PTTL), if any
        self.calls: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> Fetched:
        self.calls[key] = self.calls.get(key, 0) + 1
        return Fetched(self.data.get(key), self.ttls.get(key))


class BlockingFetch:
    """A fetch that signals when it starts and returns (or raises) only when released."""

    def __init__(self, result: bytes | Exception = b"value") -> None:
        self.result = result
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, key: bytes) -> Fetched:
        self.calls += 1
        self.started.set()
        assert self.release.wait(DEADLINE), "the test never released the fetch"
        if isinstance(self.result, Exception):
            raise self.result
        return Fetched(self.result)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.001)


def read(cache: ReadThroughCache, key: bytes) -> bytes | None:
    """The value a lookup returns (lookup() also says whether it was a hit)."""
    return cache.lookup(key)[0]


def make_cache(
    fetch, maxsize: int = 10, ttl: float = 10.0, timer=None, **options: Any
) -> ReadThroughCache:
    return ReadThroughCache(
        maxsize=maxsize, ttl=ttl, load=fetch, timer=timer or FakeTimer(), **options
    )


def test_hit_does_not_fetch_again() -> None:
    redis = FakeRedis({b"k": b"v"})
    cache = make_cache(redis)
    assert read(cache, b"k") == b"v"
    assert read(cache, b"k") == b"v"
    assert redis.calls == {b"k": 1}


def test_ttl_counts_from_insert_and_reads_do_not_extend_it() -> None:
    timer, redis = FakeTimer(), FakeRedis({b"k": b"v"})
    cache = make_cache(redis, ttl=10, timer=timer)
    read(cache, b"k")
    for now in (3.0, 6.0, 9.9):  # reads inside the TTL are hits and must not push it back
        timer.now = now
        read(cache, b"k")
    assert redis.calls[b"k"] == 1
    timer.now = 10.0
    read(cache, b"k")
    assert redis.calls[b"k"] == 2


def test_value_refetched_after_expiry_gets_a_fresh_ttl() -> None:
    timer, redis = FakeTimer(), FakeRedis({b"k": b"old"})
    cache = make_cache(redis, ttl=10, timer=timer)
    read(cache, b"k")
    redis.data[b"k"] = b"new"
    timer.now = 15.0
    assert read(cache, b"k") == b"new"
    timer.now = 24.9
    assert read(cache, b"k") == b"new"
    assert redis.calls[b"k"] == 2
    timer.now = 25.0
    read(cache, b"k")
    assert redis.calls[b"k"] == 3


def test_cached_value_is_served_until_ttl_even_if_redis_changes() -> None:
    timer, redis = FakeTimer(), FakeRedis({b"k": b"old"})
    cache = make_cache(redis, ttl=10, timer=timer)
    read(cache, b"k")
    redis.data[b"k"] = b"new"
    timer.now = 9.0
    assert read(cache, b"k") == b"old"


def test_eviction_removes_least_recently_read_not_first_inserted() -> None:
    redis = FakeRedis({k: k.upper() for k in (b"a", b"b", b"c", b"d")})
    cache = make_cache(redis, maxsize=3)
    for key in (b"a", b"b", b"c"):
        read(cache, key)
    read(cache, b"a")  # a is now the most recently read; b the least
    read(cache, b"d")
    assert cache.peek(b"b") is None
    assert all(cache.peek(key) is not None for key in (b"a", b"c", b"d"))


def test_capacity_is_never_exceeded() -> None:
    redis = FakeRedis({str(i).encode(): b"v" for i in range(100)})
    cache = make_cache(redis, maxsize=10)
    for i in range(100):
        read(cache, str(i).encode())
        assert cache.size() <= 10
    assert cache.size() == 10


def test_absent_key_is_not_cached() -> None:
    redis = FakeRedis()
    cache = make_cache(redis)
    assert read(cache, b"k") is None
    redis.data[b"k"] = b"set later"
    assert read(cache, b"k") == b"set later"
    assert redis.calls[b"k"] == 2


def test_concurrent_misses_on_one_key_make_one_fetch() -> None:
    fetch = BlockingFetch(b"v")
    cache = make_cache(fetch)
    results: list[bytes | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(read(cache, b"k"))) for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    assert fetch.started.wait(DEADLINE)
    wait_until(lambda: cache.stats.coalesced == 19)  # every other thread joined the flight
    fetch.release.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert fetch.calls == 1
    assert results == [b"v"] * 20


def test_hit_is_answered_while_a_miss_is_blocked_in_fetch() -> None:
    redis = FakeRedis({b"hot": b"cached"})
    blocked = BlockingFetch(b"cold value")
    cache = make_cache(lambda key: redis(key) if key == b"hot" else blocked(key))
    read(cache, b"hot")
    miss = threading.Thread(target=cache.lookup, args=(b"cold",))
    miss.start()
    assert blocked.started.wait(DEADLINE)
    hit: list[bytes | None] = []
    reader = threading.Thread(target=lambda: hit.append(read(cache, b"hot")))
    reader.start()
    reader.join(DEADLINE)
    answered_while_blocked = list(hit)  # snapshot before the miss is allowed to finish
    blocked.release.set()
    miss.join(DEADLINE)
    reader.join(DEADLINE)
    assert answered_while_blocked == [b"cached"]


def test_peeks_while_another_thread_fetches_never_fetch() -> None:
    blocked = BlockingFetch(b"cold value")
    cache = make_cache(blocked)
    miss = threading.Thread(target=cache.lookup, args=(b"cold",))
    miss.start()
    assert blocked.started.wait(DEADLINE)  # the lock is released for the fetch right now
    peeked = (cache.peek(b"other"), cache.peek_run([b"another"]))
    blocked.release.set()
    miss.join(DEADLINE)
    assert peeked == (None, [])
    assert blocked.calls == 1


def test_fetch_error_is_shared_by_waiters_and_not_cached() -> None:
    error = BackendUnavailable("cannot reach Redis")
    fetch = BlockingFetch(error)
    cache = make_cache(fetch)
    raised: list[BaseException] = []

    def read_and_keep_error() -> None:
        try:
            read(cache, b"k")
        except BackendUnavailable as exc:
            raised.append(exc)

    threads = [threading.Thread(target=read_and_keep_error) for _ in range(5)]
    for thread in threads:
        thread.start()
    assert fetch.started.wait(DEADLINE)
    wait_until(lambda: cache.stats.coalesced == 4)
    fetch.release.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert fetch.calls == 1
    assert len(raised) == 5
    assert all(exc is error for exc in raised)
    fetch.result = b"recovered"
    assert read(cache, b"k") == b"recovered"
    assert fetch.calls == 2


def test_lookup_counters_tell_hits_from_fetches() -> None:
    cache = make_cache(FakeRedis({b"k": b"v"}))
    for _ in range(3):
        read(cache, b"k")
    assert (cache.stats.lookups, cache.stats.fetches, cache.stats.coalesced) == (3, 1, 0)


def test_lookup_says_whether_it_was_a_hit() -> None:
    cache = make_cache(FakeRedis({b"k": b"v"}))
    assert cache.lookup(b"k") == Read(b"v", False, stored=True)
    assert cache.lookup(b"k") == Read(b"v", True)
    assert cache.lookup(b"absent") == Read(None, False)


def test_evictions_and_expirations_are_counted() -> None:
    timer = FakeTimer()
    cache = make_cache(FakeRedis({k: k for k in (b"a", b"b", b"c")}), maxsize=2, timer=timer)
    for key in (b"a", b"b", b"c"):
        read(cache, key)
    assert cache.stats.evictions == 1
    timer.now = 100.0
    assert cache.size() == 0
    assert cache.stats.expirations == 2


def test_fetch_errors_are_counted_by_kind() -> None:
    fetch = BlockingFetch(BackendUnavailable("down"))
    fetch.release.set()
    cache = make_cache(fetch)
    with pytest.raises(BackendUnavailable):
        read(cache, b"k")
    assert cache.stats.fetch_errors == {"unavailable": 1}


def test_peek_run_returns_hits_up_to_the_first_miss_without_fetching() -> None:
    redis = FakeRedis({b"a": b"A", b"b": b"B", b"c": b"C"})
    cache = make_cache(redis)
    read(cache, b"a")
    read(cache, b"c")
    assert cache.peek_run([b"a", b"c", b"b", b"a"]) == [b"A", b"C"]
    assert cache.peek(b"b") is None
    assert cache.peek(b"c") == b"C"
    assert redis.calls == {b"a": 1, b"c": 1}


def test_peek_of_an_expired_key_finds_nothing_and_never_fetches() -> None:
    timer, redis = FakeTimer(), FakeRedis({b"k": b"v"})
    cache = make_cache(redis, ttl=10, timer=timer)
    read(cache, b"k")
    timer.now = 10.0
    assert (cache.peek(b"k"), cache.peek_run([b"k"])) == (None, [])
    assert redis.calls == {b"k": 1}


def test_peek_makes_a_key_the_most_recently_read() -> None:
    redis = FakeRedis({k: k for k in (b"a", b"b", b"c")})
    cache = make_cache(redis, maxsize=2)
    read(cache, b"a")
    read(cache, b"b")
    assert cache.peek(b"a") == b"a"  # now b is the least recently read
    read(cache, b"c")
    assert (cache.peek(b"a"), cache.peek(b"b")) == (b"a", None)


@pytest.mark.parametrize(
    ("value", "hit", "outcome"),
    [(b"v", True, "hit"), (b"v", False, "miss"), (None, False, "not_found")],
)
def test_a_read_names_its_outcome(value: bytes | None, hit: bool, outcome: str) -> None:
    assert Read(value, hit).outcome == outcome
    assert Read(value, hit, stale=True).outcome == "stale"


@pytest.mark.parametrize("maxsize", [1, 2, 7])
def test_concurrent_readers_keep_capacity_and_values_correct(maxsize: int) -> None:
    keys = [str(i).encode() for i in range(50)]
    redis = FakeRedis({k: b"value-" + k for k in keys})
    cache = make_cache(redis, maxsize=maxsize, timer=time.monotonic)
    wrong: list[bytes] = []

    def hammer(offset: int) -> None:
        for i in range(400):
            key = keys[(i * 7 + offset) % len(keys)]
            if read(cache, key) != b"value-" + key:
                wrong.append(key)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 4)
    assert wrong == []
    assert cache.size() <= maxsize


def test_invalidated_key_is_fetched_again() -> None:
    redis = FakeRedis({b"k": b"old"})
    cache = make_cache(redis)
    read(cache, b"k")
    redis.data[b"k"] = b"new"
    cache.invalidate([b"k", b"never-cached"])
    assert read(cache, b"k") == b"new"
    assert cache.stats.invalidations == 2


def test_invalidation_during_a_fetch_answers_but_does_not_store() -> None:
    fetch = BlockingFetch(b"stale")
    cache = make_cache(fetch)
    reader = threading.Thread(target=read, args=(cache, b"k"))
    reader.start()
    assert fetch.started.wait(DEADLINE)
    cache.invalidate([b"k"])  # Redis changed the key while our GET was on the wire
    fetch.release.set()
    reader.join(DEADLINE)
    fetch.result = b"fresh"
    assert read(cache, b"k") == b"fresh"
    assert fetch.calls == 2


def test_invalidate_all_empties_the_cache() -> None:
    cache = make_cache(FakeRedis({b"a": b"A", b"b": b"B"}))
    read(cache, b"a")
    read(cache, b"b")
    cache.invalidate_all()
    assert cache.size() == 0
    assert cache.stats.flushes == 1


def test_suspended_cache_reads_through_and_stores_nothing_until_resumed() -> None:
    redis = FakeRedis({b"k": b"v"})
    cache = make_cache(redis)
    read(cache, b"k")
    cache.suspend()
    assert cache.size() == 0
    assert [read(cache, b"k") for _ in range(3)] == [b"v"] * 3
    assert redis.calls[b"k"] == 4
    cache.resume()
    read(cache, b"k")
    read(cache, b"k")
    assert redis.calls[b"k"] == 5


def test_fetch_started_before_resume_is_not_stored() -> None:
    fetch = BlockingFetch(b"untracked")
    cache = make_cache(fetch)
    cache.suspend()
    reader = threading.Thread(target=read, args=(cache, b"k"))
    reader.start()
    assert fetch.started.wait(DEADLINE)
    cache.resume()  # tracking now applies to new reads, not to the one on the wire
    fetch.release.set()
    reader.join(DEADLINE)
    read(cache, b"k")
    assert fetch.calls == 2


def test_an_entry_is_never_served_past_the_ttl_redis_gave_it() -> None:
    redis, timer = FakeRedis({b"k": b"v"}), FakeTimer()
    redis.ttls[b"k"] = 2.0
    cache = make_cache(redis, ttl=10.0, timer=timer)
    assert cache.lookup(b"k") == Read(b"v", False, stored=True)
    timer.now = 1.999
    assert cache.peek(b"k") == b"v"
    timer.now = 2.0
    assert cache.peek(b"k") is None
    assert cache.lookup(b"k").hit is False  # from Redis again
    assert cache.stats.expirations == 1


def test_cache_ttl_still_bounds_a_key_redis_keeps_longer() -> None:
    redis, timer = FakeRedis({b"k": b"v"}), FakeTimer()
    redis.ttls[b"k"] = 100.0
    cache = make_cache(redis, ttl=10.0, timer=timer)
    cache.lookup(b"k")
    timer.now = 10.0
    assert cache.peek(b"k") is None


def test_a_key_redis_expires_at_once_is_answered_not_stored() -> None:
    redis = FakeRedis({b"k": b"v"})
    redis.ttls[b"k"] = 0.0
    cache = make_cache(redis)
    assert cache.lookup(b"k") == Read(b"v", False)
    assert cache.peek(b"k") is None


def test_the_byte_budget_evicts_least_recently_read_entries() -> None:
    redis = FakeRedis({b"a": b"1" * 9, b"b": b"2" * 9, b"c": b"3" * 9, b"d": b"4" * 9})
    cache = make_cache(redis, maxsize=100, maxbytes=30)  # three entries of 10 bytes
    for key in (b"a", b"b", b"c"):
        cache.lookup(key)
    cache.peek(b"a")  # b is now the least recently read
    cache.lookup(b"d")
    assert [cache.peek(key) is not None for key in (b"a", b"b", b"c", b"d")] == [
        True,
        False,
        True,
        True,
    ]
    assert cache.held_bytes() == 30
    assert cache.stats.evictions == 1


def test_a_value_over_the_item_limit_is_served_but_not_stored_and_evicts_nothing() -> None:
    redis = FakeRedis({b"small": b"s", b"big": b"b" * 100})
    cache = make_cache(redis, maxbytes=1000, max_item_bytes=50)
    cache.lookup(b"small")
    assert cache.lookup(b"big") == Read(b"b" * 100, False)
    assert cache.peek(b"big") is None
    assert cache.peek(b"small") == b"s"
    assert (cache.stats.too_large, cache.stats.evictions) == (1, 0)


def test_held_bytes_follow_expiry_invalidation_and_flushes() -> None:
    redis, timer = FakeRedis({b"a": b"12", b"b": b"34", b"c": b"56"}), FakeTimer()
    cache = make_cache(redis, ttl=5.0, timer=timer, maxbytes=100)
    for key in (b"a", b"b"):
        cache.lookup(key)
    assert cache.held_bytes() == 6
    cache.invalidate([b"a"])
    assert cache.held_bytes() == 3
    timer.now = 5.0
    cache.lookup(b"c")  # storing expires b first
    assert cache.held_bytes() == 3
    cache.invalidate_all()
    assert cache.held_bytes() == 0


def test_a_pipelined_run_of_hits_ends_at_a_key_redis_has_expired() -> None:
    redis, timer = FakeRedis({b"a": b"1", b"b": b"2", b"c": b"3"}), FakeTimer()
    redis.ttls[b"b"] = 1.0
    cache = make_cache(redis, timer=timer)
    for key in (b"a", b"b", b"c"):
        cache.lookup(key)
    assert cache.peek_run([b"a", b"b", b"c"]) == [b"1", b"2", b"3"]
    timer.now = 1.0
    assert cache.peek_run([b"a", b"b", b"c"]) == [b"1"]
    assert cache.lookup(b"b") == Read(b"2", False, stored=True)  # fetched again


def test_negative_caching_remembers_an_absent_key_for_its_ttl() -> None:
    redis, timer = FakeRedis({b"present": b"v"}), FakeTimer()
    cache = make_cache(redis, timer=timer, ttl=10.0, negative_ttl=2.0)
    assert cache.lookup(b"gone") == Read(None, False, stored=True)
    assert cache.lookup(b"gone") == Read(None, True)  # not asked again
    assert cache.peek(b"gone") is None  # the loops' peeks leave "absent" to lookup
    cache.lookup(b"present")
    assert cache.peek_run([b"present", b"gone", b"present"]) == [b"v"]
    assert (redis.calls[b"gone"], cache.stats.negative_hits) == (1, 1)
    timer.now = 2.0
    redis.data[b"gone"] = b"back"
    assert cache.lookup(b"gone") == Read(b"back", False, stored=True)


def test_an_absent_key_is_not_remembered_by_default_and_counts_toward_capacity() -> None:
    redis = FakeRedis({b"a": b"1"})
    cache = make_cache(redis)
    cache.lookup(b"gone")
    assert cache.lookup(b"gone") == Read(None, False)
    assert redis.calls[b"gone"] == 2
    remembering = make_cache(FakeRedis({b"a": b"1"}), maxsize=1, negative_ttl=5.0)
    remembering.lookup(b"gone")
    remembering.lookup(b"a")  # evicts the absent entry: it counts toward CACHE_MAXSIZE
    assert remembering.size() == 1
    assert remembering.stats.evictions == 1


def test_an_invalidation_forgets_an_absent_key_at_once() -> None:
    redis = FakeRedis()
    cache = make_cache(redis, negative_ttl=5.0)
    cache.lookup(b"k")
    redis.data[b"k"] = b"set meanwhile"
    cache.invalidate([b"k"])
    assert cache.lookup(b"k") == Read(b"set meanwhile", False, stored=True)


class FailingRedis(FakeRedis):
    """A FakeRedis that raises `failure` instead of answering while it is set."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        super().__init__(data)
        self.failure: BackendError | None = None

    def __call__(self, key: bytes) -> Fetched:
        if self.failure is not None:
            self.calls[key] = self.calls.get(key, 0) + 1
            raise self.failure
        return super().__call__(key)


def stale_cache(redis: Load, timer: FakeTimer, **options: Any) -> ReadThroughCache:
    """TTL 10 s, stale for 5 s more if Redis fails."""
    return make_cache(redis, ttl=10.0, timer=timer, stale_if_error=5.0, **options)


@pytest.mark.parametrize("failure", [BackendUnavailable("down"), BackendTimeout("slow")])
def test_an_expired_value_answers_while_redis_fails_inside_the_stale_window(
    failure: BackendError,
) -> None:
    redis, timer = FailingRedis({b"k": b"v"}), FakeTimer()
    cache = stale_cache(redis, timer)
    cache.lookup(b"k")
    timer.now = 10.0
    assert cache.peek(b"k") is None  # expired: the loops never answer it
    redis.failure = failure
    assert cache.lookup(b"k") == Read(b"v", False, stale=True)
    timer.now = 14.999
    assert cache.lookup(b"k") == Read(b"v", False, stale=True)
    timer.now = 15.0
    with pytest.raises(type(failure)):
        cache.lookup(b"k")
    assert (cache.stats.stale_answers, redis.calls[b"k"]) == (2, 4)


def advance(seconds: float) -> Callable[[ReadThroughCache, FakeTimer], None]:
    return lambda cache, timer: setattr(timer, "now", seconds)


# What leaves an expired (or dropped) value that must not answer stale: the stale window, the
# Redis TTL read with the value, what happens after the read, and how Redis then fails.
NEVER_STALE: dict[str, tuple[float, float | None, Callable[..., None], BackendError]] = {
    "without a window": (0.0, None, advance(10.0), BackendUnavailable("down")),
    "on a refusal": (5.0, None, advance(11.0), WrongType("the key holds a list")),
    "after an invalidation": (5.0, None, lambda c, t: c.invalidate([b"k"]), BackendTimeout("")),
    "after a flush": (5.0, None, lambda c, t: c.invalidate_all(), BackendUnavailable("down")),
    "after Redis's expiry": (5.0, 2.0, advance(2.0), BackendUnavailable("down")),
}


@pytest.mark.parametrize("case", NEVER_STALE.values(), ids=NEVER_STALE.keys())
def test_a_value_is_never_answered_stale(
    case: tuple[float, float | None, Callable[..., None], BackendError],
) -> None:
    window, redis_ttl, then, failure = case
    redis, timer = FailingRedis({b"k": b"v"}), FakeTimer()
    if redis_ttl is not None:
        redis.ttls[b"k"] = redis_ttl
    cache = make_cache(redis, ttl=10.0, timer=timer, stale_if_error=window)
    cache.lookup(b"k")
    then(cache, timer)
    redis.failure = failure
    with pytest.raises(type(failure)):
        cache.lookup(b"k")
    assert cache.stats.stale_answers == 0


def test_a_stale_entry_counts_toward_both_budgets_until_its_window_ends() -> None:
    redis, timer = FakeRedis({b"a": b"1", b"b": b"2", b"c": b"3"}), FakeTimer()
    cache = stale_cache(redis, timer, maxsize=2, maxbytes=100)
    cache.lookup(b"a")
    timer.now = 12.0  # a is stale
    cache.lookup(b"b")
    assert (cache.size(), cache.held_bytes()) == (2, 4)
    cache.lookup(b"c")  # room is made by evicting a, the least recently read
    assert cache.stats.evictions == 1
    timer.now = 30.0
    assert (cache.size(), cache.held_bytes()) == (0, 0)


def test_a_successful_fetch_replaces_what_would_have_been_answered_stale() -> None:
    redis, timer = FailingRedis({b"k": b"old"}), FakeTimer()
    cache = stale_cache(redis, timer, max_item_bytes=10)
    cache.lookup(b"k")
    timer.now = 10.0
    redis.data[b"k"] = b"too large to hold"
    assert cache.lookup(b"k") == Read(b"too large to hold", False)
    redis.failure = BackendUnavailable("down")
    with pytest.raises(BackendUnavailable):  # "old" is gone: it is older than what Redis said
        cache.lookup(b"k")


def test_a_lost_invalidation_link_leaves_values_only_to_answer_an_outage() -> None:
    redis, timer = FailingRedis({b"k": b"v", b"other": b"o"}), FakeTimer()
    cache = stale_cache(redis, timer, negative_ttl=5.0)
    cache.lookup(b"k")
    cache.lookup(b"gone")
    timer.now = 1.0
    cache.suspend()
    assert (cache.peek(b"k"), cache.size()) == (None, 1)  # the absent key is forgotten
    redis.failure = BackendUnavailable("down")
    assert cache.lookup(b"k") == Read(b"v", False, stale=True)  # stale since the link went
    with pytest.raises(BackendUnavailable):
        cache.lookup(b"gone")
    timer.now = 5.999
    assert cache.lookup(b"k").stale
    timer.now = 6.0
    with pytest.raises(BackendUnavailable):
        cache.lookup(b"k")


def two_readers_of_one_fetch(cache: ReadThroughCache, fetch: BlockingFetch) -> list[Read]:
    """What two concurrent lookups of one key get: one leads the fetch, one waits on it."""
    answers: list[Read] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.lookup(b"k"))) for _ in "ab"]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats.coalesced == 1)
    fetch.release.set()
    for thread in threads:
        thread.join(DEADLINE)
    return answers


def test_waiters_on_a_failing_fetch_get_the_stale_answer_too() -> None:
    fetch, timer = BlockingFetch(b"v"), FakeTimer()
    fetch.release.set()
    cache = stale_cache(fetch, timer)
    cache.lookup(b"k")
    timer.now = 11.0
    fetch.release.clear()
    fetch.result = BackendUnavailable("down")
    assert sorted(two_readers_of_one_fetch(cache, fetch)) == [
        Read(b"v", False, stale=True),
        Read(b"v", False, collapsed=True, stale=True),
    ]
    assert cache.stats.stale_answers == 2


def test_a_waiter_is_told_its_answer_was_collapsed_and_stored() -> None:
    fetch = BlockingFetch(b"v")
    cache = make_cache(fetch)
    assert sorted(two_readers_of_one_fetch(cache, fetch)) == [
        Read(b"v", False, stored=True),
        Read(b"v", False, stored=True, collapsed=True),
    ]


class FakeMget(FakeRedis):
    """FakeRedis with Backend.get_many's shape: one call per round trip, keys of another
    type as WrongType; `gate` (if set) holds every round trip until released."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        super().__init__(data)
        self.batches: list[list[bytes]] = []
        self.lists: set[bytes] = set()  # keys of another type
        self.failing: dict[bytes, BackendError] = {}  # keys whose (cluster) node failed
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def many(self, keys) -> list[Any]:
        self.batches.append(list(keys))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(DEADLINE)
        if self.error is not None:
            raise self.error
        return [self._answer(key) for key in keys]

    def _answer(self, key: bytes) -> Any:
        if key in self.lists:
            return WrongType("list")
        return self.failing.get(key) or Fetched(self.data.get(key), self.ttls.get(key))


def batch_cache(redis: FakeMget, timer=None, **options: Any) -> ReadThroughCache:
    return make_cache(
        redis, maxsize=100, timer=timer, load_many=redis.many, batch_size=3, **options
    )


def values(reads) -> list[Any]:
    return [read if isinstance(read, BackendError) else read.value for read in reads]


def test_the_misses_of_many_keys_are_fetched_together_in_chunks() -> None:
    redis = FakeMget({b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4", b"e": b"5"})
    cache = batch_cache(redis)
    cache.lookup(b"b")  # held already: not fetched again
    reads = cache.lookup_many([b"a", b"b", b"c", b"x", b"d", b"e", b"a"])
    assert values(reads) == [b"1", b"2", b"3", None, b"4", b"5", b"1"]
    assert redis.batches == [[b"a", b"c", b"x"], [b"d", b"e"]]  # one round trip per 3 keys
    assert redis.calls == {b"b": 1}  # the single lookup, and nothing key by key
    assert [read.hit for read in reads] == [False, True, False, False, False, False, False]  # type: ignore[union-attr]
    assert values(cache.lookup_many([b"a", b"c", b"e"])) == [b"1", b"3", b"5"]
    assert len(redis.batches) == 2  # all held now


def test_each_key_of_a_batch_keeps_its_own_redis_ttl() -> None:
    timer = FakeTimer()
    redis = FakeMget({b"short": b"s", b"long": b"l"})
    redis.ttls[b"short"] = 1.0
    cache = batch_cache(redis, timer=timer)
    cache.lookup_many([b"short", b"long"])
    timer.now = 1.5
    assert cache.peek(b"short") is None  # Redis has expired it: so has the cache
    assert cache.peek(b"long") == b"l"


def test_a_key_of_another_type_is_wrong_type_in_its_place() -> None:
    redis = FakeMget({b"a": b"1"})
    redis.lists.add(b"l")
    reads = batch_cache(redis).lookup_many([b"a", b"l"])
    assert values(reads)[0] == b"1" and isinstance(reads[1], WrongType)


def test_a_batch_shares_fetches_in_flight_both_ways() -> None:
    redis = FakeMget({b"a": b"1", b"b": b"2"})
    redis.gate = threading.Event()
    cache = batch_cache(redis)
    results: dict[str, Any] = {}
    batch = threading.Thread(target=lambda: results.update(many=cache.lookup_many([b"a", b"b"])))
    batch.start()
    assert redis.started.wait(DEADLINE)
    single = threading.Thread(target=lambda: results.update(one=cache.lookup(b"a")))
    single.start()
    wait_until(lambda: cache.stats.coalesced == 1)  # the GET joined the batch's fetch
    redis.gate.set()
    batch.join(DEADLINE)
    single.join(DEADLINE)
    assert results["one"] == Read(b"1", False, stored=True, collapsed=True)
    assert values(results["many"]) == [b"1", b"2"]
    assert redis.batches == [[b"a", b"b"]] and redis.calls == {}


def test_a_failed_round_trip_reaches_every_waiter_and_fetches_nothing_more() -> None:
    redis = FakeMget({b"a": b"1"})
    redis.gate = threading.Event()
    redis.error = BackendUnavailable("down")
    cache = batch_cache(redis)
    errors: list[BaseException] = []

    def run(read: Callable[[], object]) -> None:
        try:
            read()
        except BackendError as exc:
            errors.append(exc)

    keys = [b"a", b"b", b"c", b"d", b"e"]  # two chunks: the second is never fetched
    batch = threading.Thread(target=run, args=(lambda: cache.lookup_many(keys),))
    batch.start()
    assert redis.started.wait(DEADLINE)
    waiters = [
        threading.Thread(target=run, args=(lambda k=k: cache.lookup(k),)) for k in (b"a", b"e")
    ]
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: cache.stats.coalesced == 2)
    redis.gate.set()
    for thread in (batch, *waiters):
        thread.join(DEADLINE)
    assert len(errors) == 3 and all(isinstance(exc, BackendUnavailable) for exc in errors)
    assert len(redis.batches) == 1
    redis.error, redis.gate = None, None
    assert values(cache.lookup_many(keys)) == [b"1", None, None, None, None]  # nothing held


def test_stale_values_answer_a_failed_batch_where_they_cover_it() -> None:
    timer = FakeTimer()
    redis = FakeMget({b"a": b"1", b"b": b"2"})
    cache = batch_cache(redis, timer=timer, stale_if_error=30.0)
    cache.lookup_many([b"a", b"b"])
    timer.now = 15.0  # past the TTL of 10 s, within the stale window
    redis.error = BackendTimeout("slow")
    reads = cache.lookup_many([b"a", b"b"])
    assert [(r.value, r.stale) for r in reads] == [(b"1", True), (b"2", True)]  # type: ignore[union-attr]
    with pytest.raises(BackendTimeout):
        cache.lookup_many([b"a", b"never-held"])


def test_a_key_whose_node_failed_has_the_error_in_its_place_and_the_rest_are_held() -> None:
    redis = FakeMget({b"a": b"1", b"b": b"2"})
    redis.failing[b"b"] = BackendUnavailable("its node is down")
    cache = batch_cache(redis)
    reads = cache.lookup_many([b"a", b"b"])
    assert values(reads) == [b"1", redis.failing[b"b"]]
    assert cache.stats.fetch_errors == {"unavailable": 1}
    assert values(cache.lookup_many([b"a", b"b"])) == [b"1", redis.failing[b"b"]]
    assert redis.batches == [[b"a", b"b"], [b"b"]]  # nothing held for it: asked again


def test_a_key_whose_node_failed_answers_stale_within_the_window() -> None:
    timer = FakeTimer()
    redis = FakeMget({b"a": b"1", b"b": b"2"})
    cache = batch_cache(redis, timer=timer, stale_if_error=30.0)
    cache.lookup_many([b"a", b"b"])
    timer.now = 15.0  # past the TTL of 10 s, within the stale window
    redis.failing[b"b"] = BackendTimeout("its node is slow")
    reads = cache.lookup_many([b"a", b"b"])
    assert [(r.value, r.stale) for r in reads] == [(b"1", False), (b"2", True)]  # type: ignore[union-attr]


def test_without_a_batch_loader_keys_are_fetched_one_by_one() -> None:
    redis = FakeRedis({b"a": b"1"})
    assert values(make_cache(redis).lookup_many([b"a", b"b"])) == [b"1", None]
    assert redis.calls == {b"a": 1, b"b": 1}
