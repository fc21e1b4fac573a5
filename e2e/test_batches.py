"""Cold MGETs against a real Redis: the misses of one MGET reach Redis as MGETs of at most
MAX_BATCH_KEYS keys, one round trip each (counted with INFO commandstats), answered in order,
with Redis's own TTLs kept and a key of another type nil; with scripts refused by an ACL too."""

from __future__ import annotations

import statistics
import time

import redis

from proxy.backend import MAX_BATCH_KEYS


def test_a_cold_mget_is_one_redis_mget_per_chunk(start_proxy, redis_factory, key) -> None:
    backing = redis_factory()
    names = [key(f"k{i}") for i in range(2 * MAX_BATCH_KEYS + 500)]
    backing.client.mset({name: f"v{i}".encode() for i, name in enumerate(names)})
    backing.client.delete(names[7])
    backing.client.rpush(names[7], b"a list")  # another type
    backing.client.delete(names[8])
    backing.client.pexpire(names[9], 1500)
    proxy = start_proxy(backing)
    client = redis.Redis(port=proxy.resp_port, socket_timeout=10)
    gets, mgets = backing.get_calls("get"), backing.get_calls("mget")
    answer = client.mget(names)
    expected: list[bytes | None] = [f"v{i}".encode() for i in range(len(names))]
    expected[7] = expected[8] = None
    assert answer == expected
    assert backing.get_calls("mget") - mgets == 3  # 1,000 + 1,000 + 500 keys
    assert backing.get_calls("get") - gets == 0
    assert client.mget(names[10:20]) == expected[10:20]  # cached now: Redis not asked
    assert backing.get_calls("mget") - mgets == 3
    assert client.mget(names[:10]) == expected[:10]  # the list and the absent key: asked again
    assert backing.get_calls("mget") - mgets == 4
    deadline = time.monotonic() + 10  # Redis's own expiry of names[9] reaches the cache
    while client.get(names[9]) is not None:
        assert time.monotonic() < deadline, "an entry outlived its key in Redis"
        time.sleep(0.05)


def test_without_scripts_the_ttls_come_key_by_key_in_the_same_round_trip(
    start_proxy, redis_factory, key
) -> None:
    backing = redis_factory()
    backing.client.execute_command(
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">pw",
        "~*",
        "+get",
        "+mget",
        "+pttl",
        "+ping",
        "+client",
        "+hello",
        "+info",
    )
    names = [key(f"k{i}") for i in range(20)]
    backing.client.mset({name: b"v" for name in names})
    proxy = start_proxy(backing, redis_url=backing.url.replace("//", "//reader:pw@", 1))
    client = redis.Redis(port=proxy.resp_port, socket_timeout=10)
    assert client.mget(names) == [b"v"] * 20
    assert backing.get_calls("mget") == 1
    assert backing.get_calls("pttl") == 20
    assert client.mget(names) == [b"v"] * 20  # and the next MGET goes the same way
    assert backing.get_calls("evalsha") == 0


def test_cold_mget_latency_against_redis_s_own(start_proxy, redis_factory, key) -> None:
    """Printed, not asserted (timing): a cold MGET of N keys through the proxy and redis-server's
    own MGET of the same keys (docs/performance.md has the figures)."""
    backing = redis_factory()
    proxy = start_proxy(backing, cache_maxsize=100_000)
    direct = redis.Redis(port=backing.port, socket_timeout=10)
    through = redis.Redis(port=proxy.resp_port, socket_timeout=10)
    for size in (1, 10, 100, 1000):
        ratios = []
        for round_ in range(5):
            names = [key(f"{size}-{round_}-{i}") for i in range(size)]
            backing.client.mset({name: b"x" * 100 for name in names})
            started = time.perf_counter()
            direct.mget(names)
            own = time.perf_counter() - started
            started = time.perf_counter()
            assert through.mget(names) == [b"x" * 100] * size
            ratios.append((time.perf_counter() - started) / own)
        print(f"cold MGET of {size} keys: {statistics.median(ratios):.1f}x redis-server's own")


def test_pipelined_get_misses_are_fetched_together(start_proxy, redis_factory, key) -> None:
    backing = redis_factory()
    names = [key(f"p{i}") for i in range(300)]
    backing.client.mset({name: b"v" for name in names})
    backing.client.delete(names[5])
    backing.client.rpush(names[5], b"a list")
    proxy = start_proxy(backing)
    pipe = redis.Redis(port=proxy.resp_port, socket_timeout=10).pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    answers = pipe.execute(raise_on_error=False)
    assert isinstance(answers[5], redis.ResponseError) and "WRONGTYPE" in str(answers[5])
    assert answers[:5] + answers[6:] == [b"v"] * 299  # in order, each its own reply
    assert backing.get_calls("get") == 0
    assert 1 <= backing.get_calls("mget") <= 3  # one per run read (a read may split a run)
