"""Black box: CACHE_INVALIDATION=tracking keeps the cache coherent with the real Redis."""

from __future__ import annotations

import random
import statistics
import threading
import time

import pytest
import requests

from harness.servers import poll

VISIBLE_WITHIN = 0.1  # seconds: a change in Redis must show through the proxy this fast
WRITES = 1000  # in the concurrent test


@pytest.fixture
def tracked(start_proxy, redis_factory):
    backing = redis_factory()
    proxy = start_proxy(backing, cache_invalidation="tracking", cache_ttl=600)
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")
    return backing, proxy


def seconds_until(condition, deadline: float = 2.0) -> float:
    started = time.monotonic()
    poll(condition, deadline, "the change to show through the proxy")
    return time.monotonic() - started


def test_set_of_a_cached_key_shows_within_100_ms_p99_over_200_writes(tracked) -> None:
    backing, proxy = tracked
    session = requests.Session()

    def read() -> bytes:
        return session.get(f"{proxy.url}/get/counter", timeout=5).content

    backing.client.set("counter", b"0")
    assert read() == b"0"
    delays = []
    for version in range(1, 201):
        value = str(version).encode()
        assert read() != value  # cached: the old value, until Redis says it changed
        backing.client.set("counter", value)
        delays.append(seconds_until(lambda value=value: read() == value))
    p50 = statistics.median(delays)
    p99 = statistics.quantiles(delays, n=100)[98]
    print(
        f"SET visible through the proxy: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(delays) * 1000:.1f} ms over {len(delays)} writes"
    )
    assert p99 < VISIBLE_WITHIN
    assert proxy.metric("proxy_cache_invalidations_total") >= 200


def test_del_of_a_cached_key_is_404_within_100_ms(tracked) -> None:
    backing, proxy = tracked
    backing.client.set("doomed", b"here")
    assert proxy.get("/get/doomed").status_code == 200
    backing.client.delete("doomed")
    assert seconds_until(lambda: proxy.get("/get/doomed").status_code == 404) < VISIBLE_WITHIN


def test_flushall_empties_the_cache(tracked) -> None:
    backing, proxy = tracked
    for name in ("a", "b", "c"):
        backing.client.set(name, name)
        proxy.get(f"/get/{name}")
    assert proxy.metric("proxy_cache_entries") == 3
    backing.client.flushall()
    poll(lambda: proxy.metric("proxy_cache_entries") == 0, VISIBLE_WITHIN * 5, "an empty cache")
    assert proxy.get("/get/a").status_code == 404


def test_killed_invalidation_link_clears_the_cache_and_tracking_resumes(tracked) -> None:
    backing, proxy = tracked
    backing.client.set("k", b"before")
    assert proxy.get("/get/k").content == b"before"
    [link] = [c for c in backing.client.client_list() if c["name"].endswith("-invalidation")]
    backing.client.client_kill_filter(_id=link["id"])
    poll(lambda: proxy.metric("proxy_invalidation_link_drops_total") == 1, 5, "the drop noticed")
    assert proxy.metric("proxy_cache_flushes_total") >= 1
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the link to come back")
    backing.client.set("k", b"after")
    assert proxy.get("/get/k").content == b"after"  # the cache was cleared
    backing.client.set("k", b"tracked again")
    assert seconds_until(lambda: proxy.get("/get/k").content == b"tracked again") < VISIBLE_WITHIN


def test_writes_to_keys_the_proxy_never_read_cost_no_invalidations(tracked) -> None:
    """Default tracking mode, not BCAST: Redis only reports keys this proxy read."""
    backing, proxy = tracked
    backing.client.set("read-me", b"1")
    proxy.get("/get/read-me")
    for i in range(1000):
        backing.client.set(f"unrelated:{i}", b"x")
    backing.client.set("read-me", b"2")
    poll(lambda: proxy.get("/get/read-me").content == b"2", 1, "the one tracked key")
    assert proxy.metric("proxy_cache_invalidations_total") == 1


def test_concurrent_writes_never_leave_a_value_stale_beyond_100_ms(tracked) -> None:
    backing, proxy = tracked
    names = [f"hot:{i}" for i in range(10)]
    written: dict[str, list[tuple[float, int]]] = {name: [] for name in names}  # (done at, v)
    for name in names:
        backing.client.set(name, b"0")
        written[name].append((time.monotonic(), 0))
    stop = threading.Event()
    stale: list[str] = []

    def writer() -> None:
        rng = random.Random(7)
        for version in range(1, WRITES + 1):
            name = rng.choice(names)
            backing.client.set(name, str(version).encode())
            written[name].append((time.monotonic(), version))
        stop.set()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            while not stop.is_set():
                name = rng.choice(names)
                asked = time.monotonic()
                got = int(session.get(f"{proxy.url}/get/{name}", timeout=5).content)
                # Every write completed 100 ms before we asked must be visible (or superseded).
                settled = [v for done, v in list(written[name]) if done < asked - VISIBLE_WITHIN]
                if settled and got < settled[-1]:
                    stale.append(f"{name}: got v{got}, v{settled[-1]} was written >100 ms before")

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(n,)) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert stale == []
    print(f"{WRITES} writes under 8 readers; none stale beyond {VISIBLE_WITHIN * 1000:.0f} ms")


def test_without_tracking_the_ttl_alone_decides(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    proxy = start_proxy(backing, cache_ttl=600)  # CACHE_INVALIDATION=none, the default
    backing.client.set("k", b"old")
    assert proxy.get("/get/k").content == b"old"
    backing.client.set("k", b"new")
    reads = [proxy.get("/get/k").content for _ in range(20)]
    assert reads == [b"old"] * 20
    assert proxy.metric("proxy_cache_invalidations_total") == 0
