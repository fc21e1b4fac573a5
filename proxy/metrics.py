"""Prometheus metrics for the one worker process (so no prometheus_client multiprocess mode).

Numbers live where they arise (cache stats, per-front-end request stats, the worker's and the
RESP server's connection counts) and are read when /metrics is scraped, so the hot paths pay
for a counter increment, not for a registry. No key ever becomes a label value.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

LATENCY_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
LATENCY_BUCKETS += (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("hit", "miss", "not_found", "stale", "error")
# Why a front end disconnects a client: every one is exported from the start, at 0.
DROP_REASONS = ("request_timeout", "send_timeout", "idle_timeout", "output_limit")
# Why a client or request was refused by the access rules: every one exported from the start.
ACCESS_REFUSALS = ("no_password", "wrong_password", "forbidden_key", "protected_mode")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RequestStats:
    """Read requests by outcome and a latency histogram, written by ONE thread only.

    No lock on the hot path: the RESP loop owns one; HTTP gives each pool thread its own
    (PerThreadStats). A scrape from another thread reads plain ints; the outcome keys exist
    from the start, so the dict never changes size under a reader.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def record(self, outcome: str, seconds: float, count: int = 1) -> None:
        """`count` requests that ended with `outcome`, each taking `seconds`."""
        self.outcomes[outcome] += count
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += count
        self.seconds += seconds * count

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """Outcome counts, per-bucket counts and the total seconds."""
        return dict(self.outcomes), list(self.buckets), self.seconds


