"""Black box: three proxies behind a real HAProxy (deploy/haproxy.cfg), one Redis.

Each proxy has its own cache, kept coherent by CLIENT TRACKING: a write to Redis must be
visible through every proxy within WRITE_VISIBLE_WITHIN, and a proxy stopped mid-run must
cost no request HAProxy could send elsewhere.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import requests

from e2e.background import Background
from harness.balancer import HAProxy
from harness.servers import Proxy, RedisServer, poll

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs HAProxy")

WRITE_VISIBLE_WITHIN = 0.1  # seconds from a write to Redis to every proxy answering it


@pytest.fixture
def redis(redis_factory) -> RedisServer:
    server: RedisServer = redis_factory()
    return server


@pytest.fixture
def three(start_proxy, redis: RedisServer) -> list[Proxy]:
    proxies = [start_proxy(redis, cache_invalidation="tracking", cache_ttl=600) for _ in range(3)]
    for proxy in proxies:
        poll(partial(link_up, proxy), 5, "the link")
    return proxies


def hit(proxy: Proxy, name: str, value: str) -> bool:
    """Does `proxy` answer `value` from its cache? (A read just after a write may be stored
    and then dropped by that write's own invalidation, which can arrive after it.)"""
    response = proxy.get(f"/get/{name}")
    return response.content == value.encode() and response.headers["Cache-Status"].endswith("hit")


def link_up(proxy: Proxy) -> bool:
    return proxy.metric("proxy_invalidation_link_up") == 1


@pytest.fixture
def haproxy(three: list[Proxy], tmp_path: Path) -> Iterator[HAProxy]:
    balancer = HAProxy(three, tmp_path / "haproxy.log").start()
    yield balancer
    balancer.stop()


def seconds_until_visible(
    proxies: list[Proxy], name: str, value: bytes, write: Callable[[], object]
) -> list[float]:
    """Run `write`, and how long after it each proxy first answered `value` for `name`: a
    thread per proxy polls it, ready before the write."""
    written: list[float] = []
    go = threading.Event()
    seen: dict[int, float] = {}

    def watch(proxy: Proxy) -> None:
        session = requests.Session()
        assert go.wait(10)
        while time.monotonic() < written[0] + 5:
            if session.get(f"{proxy.url}/get/{name}", timeout=5).content == value:
                seen[proxy.port] = time.monotonic() - written[0]
                return

    watchers = [threading.Thread(target=watch, args=(proxy,)) for proxy in proxies]
    for watcher in watchers:
        watcher.start()
    write()
    written.append(time.monotonic())
    go.set()
    for watcher in watchers:
        watcher.join(10)
    assert len(seen) == len(proxies), f"some proxy never answered the new value: {seen}"
    return list(seen.values())


def test_a_write_is_visible_through_every_proxy_within_100_ms(
    three: list[Proxy], haproxy: HAProxy, redis: RedisServer, key
) -> None:
    name = key("coherent")
    delays: list[float] = []
    for round_number in range(5):
        redis.client.set(name, f"v{round_number}")
        for proxy in three:  # each caches the value, then answers it from its cache
            poll(partial(hit, proxy, name, f"v{round_number}"), 5, "the value cached")
        new = f"v{round_number + 1}"
        write = partial(redis.client.set, name, new)
        delays += seconds_until_visible(three, name, new.encode(), write)
    through = Counter(
        requests.get(f"{haproxy.url}/get/{name}", timeout=5).content for _ in range(30)
    )
    print(
        f"\na write to Redis visible through each of three proxies after: median "
        f"{statistics.median(delays) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms (5 writes)"
    )
    assert max(delays) < WRITE_VISIBLE_WITHIN
    assert through == Counter({b"v5": 30})


class Clients(Background):
    """Threads reading through HAProxy on kept-alive connections until stopped."""

    def __init__(self, url: str, keys: list[str], threads: int = 4) -> None:
        super().__init__([self._read] * threads)
        self.url, self.keys = url, keys

    def _read(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            for name in self.keys:
                try:
                    status = session.get(f"{self.url}/get/{name}", timeout=10).status_code
                except requests.RequestException as exc:
                    self.outcomes[type(exc).__name__] += 1
                else:
                    self.outcomes[str(status)] += 1


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_proxy_stopped_mid_run_fails_no_request(
    three: list[Proxy], haproxy: HAProxy, redis: RedisServer, key, how: str
) -> None:
    keys = [key(str(n)) for n in range(20)]
    for name in keys:
        redis.client.set(name, name)
    with Clients(haproxy.url, keys) as clients:
        poll(lambda: clients.outcomes.total() > 300, 10, "reads before the stop")
        if how == "terminate":
            three[1].terminate()  # SIGTERM, as an orchestrator stops it
        else:
            assert three[1].process is not None
            three[1].process.kill()  # a crash: connections reset under requests
            three[1].process.wait(10)
        poll(lambda: haproxy.servers_up() == 2, 10, "HAProxy to take it out")
        seen = clients.outcomes.total()
        poll(lambda: clients.outcomes.total() > seen + 300, 10, "reads after the stop")
    print(f"\n{how}: reads through HAProxy {dict(clients.outcomes)}")
    assert set(clients.outcomes) == {"200"}
