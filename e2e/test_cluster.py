"""Black box: the proxy in front of a real Redis Cluster (REDIS_CLUSTER=yes).

Three redis-servers with `cluster-enabled` on loopback, the slots split between them
(harness/cluster.py); the proxy is given one node's address and finds the rest through
redis-py's RedisCluster. Keys of every primary are read over HTTP and RESP; a slot is moved
between primaries under reads; a primary is stopped and started again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
import requests
from redis.crc import key_slot

from e2e.background import Background
from harness.cluster import Cluster
from harness.servers import Proxy, poll

VISIBLE_WITHIN = 1.0  # seconds for a write to reach the cache through tracking; generous


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that only read and write their own keys."""
    started = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield started
    started.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for tests that move slots or stop nodes."""
    started = Cluster(tmp_path / "cluster").start()
    yield started
    started.stop()


def start_on(start_proxy, cluster: Cluster, **settings: object) -> Proxy:
    proxy: Proxy = start_proxy(cluster.nodes[0], redis_cluster="yes", **settings)
    if settings.get("cache_invalidation") == "tracking":
        poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 10, "every primary's link")
    return proxy


def answers(proxy: Proxy, name: str, value: str) -> bool:
    return proxy.get(f"/get/{name}").content == value.encode()


def seed(cluster: Cluster, prefix: str, per_node: int = 4) -> list[str]:
    """Keys on every primary, each holding its own name."""
    keys = list(cluster.keys_per_node(prefix, per_node))
    client = cluster.client()
    for name in keys:
        client.set(name, name)
    return keys


def test_the_proxy_starts_while_the_cluster_is_down_and_reads_once_it_is_up(
    start_proxy, tmp_path: Path
) -> None:
    later = Cluster(tmp_path / "later")  # its ports reserved, nothing started yet
    proxy: Proxy = start_proxy(later.nodes[0], redis_cluster="yes", cache_invalidation="tracking")
    try:
        ready = proxy.get("/readyz")
        assert (ready.status_code, ready.json()["error"]) == (503, "not_ready")
        assert "cluster cannot answer" in ready.json()["detail"]
        assert proxy.get("/get/k").status_code == 503
        later.start()
        later.client().set("k", "v")
        poll(lambda: proxy.get("/get/k").content == b"v", 10, "reads once the cluster is up")
        poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 10, "every link")
    finally:
        later.stop()


def test_keys_of_every_primary_are_read_over_http(start_proxy, cluster: Cluster, key) -> None:
    keys = seed(cluster, key("http"))
    proxy = start_on(start_proxy, cluster)
    assert {cluster.owner(name).port for name in keys} == {n.port for n in cluster.nodes}
    for name in keys:
        miss = proxy.get(f"/get/{name}")
        assert (miss.status_code, miss.content) == (200, name.encode())
        hit = proxy.get(f"/get/{name}")
        assert hit.headers["Cache-Status"] == "redis-cache-proxy; hit"
    assert proxy.get(f"/get/{key('absent')}").status_code == 404


def test_an_mget_across_slots_answers_in_order(start_proxy, cluster: Cluster, key) -> None:
    keys = seed(cluster, key("mget"))
    absent = key("absent")
    cluster.client().lpush(key("list"), "x")
    proxy = start_on(start_proxy, cluster)
    client = redis.Redis(port=proxy.resp_port, protocol=2)
    asked = [keys[-1], absent, *keys[:-1], key("list")]
    expected = [keys[-1].encode(), None, *(n.encode() for n in keys[:-1]), None]
    assert client.mget(asked) == expected  # cold: every primary asked at once
    assert client.mget(asked) == expected  # hits


def test_pipelined_gets_across_slots_each_get_their_own_reply(
    start_proxy, cluster: Cluster, key
) -> None:
    keys = seed(cluster, key("pipe"))
    cluster.client().lpush(key("list"), "x")
    proxy = start_on(start_proxy, cluster)
    pipe = redis.Redis(port=proxy.resp_port, protocol=2).pipeline(transaction=False)
    for name in [*keys, key("list")]:
        pipe.get(name)
    *values, wrong = pipe.execute(raise_on_error=False)
    assert values == [name.encode() for name in keys]
    assert isinstance(wrong, redis.ResponseError) and str(wrong).startswith("WRONGTYPE")


def test_credentials_in_the_url_reach_every_node_and_every_link(
    start_proxy, cluster: Cluster, key
) -> None:
    keys = seed(cluster, key("acl"))
    user = f"proxy-{key('user').split(':')[0]}"  # ACL users are per node, and per test here
    for node in cluster.nodes:
        # &__redis__:invalidate: Redis 7 gives new users no channel, and the links subscribe
        node.client.execute_command(
            "ACL SETUSER", user, "on", ">secret", "~*", "&__redis__:invalidate", "+@all"
        )
    url = cluster.nodes[2].url.replace("redis://", f"redis://{user}:secret@")
    proxy = start_on(start_proxy, cluster, redis_url=url, cache_invalidation="tracking")
    assert [proxy.get(f"/get/{name}").content for name in keys] == [n.encode() for n in keys]
    for node in cluster.nodes:
        names = {c["name"] for c in node.client.client_list() if c["user"] == user}
        assert names == {"redis-cache-proxy", "redis-cache-proxy-invalidation"}


def test_a_cluster_over_tls_is_read_and_tracked(start_proxy, tmp_path: Path, key) -> None:
    secure = Cluster(tmp_path / "tls", tls=True).start()
    try:
        keys = seed(secure, key("tls"))
        proxy = start_on(start_proxy, secure, cache_invalidation="tracking")
        assert secure.url.startswith("rediss://")
        assert [proxy.get(f"/get/{name}").content for name in keys] == [n.encode() for n in keys]
        secure.client().set(keys[0], f"new:{keys[0]}")
        poll(partial(answers, proxy, keys[0], f"new:{keys[0]}"), VISIBLE_WITHIN, "the write")
    finally:
        secure.stop()


def test_writes_on_every_primary_reach_the_cache(start_proxy, cluster: Cluster, key) -> None:
    keys = seed(cluster, key("tracked"))
    proxy = start_on(start_proxy, cluster, cache_invalidation="tracking", cache_ttl=600)
    for name in keys:
        assert proxy.get(f"/get/{name}").content == name.encode()  # cached for 10 minutes
    client = cluster.client()
    for name in keys:
        client.set(name, f"new:{name}")
    for name in keys:
        poll(partial(answers, proxy, name, f"new:{name}"), VISIBLE_WITHIN, name)


class Readers(Background):
    """Threads reading `keys` through the proxy over HTTP and RESP until stopped; every
    value must be the key's own name, or its newer one."""

    def __init__(self, proxy: Proxy, keys: list[str]) -> None:
        super().__init__([self._http, self._resp])
        self.proxy, self.keys = proxy, keys
        self.wrong: list[str] = []

    def _http(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            for name in self.keys:
                response = session.get(f"{self.proxy.url}/get/{name}", timeout=5)
                self._check("http", name, response.status_code, response.content)

    def _resp(self) -> None:
        client = redis.Redis(port=self.proxy.resp_port, protocol=2, socket_timeout=5)
        while not self.stop.is_set():
            try:
                values = client.mget(self.keys)
            except redis.RedisError as exc:
                self.outcomes[f"resp {str(exc).split(' ')[0]}"] += 1
                continue
            for name, value in zip(self.keys, values, strict=True):
                self._check("resp", name, 200, value if isinstance(value, bytes) else b"")

    def both_read(self, more_than: Counter[str]) -> bool:
        """Each protocol has read more than `more_than` says, by at least a round of keys."""
        return all(
            self.outcomes[f"{protocol} 200"] >= more_than[f"{protocol} 200"] + len(self.keys)
            for protocol in ("http", "resp")
        )

    def _check(self, protocol: str, name: str, status: int, value: bytes) -> None:
        self.outcomes[f"{protocol} {status}"] += 1
        if status == 200 and value not in (name.encode(), f"new:{name}".encode()):
            self.wrong.append(f"{name} read {value!r}")


def test_a_slot_moved_under_reads_keeps_values_right_and_tracking_working(
    start_proxy, own_cluster: Cluster
) -> None:
    keys = [f"{{moving}}:{n}" for n in range(300)]  # one slot, moved 10 keys at a time
    client = own_cluster.client()
    for name in keys:
        client.set(name, name)
    read = keys[::15]  # keys moved early, late and in between
    proxy = start_on(start_proxy, own_cluster, cache_invalidation="tracking", cache_ttl=600)
    source = own_cluster.owner(keys[0])
    target = next(node for node in own_cluster.nodes if node is not source)
    with Readers(proxy, read) as readers:
        poll(lambda: readers.both_read(Counter()), 10, "reads before the move")
        own_cluster.move_slot(key_slot(keys[0].encode()), source, target)
        seen = readers.outcomes.copy()
        poll(lambda: readers.both_read(seen), 10, "reads after the move")
    print(f"\nreads across the move: {dict(readers.outcomes)}")
    assert own_cluster.owner(keys[0]) is target
    assert readers.wrong == []
    assert set(readers.outcomes) == {"http 200", "resp 200"}
    target.client.set(keys[0], f"new:{keys[0]}")  # the new owner's link hears it
    changed = f"new:{keys[0]}".encode()
    poll(lambda: proxy.get(f"/get/{keys[0]}").content == changed, VISIBLE_WITHIN, "the write")


def test_a_new_primary_gets_a_link_before_the_cache_stores_again(
    start_proxy, own_cluster: Cluster
) -> None:
    keys = [f"{{growing}}:{n}" for n in range(5)]
    client = own_cluster.client()
    for name in keys:
        client.set(name, name)
    proxy = start_on(start_proxy, own_cluster, cache_invalidation="tracking", cache_ttl=600)
    for name in keys:
        assert proxy.get(f"/get/{name}").content == name.encode()
    new = own_cluster.add_node()
    own_cluster.move_slot(key_slot(keys[0].encode()), own_cluster.owner(keys[0]), new)
    poll(lambda: f"primary 127.0.0.1:{new.port}: opening" in proxy.log(), 5, "its link")
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "every link up")
    assert proxy.get(f"/get/{keys[0]}").content == keys[0].encode()  # cached from the new node
    new.client.set(keys[0], f"new:{keys[0]}")
    changed = f"new:{keys[0]}".encode()
    poll(lambda: proxy.get(f"/get/{keys[0]}").content == changed, VISIBLE_WITHIN, "the write")


