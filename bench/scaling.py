"""How the proxy's cost grows with its work, side by side in one run: hits with 1,000,000 keys
cached against the usual 10,000 ("HTTP hit"), the worker's memory per entry at 1,000,000,
and a cold MGET of 1, 10, 100 and 1,000 keys against redis-server's own MGET of the same
keys (misses at 1, 10 and 50 clients are among bench/run.py's HTTP scenarios). bench/run.py
runs them; scaling_chart() draws bench/scaling.png.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

from bench.report import Result
from bench.workload import VALUE, key_name
from harness.servers import Proxy

LARGE = 1_000_000  # entries in the large proxy's cache
HIT_LARGE = "HTTP hit, 1,000,000 keys cached"
MGET_SIZES = (1, 10, 100, 1_000)
MGET_SAMPLES = 15  # cold MGETs per size (each of keys never read before), and as many direct
MGET_FIRST_KEY = 2 * LARGE  # cold keys are numbered from here: never cached by any proxy
MEMORY_AT_LARGE = "memory per cached entry at 1,000,000 entries"


def seed_range(client: redis.Redis, start: int, stop: int) -> None:
    """SET key_name(i) for i in [start, stop), 10,000 per round trip."""
    pipe = client.pipeline(transaction=False)
    for i in range(start, stop):
        pipe.set(key_name(i), VALUE)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def fill(proxy: Proxy, entries: int) -> None:
    """Cache keys 0..entries-1 in `proxy`, 1,000 per MGET."""
    client = redis.Redis(port=proxy.resp_port)
    for start_at in range(0, entries, 1_000):
        client.mget([key_name(i) for i in range(start_at, min(entries, start_at + 1_000))])


def memory_at_large(proxy: Proxy, rss: Callable[[int], int]) -> Result:
    """Fill the large proxy, and what it cost its worker per entry beyond key and value."""
    redis.Redis(port=proxy.resp_port).mget([key_name(0)])  # code paths loaded first
    empty = rss(proxy.worker_pid())
    fill(proxy, LARGE)
    assert proxy.metric("proxy_cache_entries") == LARGE
    per_entry = (rss(proxy.worker_pid()) - empty) / LARGE - (len(key_name(0)) + len(VALUE))
    return Result(MEMORY_AT_LARGE, 0, per_entry, 0, 0, None, "bytes beyond key+value")


def cold_mgets(proxy: Proxy, backing_port: int) -> list[Result]:
    """Median latency of a cold MGET of each size through the proxy and straight to Redis,
    the two alternating, each through its own redis-py client."""
    through = redis.Redis(port=proxy.resp_port, socket_timeout=30)
    direct = redis.Redis(port=backing_port, socket_timeout=30)
    results, first = [], MGET_FIRST_KEY
    for size in MGET_SIZES:
        mine, theirs = [], []
        for _ in range(MGET_SAMPLES):
            names = [key_name(i) for i in range(first, first + size)]
            first += size
            theirs.append(_timed(partial(direct.mget, names)))
            mine.append(_timed(partial(through.mget, names)))
        for server, samples in (("redis-server", theirs), ("proxy", mine)):
            median = statistics.median(samples) * 1000
            name = mget_name(server, size)
            results.append(Result(name, 1, median, median, max(samples) * 1000, None, "ms"))
    return results


def mget_name(server: str, size: int) -> str:
    return f"cold MGET of {size:,} key{'s' if size > 1 else ''}, {server}"


def cold_keys_needed() -> int:
    """How many cold keys cold_mgets() reads (seeded from MGET_FIRST_KEY)."""
    return MGET_SAMPLES * sum(MGET_SIZES)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def scaling_chart(results: list[Result], path: Path) -> None:
    """Four panels: hits by cache size, memory per entry, cold MGET latency by size, and
    misses by concurrent clients."""
    import matplotlib  # noqa: PLC0415 - only the benchmark needs it, and it is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    def value(name: str, connections: int) -> float:
        return next(r.value for r in results if r.name == name and r.connections == connections)

    figure, ((hits, memory), (mgets, misses)) = plt.subplots(2, 2, figsize=(11, 7.5))
    hits.bar(["10,000 cached", "1,000,000 cached"], [value("HTTP hit", 50), value(HIT_LARGE, 50)])
    hits.set_title("HTTP hits, 50 connections (req/s)")
    memory.bar(
        ["100,000 entries", "1,000,000 entries"],
        [value("memory per cached entry", 0), value(MEMORY_AT_LARGE, 0)],
    )
    memory.set_title("worker memory per entry, beyond key and value (bytes)")
    for server in ("redis-server", "proxy"):
        mgets.plot(
            MGET_SIZES, [value(mget_name(server, n), 1) for n in MGET_SIZES], "o-", label=server
        )
    mgets.set(xscale="log", yscale="log", title="cold MGET latency (ms, median)", xlabel="keys")
    mgets.legend()
    clients = (1, 10, 50)
    misses.plot(clients, [value("HTTP miss", c) for c in clients], "o-")
    misses.set(title="HTTP misses (req/s)", xlabel="concurrent clients", xscale="log")
    misses.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
