"""Black box: 50 clients over hits, misses, evictions and expiries while values change."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests

CLIENTS = 50
REQUESTS_PER_CLIENT = 80
KEYS = 60
CAPACITY = 20  # far fewer than KEYS: constant eviction


def test_many_clients_only_ever_see_values_stored_under_their_key(
    start_proxy, redis_factory
) -> None:
    redis = redis_factory()
    names = [f"stress:{i}" for i in range(KEYS)]
    history: dict[str, set[bytes]] = {name: set() for name in names}

    def write(name: str, version: int) -> None:
        value = f"{name}=v{version}".encode()
        history[name].add(value)  # recorded before Redis has it, so no read can beat it
        redis.client.set(name, value)

    for name in names:
        write(name, 0)
    proxy = start_proxy(
        redis, cache_maxsize=CAPACITY, cache_ttl=0.2, max_parallel=4, max_connections=80
    )
    gets_before = redis.get_calls()

    stop_writing = threading.Event()

    def writer() -> None:
        rng, version = random.Random(1), 0
        while not stop_writing.is_set():
            version += 1
            write(rng.choice(names), version)

    def client(seed: int) -> list[str]:
        rng, problems = random.Random(seed), []
        with requests.Session() as session:
            for _ in range(REQUESTS_PER_CLIENT):
                name = rng.choice(names[: KEYS // 3] if rng.random() < 0.7 else names)
                response = session.get(f"{proxy.url}/get/{quote(name)}", timeout=30)
                if response.status_code != 200:
                    problems.append(f"{name}: HTTP {response.status_code} {response.text[:80]}")
                elif response.content not in history[name]:
                    problems.append(f"{name}: {response.content!r} was never stored there")
        return problems

    sizes: list[float] = []

    def sampler() -> None:  # the cache's size, as /metrics reports it, all through the run
        while not stop_writing.is_set():
            sizes.append(proxy.metric("proxy_cache_entries"))

    background = [threading.Thread(target=writer), threading.Thread(target=sampler)]
    for thread in background:
        thread.start()
    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            problems = [p for found in pool.map(client, range(CLIENTS)) for p in found]
    finally:
        stop_writing.set()
        for thread in background:
            thread.join(10)

    assert problems == []
    assert len(sizes) >= 10
    assert max(sizes) <= CAPACITY
    assert proxy.metric("proxy_cache_evictions_total") > 0
    assert proxy.metric("proxy_cache_expirations_total") > 0
    backend_gets = redis.get_calls() - gets_before
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert 0 < backend_gets < total  # both hits and misses really happened
    print(
        f"{total} requests, {backend_gets} went to Redis, {total - backend_gets} cache hits; "
        f"{len(sizes)} size samples, largest {max(sizes):.0f} (capacity {CAPACITY})"
    )
