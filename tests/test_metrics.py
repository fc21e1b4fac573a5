"""Request stats: one writer per RequestStats, many via PerThreadStats, summed at scrape."""

from __future__ import annotations

import threading

from proxy.metrics import LATENCY_BUCKETS, PerThreadStats, RequestStats


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
