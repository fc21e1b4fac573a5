"""Black box: the proxy behind Redis Sentinel, through failovers.

Real processes: a master, a replica and three Sentinels on loopback; the proxy finds the master
through them (REDIS_SENTINELS, REDIS_SENTINEL_MASTER). Readers over HTTP and RESP read keys
throughout a failover; every answer must be a value once stored under its key, or an error.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from harness.servers import RedisServer, SentinelServer, poll

NAME = "mymaster"
KEYS = [f"sentinel:{index}" for index in range(20)]
SWITCH_DEADLINE = 15.0  # seconds for Sentinel to elect and promote; generous
BACK_WITHIN = 1.0  # misses work again this soon after Sentinel names the new master


@dataclass
class Group:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", NAME)
                return int(port)
            except redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def server(self, port: int) -> RedisServer:
        return self.master if self.master.port == port else self.replica

    def ready(self) -> bool:
        """Every Sentinel knows the replica and the two other Sentinels."""
        try:
            return all(
                len(s.client.execute_command("SENTINEL REPLICAS", NAME)) == 1
                and len(s.client.execute_command("SENTINEL SENTINELS", NAME)) == 2
                for s in self.sentinels
            )
        except redis.RedisError:
            return False


@pytest.fixture
def group(tmp_path: Path, redis_factory) -> Iterator[Group]:
    master = redis_factory()
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    sentinels = [SentinelServer(tmp_path / f"sentinel-{n}", master.port) for n in range(3)]
    for sentinel in sentinels:
        sentinel.start()
    found = Group(master, replica, sentinels)
    poll(found.ready, 20, "the Sentinels to know each other and the replica")
    for key in KEYS:
        master.client.set(key, f"v0:{key}")
    master.client.wait(1, 5000)  # the replica has every key
    yield found
    for sentinel in sentinels:
        sentinel.stop()


@dataclass
class Readers:
    """Threads reading KEYS over HTTP and RESP until stopped, checking every value."""

    http_url: str
    resp_port: int
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    misses: list[tuple[float, int]] = field(default_factory=list)  # (answered at, status)
    stop: threading.Event = field(default_factory=threading.Event)

    def http(self, seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        while not self.stop.is_set():
            key = rng.choice(KEYS)
            try:
                response = session.get(f"{self.http_url}/get/{key}", timeout=5)
            except requests.RequestException as exc:
                self.statuses[f"http {type(exc).__name__}"] += 1
                continue
            self.statuses[f"http {response.status_code}"] += 1
            if response.status_code == 200:
                self.check(key, response.content)

    def resp(self, seed: int) -> None:
        rng = random.Random(seed)
        client = redis.Redis(port=self.resp_port, protocol=2, socket_timeout=5)
        while not self.stop.is_set():
            key = rng.choice(KEYS)
            try:
                value = client.get(key)
            except redis.RedisError as exc:
                self.statuses[f"resp {str(exc).split(' ')[0]}"] += 1
                continue
            self.statuses["resp value"] += 1
            self.check(key, value if isinstance(value, bytes) else None)

    def miss(self) -> None:
        """Keys Redis never has: each read goes to Redis (404), or fails while it cannot."""
        session, number = requests.Session(), 0
        while not self.stop.is_set():
            number += 1
            status = session.get(f"{self.http_url}/get/absent:{number}", timeout=5).status_code
            self.misses.append((time.monotonic(), status))

    def check(self, key: str, value: bytes | None) -> None:
        if value is None or not value.decode().endswith(f":{key}"):
            self.wrong.append(f"{key} read {value!r}")

    def run(self, during: Callable[[], None]) -> None:
        threads = [threading.Thread(target=self.http, args=(n,)) for n in range(2)]
        threads += [threading.Thread(target=self.resp, args=(n,)) for n in range(2)]
        threads.append(threading.Thread(target=self.miss))
        for thread in threads:
            thread.start()
        try:
            during()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(10)


def kill_master(group: Group) -> None:
    group.server(group.master_port()).stop(kill=True)


def sentinel_failover(group: Group) -> None:
    group.sentinels[0].client.execute_command("SENTINEL FAILOVER", NAME)


@pytest.mark.parametrize("invalidation", ["none", "tracking"])
@pytest.mark.parametrize("failover", [kill_master, sentinel_failover], ids=["kill", "command"])
def test_reads_go_on_through_a_failover_and_misses_return_within_a_second(
    start_proxy, group: Group, failover, invalidation: str
) -> None:
    proxy = start_proxy(
        group.master,
        redis_url="redis://127.0.0.1:1/0",  # the address is the Sentinels' to give
        redis_sentinels=group.addresses,
        redis_sentinel_master=NAME,
        redis_timeout=0.5,
        cache_invalidation=invalidation,
        cache_stale_if_error=30,
    )
    if invalidation == "tracking":
        poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")
    for key in KEYS:
        assert proxy.get(f"/get/{key}").status_code == 200  # cached
    readers = Readers(proxy.url, proxy.resp_port)
    old_port = group.master_port()
    switched: list[float] = []

    def during() -> None:
        time.sleep(0.3)  # some reads before the failover
        switched.append(time.monotonic())
        failover(group)
        poll(lambda: group.master_port() != old_port, SWITCH_DEADLINE, "the new master")
        switched.append(time.monotonic())
        new = group.server(group.master_port())
        fresh = f"fresh:{time.monotonic()}"
        new.client.set(fresh, b"v1:" + fresh.encode())
        poll(lambda: proxy.get(f"/get/{fresh}").status_code == 200, 5, "a miss to work")
        switched.append(time.monotonic())
        key = KEYS[0]
        new.client.set(key, f"v1:{key}")
        if invalidation == "tracking":  # tracking resumes against the new master
            poll(lambda: proxy.get(f"/get/{key}").content == f"v1:{key}".encode(), 5, "v1")
            poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the link back")
            assert proxy.get(f"/get/{key}").content == f"v1:{key}".encode()  # cached again
            new.client.set(key, f"v2:{key}")
            poll(lambda: proxy.get(f"/get/{key}").content == f"v2:{key}".encode(), 0.1, "v2")
        time.sleep(0.3)  # some reads after

    readers.run(during)
    started, named, miss_worked = switched
    failed = [at for at, status in readers.misses if status != 404]
    print(
        f"\n{failover.__name__}, {invalidation}: cached keys {dict(readers.statuses)}; "
        f"misses {dict(Counter(status for _, status in readers.misses))}, the last failure "
        f"{(max(failed, default=started) - started) * 1000:.0f} ms into the failover; Sentinel "
        f"named the new master after {(named - started) * 1000:.0f} ms, and a miss of a new "
        f"key worked {(miss_worked - named) * 1000:.0f} ms later"
    )
    assert readers.wrong == []
    assert set(readers.statuses) == {"http 200", "resp value"}  # cached keys never failed
    assert {status for _, status in readers.misses} <= {404, 503, 504}
    assert all(started <= at < named + BACK_WITHIN for at in failed)
    assert miss_worked - named < BACK_WITHIN
    assert proxy.get("/readyz").status_code == 200
