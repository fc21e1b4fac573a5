"""Request stats (one writer per RequestStats, many via PerThreadStats, summed at scrape), and
what a scrape asks of Redis."""

from __future__ import annotations

import threading

import pytest

from proxy.cache import ReadThroughCache
from proxy.metrics import LATENCY_BUCKETS, Metrics, PerThreadStats, RequestStats


def test_request_stats_count_outcomes_and_bucket_latencies() -> None:
    stats = RequestStats()
    stats.record("hit", 0.00005, count=3)
    stats.record("miss", 0.002)
    stats.record("error", 99.0)
    outcomes, buckets, seconds = stats.snapshot()
    assert outcomes == {"hit": 3, "miss": 1, "not_found": 0, "stale": 0, "error": 1}
    assert buckets[0] == 3  # <= 0.1 ms
    assert buckets[LATENCY_BUCKETS.index(0.0025)] == 1
    assert buckets[-1] == 1  # +Inf
    assert seconds == 3 * 0.00005 + 0.002 + 99.0


def test_per_thread_stats_lose_nothing_under_concurrent_writers() -> None:
    stats = PerThreadStats()

    def write() -> None:
        for _ in range(5000):
            stats.record("hit", 0.0001)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes, buckets, _ = stats.snapshot()
    assert outcomes["hit"] == 40_000
    assert sum(buckets) == 40_000


@pytest.mark.parametrize(("answers", "shown"), [(True, "1.0"), (False, "0.0")])
def test_backend_up_is_asked_at_each_scrape(answers: bool, shown: str) -> None:
    cache = ReadThroughCache(maxsize=10, ttl=60, load=lambda key: (None, None))
    metrics = Metrics(cache, backend_up=lambda: answers)
    assert f"proxy_backend_up {shown}\n" in metrics.exposition().decode()
    assert "proxy_backend_up" not in Metrics(cache).exposition().decode()
