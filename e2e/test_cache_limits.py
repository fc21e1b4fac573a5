"""Black box: the cache never outlives Redis's own expiry and never outgrows its byte budget."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from e2e.sampling import peak, rss
from harness.servers import poll

MB = 1024 * 1024


def test_a_key_redis_expires_stops_being_served_when_redis_drops_it(
    start_proxy, redis_server, key
) -> None:
    proxy = start_proxy(redis_server, cache_ttl=60)
    session = requests.Session()
    sent_before = time.monotonic()
    redis_server.client.set(key(), b"short-lived", px=1000)
    redis_expires_by = time.monotonic() + 1.0  # Redis drops it 1 s after the SET, at the latest
    assert session.get(f"{proxy.url}/get/{key()}", timeout=5).status_code == 200  # cached now
    served: list[float] = []  # when each 200 was asked for
    while True:
        asked = time.monotonic()
        status = session.get(f"{proxy.url}/get/{key()}", timeout=5).status_code
        if status == 404:
            break
        assert status == 200
        served.append(asked)
        time.sleep(0.002)  # the behaviour under test is timing: ask every few ms
    gone_after = asked - (sent_before + 1.0)
    print(
        f"\nlast 200 asked {redis_expires_by - served[-1]:.3f} s before Redis's expiry; "
        f"first 404 asked {gone_after * 1000:.0f} ms after the earliest it could expire"
    )
    assert served[-1] < redis_expires_by  # never served after Redis dropped it
    assert gone_after < 0.05  # and no longer than 50 ms after


def test_with_tracking_expire_persist_and_expiry_reach_the_proxy(
    start_proxy, redis_server, key
) -> None:
    proxy = start_proxy(redis_server, cache_invalidation="tracking", cache_ttl=60)
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")

    def invalidations() -> float:
        return float(proxy.metric("proxy_cache_invalidations_total"))

    redis_server.client.set(key(), b"v")
    poll(lambda: invalidations() == 1, 5, "the SET's own report")  # BCAST reports every write

    def read() -> None:
        assert proxy.get(f"/get/{key()}").content == b"v"

    def more_than(count: float) -> Callable[[], bool]:
        return lambda: invalidations() > count

    # EXPIRE and PERSIST change the key: Redis invalidates it for the proxy.
    for command, *arguments in (("EXPIRE", 100), ("PERSIST",)):
        read()
        count = invalidations()
        redis_server.client.execute_command(command, key(), *arguments)
        poll(more_than(count), 5, f"{command} to reach the proxy")
    # And when Redis expires a key the proxy read, that reaches it too.
    redis_server.client.pexpire(key(), 300)
    read()
    poll(more_than(invalidations()), 5, "Redis's expiry to reach the proxy")
    assert proxy.get(f"/get/{key()}").status_code == 404


def test_the_byte_budget_holds_while_reads_total_many_times_it(
    start_proxy, redis_server, key
) -> None:
    budget, value = 20 * MB, b"v" * (500 * 1024)
    pipe = redis_server.client.pipeline(transaction=False)
    for number in range(400):  # 200 MB of values: ten times the budget
        pipe.set(key(str(number)), value)
    pipe.set(key("huge"), b"h" * (2 * MB))
    pipe.execute()
    proxy = start_proxy(
        redis_server, cache_maxbytes=budget, cache_max_item_bytes=MB, cache_maxsize=100000
    )
    session = requests.Session()
    worker = proxy.worker_pid()
    with peak(lambda: rss(worker)) as memory:
        for number in range(400):
            assert len(
                session.get(f"{proxy.url}/get/{key(str(number))}", timeout=10).content
            ) == len(value)
        assert len(session.get(f"{proxy.url}/get/{key('huge')}", timeout=10).content) == 2 * MB
    grew = (memory[1] - memory[0]) / MB
    held = proxy.metric("proxy_cache_bytes")
    print(
        f"\n200 MB read through a 20 MB budget: {held / MB:.1f} MB cached, worker grew "
        f"{grew:.0f} MB at peak"
    )
    assert held <= budget
    assert proxy.metric("proxy_cache_too_large_total") == 1  # the 2 MB value: served only
    assert proxy.metric("proxy_cache_entries") == budget // (len(value) + len(key("0")))
    assert grew < budget / MB + 30  # the budget, plus the per-entry and allocator overhead


def test_a_hot_missing_key_costs_redis_one_get_per_negative_ttl(
    start_proxy, redis_server, key
) -> None:
    proxy = start_proxy(redis_server, cache_negative_ttl=1, cache_invalidation="tracking")
    # Until the invalidation link is up the cache stores nothing (it could not be told).
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")
    session = requests.Session()
    before = redis_server.get_calls()
    started = time.monotonic()
    reads = 0
    while time.monotonic() - started < 0.8:  # well inside one CACHE_NEGATIVE_TTL period
        assert session.get(f"{proxy.url}/get/{key()}", timeout=5).status_code == 404
        reads += 1
    assert redis_server.get_calls() - before == 1, f"{reads} reads"
    assert proxy.metric("proxy_cache_negative_hits_total") == reads - 1
    # With tracking, a SET of a key remembered as absent shows at once, not a period later.
    assert session.get(f"{proxy.url}/get/{key('later')}", timeout=5).status_code == 404
    redis_server.client.set(key("later"), b"now here")
    url = f"{proxy.url}/get/{key('later')}"
    poll(lambda: session.get(url, timeout=5).status_code == 200, 0.3, "the SET to show")