class PerThreadStats:
    """RequestStats for many writer threads: each thread records into its own."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[RequestStats] = []
        self._lock = threading.Lock()  # guards _all, taken once per thread

    def record(self, outcome: str, seconds: float, count: int = 1) -> None:
        stats = getattr(self._local, "stats", None)
        if stats is None:
            stats = self._local.stats = RequestStats()
            with self._lock:
                self._all.append(stats)
        stats.record(outcome, seconds, count)

    def snapshot(self) -> tuple[dict[str, int], list[int], float]:
        """The sum over all threads."""
        outcomes, buckets, seconds = RequestStats().snapshot()
        with self._lock:
            parts = [stats.snapshot() for stats in self._all]
        for part_outcomes, part_buckets, part_seconds in parts:
            for outcome, count in part_outcomes.items():
                outcomes[outcome] += count
            buckets = [a + b for a, b in zip(buckets, part_buckets, strict=True)]
            seconds += part_seconds
        return outcomes, buckets, seconds


class Recorder(Protocol):
    """Where a front end records its read requests."""

    def record(self, outcome: str, seconds: float, count: int = 1) -> None: ...

    def snapshot(self) -> tuple[dict[str, int], list[int], float]: ...


class ConnectionCounts(Protocol):
    """What a front end reports about its clients."""

    @property
    def clients(self) -> int: ...

    @property
    def refused(self) -> int: ...

    @property
    def dropped(self) -> Mapping[str, int]:
        """Clients the front end disconnected, by reason (a timeout, a limit)."""
        ...


class CacheCounters(Protocol):
    """The cache's counters as metrics reads them (proxy.entries.CacheStats)."""

    @property
    def fetches(self) -> int: ...
    @property
    def coalesced(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def expirations(self) -> int: ...
    @property
    def invalidations(self) -> int: ...
    @property
    def flushes(self) -> int: ...
    @property
    def too_large(self) -> int: ...
    @property
    def negative_hits(self) -> int: ...
    @property
    def stale_answers(self) -> int: ...
    @property
    def fetch_errors(self) -> Mapping[str, int]: ...


class CacheFigures(Protocol):
    """What metrics reads of the cache."""

    @property
    def stats(self) -> CacheCounters: ...
    @property
    def capacity(self) -> int: ...
    @property
    def byte_capacity(self) -> int | None: ...
    def size(self) -> int: ...
    def held_bytes(self) -> int: ...


class LinkState(Protocol):
    """What metrics reads of the invalidation link (CACHE_INVALIDATION=tracking)."""

    @property
    def connected(self) -> bool: ...
    @property
    def drops(self) -> int: ...


class AccessCounts(Protocol):
    """Clients and requests refused by the access rules (proxy/access.py)."""

    @property
    def refusals(self) -> Mapping[tuple[str, str], int]:
        """(protocol, reason) -> how many."""
        ...


class Metrics:
    """The /metrics endpoint's view of one worker."""

    def __init__(
        self,
        cache: CacheFigures,
        link: LinkState | None = None,
        backend_up: Callable[[], bool] | None = None,
        access: AccessCounts | None = None,
    ) -> None:
        self.cache = cache
        self.access = access
        self.link = link
        self.backend_up = backend_up  # asked at each scrape: does Redis answer PING?
        self.requests: dict[str, Recorder] = {"http": PerThreadStats(), "resp": RequestStats()}
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
        if self.backend_up is not None:
            yield GaugeMetricFamily(
                "proxy_backend_up",
                "1 if Redis answered PING at this scrape (within 0.5 s)",
                int(self.backend_up()),
            )
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
        yield GaugeMetricFamily("proxy_cache_capacity", "CACHE_MAXSIZE", self.cache.capacity)
        yield GaugeMetricFamily(
            "proxy_cache_bytes", "Key and value bytes cached", self.cache.held_bytes()
        )
        if self.cache.byte_capacity is not None:
            yield GaugeMetricFamily(
                "proxy_cache_capacity_bytes", "CACHE_MAXBYTES", self.cache.byte_capacity
            )
        yield CounterMetricFamily(
            "proxy_cache_negative_hits",
            "Reads of a key remembered as absent (CACHE_NEGATIVE_TTL)",
            stats.negative_hits,
        )
        yield CounterMetricFamily(
            "proxy_cache_stale_answers",
            "Reads answered with an expired value as Redis failed (CACHE_STALE_IF_ERROR)",
            stats.stale_answers,
        )
        yield CounterMetricFamily(
            "proxy_cache_too_large",
            "Values served but not cached: over CACHE_MAX_ITEM_BYTES",
            stats.too_large,
        )
        yield CounterMetricFamily(
            "proxy_cache_invalidations", "Keys Redis said changed", stats.invalidations
        )
        yield CounterMetricFamily(
            "proxy_cache_flushes", "FLUSHALL/FLUSHDB seen, or the link lost", stats.flushes
        )
        if self.link is not None:
            yield GaugeMetricFamily(
                "proxy_invalidation_link_up",
                "1 while the CLIENT TRACKING invalidation connection is up",
                int(self.link.connected),
            )
            yield CounterMetricFamily(
                "proxy_invalidation_link_drops", "Invalidation links lost", self.link.drops
            )

    def _clients(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "proxy_connected_clients", "Connected clients", labels=["protocol"]
        )
        refused = CounterMetricFamily(
            "proxy_refused_clients", "Clients refused past MAX_CONNECTIONS", labels=["protocol"]
        )
        dropped = CounterMetricFamily(
            "proxy_dropped_clients",
            "Clients the proxy disconnected, by reason",
            labels=["protocol", "reason"],
        )
        for protocol, front_end in self.connections.items():
            connected.add_metric([protocol], front_end.clients)
            refused.add_metric([protocol], front_end.refused)
            for reason in sorted({*DROP_REASONS, *front_end.dropped}):
                dropped.add_metric([protocol, reason], front_end.dropped.get(reason, 0))
        yield connected
        yield refused
        yield dropped
        if self.access is not None:
            yield self._refusals(self.access)

    def _refusals(self, access: AccessCounts) -> Metric:
        refusals = CounterMetricFamily(
            "proxy_access_refusals",
            "Clients or requests refused: no or a wrong password, a key outside KEY_PATTERNS, "
            "another host in protected mode",
            labels=["protocol", "reason"],
        )
        counts = dict(access.refusals)
        for protocol in self.connections:
            for reason in ACCESS_REFUSALS:
                refusals.add_metric([protocol, reason], counts.get((protocol, reason), 0))
        return refusals
