"""Prometheus metrics for the one worker process (so no prometheus_client multiprocess mode).

Numbers live where they arise (cache stats, per-front-end request stats, the worker's and the
RESP server's connection counts) and are read when /metrics is scraped, so the hot paths pay
for a counter increment, not for a registry. No key ever becomes a label value.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy.cache import ReadThroughCache

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
LATENCY_BUCKETS += (0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("hit", "miss", "not_found", "error")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestStats:
    """Read requests of one front end: counts by outcome and a latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def record(self, outcome: str, seconds: float, count: int = 1) -> None:
        """`count` requests that ended with `outcome`, each taking `seconds`."""
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self.outcomes[outcome] += count
            self.buckets[index] += count
            self.seconds += seconds * count

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """Outcome counts, per-bucket counts and the total seconds, consistent with each other."""
        with self._lock:
            return dict(self.outcomes), list(self.buckets), self.seconds


class ConnectionCounts(Protocol):
    """What a front end reports about its clients."""

    @property
    def clients(self) -> int: ...

    @property
    def refused(self) -> int: ...


class Metrics:
    """The /metrics endpoint's view of one worker."""

    def __init__(self, cache: ReadThroughCache) -> None:
        self.cache = cache
        self.requests = {"http": RequestStats(), "resp": RequestStats()}
        self.connections: dict[str, ConnectionCounts] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)  # as a collector: collect() below

    def watch_connections(self, protocol: str, front_end: ConnectionCounts) -> None:
        self.connections[protocol] = front_end

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._cache()
        yield from self._clients()

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "proxy_requests", "Read requests (GET, MGET) by outcome", labels=["protocol", "outcome"]
        )
        latency = HistogramMetricFamily(
            "proxy_request_duration_seconds", "Read request latency", labels=["protocol"]
        )
        for protocol, stats in self.requests.items():
            outcomes, buckets, total = stats.snapshot()
            for outcome in OUTCOMES:
                requests.add_metric([protocol, outcome], outcomes.get(outcome, 0))
            bounds = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
            cumulative = [sum(buckets[: i + 1]) for i in range(len(buckets))]
            latency.add_metric([protocol], list(zip(bounds, cumulative, strict=True)), total)
        yield requests
        yield latency

    def _cache(self) -> Iterator[Metric]:
        stats = self.cache.stats
        yield CounterMetricFamily("proxy_backend_requests", "GETs sent to Redis", stats.fetches)
        errors = CounterMetricFamily(
            "proxy_backend_errors", "Failed GETs to Redis by kind", labels=["kind"]
        )
        for kind in ("unavailable", "timeout", "wrong_type", "rejected", "other"):
            errors.add_metric([kind], stats.fetch_errors.get(kind, 0))
        yield errors
        yield CounterMetricFamily(
            "proxy_cache_coalesced", "Misses that shared another fetch", stats.coalesced
        )
        yield CounterMetricFamily("proxy_cache_evictions", "LRU evictions", stats.evictions)
        yield CounterMetricFamily("proxy_cache_expirations", "TTL expirations", stats.expirations)
        yield GaugeMetricFamily("proxy_cache_entries", "Keys in the cache", self.cache.size())
        yield GaugeMetricFamily("proxy_cache_capacity", "CACHE_MAXSIZE", self.cache.maxsize)

    def _clients(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "proxy_connected_clients", "Connected clients", labels=["protocol"]
        )
        refused = CounterMetricFamily(
            "proxy_refused_clients", "Clients refused past MAX_CONNECTIONS", labels=["protocol"]
        )
        for protocol, front_end in self.connections.items():
            connected.add_metric([protocol], front_end.clients)
            refused.add_metric([protocol], front_end.refused)
        yield connected
        yield refused