def test_a_primary_down_fails_only_its_keys_and_tracking_resumes_when_it_is_back(
    start_proxy, own_cluster: Cluster
) -> None:
    keys = seed(own_cluster, "restart", per_node=3)
    proxy = start_on(
        start_proxy, own_cluster, cache_invalidation="tracking", cache_ttl=600, redis_timeout=0.5
    )
    down = own_cluster.nodes[1]
    on_down = [name for name in keys if own_cluster.owner(name) is down]
    elsewhere = [name for name in keys if name not in on_down]
    for name in keys:
        assert proxy.get(f"/get/{name}").status_code == 200
    down.stop()
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 0, 5, "the link to go down")
    assert [proxy.get(f"/get/{name}").status_code for name in elsewhere] == [200] * len(elsewhere)
    assert [proxy.get(f"/get/{name}").status_code for name in on_down] == [503] * len(on_down)
    resp = redis.Redis(port=proxy.resp_port, protocol=2)
    with pytest.raises(redis.RedisError, match="cannot"):
        resp.get(on_down[0])
    ready = proxy.get("/readyz")
    assert (ready.status_code, ready.json()["invalidation"]) == (200, "down")
    down.start()  # empty: the test servers keep nothing on disk
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 15, "every link back")
    poll(lambda: proxy.get(f"/get/{on_down[0]}").status_code == 404, 10, "its slots served")
    down.client.set(on_down[0], on_down[0])
    assert proxy.get(f"/get/{on_down[0]}").content == on_down[0].encode()  # cached again
    down.client.set(on_down[0], f"new:{on_down[0]}")
    changed = f"new:{on_down[0]}".encode()
    started = time.monotonic()
    poll(lambda: proxy.get(f"/get/{on_down[0]}").content == changed, VISIBLE_WITHIN, "the write")
    print(f"\na write on the restarted primary reached the cache in {time.monotonic() - started}")
