"""Black box: what clients see while the real Redis is stopped, restarted or stalled."""

from __future__ import annotations

import time

import requests

from harness.servers import poll


def test_redis_down_hits_are_200_and_misses_503_fast(start_proxy, redis_factory) -> None:
    redis = redis_factory()
    proxy = start_proxy(redis, redis_timeout=0.5)
    redis.client.set("cached", b"kept")
    assert proxy.get("/get/cached").content == b"kept"
    redis.stop()

    assert (proxy.get("/get/cached").status_code, proxy.get("/get/cached").content) == (
        200,
        b"kept",
    )
    started = time.monotonic()
    response = proxy.get("/get/uncached")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"] == "backend_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert elapsed < 1.0
    assert "Traceback" not in response.text
    assert proxy.metric("proxy_backend_up") == 0


def test_redis_back_misses_work_again_without_restarting_the_proxy(
    start_proxy, redis_factory
) -> None:
    redis = redis_factory()
    proxy = start_proxy(redis, redis_timeout=0.5)
    redis.client.set("before", b"1")
    assert proxy.get("/get/before").status_code == 200  # a pooled connection now exists
    redis.stop()
    assert proxy.get("/get/during").status_code == 503

    redis.start()  # same port, empty data set
    redis.client.set("after", b"back")
    restarted = time.monotonic()
    poll(lambda: proxy.get("/get/after").status_code == 200, 1.0, "a miss served after restart")
    assert time.monotonic() - restarted < 1.0
    assert proxy.get("/get/after").content == b"back"


def test_stalled_redis_misses_504_after_timeout_and_hits_unaffected(
    start_proxy, redis_factory
) -> None:
    redis = redis_factory()
    proxy = start_proxy(redis, redis_timeout=0.3)
    redis.client.set("hot", b"cached")
    assert proxy.get("/get/hot").status_code == 200
    redis.client.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    try:
        started = time.monotonic()
        hit = proxy.get("/get/hot")
        hit_elapsed = time.monotonic() - started
        started = time.monotonic()
        miss = proxy.get("/get/cold")
        miss_elapsed = time.monotonic() - started
        ready = proxy.get("/readyz")
        started = time.monotonic()
        backend_up = proxy.metric("proxy_backend_up")
        scrape_elapsed = time.monotonic() - started
    finally:
        redis.client.execute_command("CLIENT", "UNPAUSE")
    assert backend_up == 0
    assert scrape_elapsed < 1.0  # a stalled Redis does not hold the scrape
    assert (hit.status_code, hit.content) == (200, b"cached")
    assert hit_elapsed < 0.25
    assert miss.status_code == 504
    assert miss.json()["error"] == "backend_timeout"
    assert 0.3 <= miss_elapsed < 1.5
    assert (ready.status_code, ready.json()["error"]) == (503, "not_ready")
    assert "did not answer within 0.3 s" in ready.json()["detail"]


STALE = "redis-cache-proxy; fwd=stale; detail=stale-if-error"


def answers_until_503(proxy, path: str) -> list[tuple[float, str]]:
    """Read `path` every few ms until a 503: when each 200 was asked and its Cache-Status;
    the 503 last, with the time its answer arrived."""
    seen: list[tuple[float, str]] = []
    session = requests.Session()
    while True:
        asked = time.monotonic()
        response = session.get(proxy.url + path, timeout=5)
        if response.status_code == 503:
            seen.append((time.monotonic(), response.headers["Cache-Status"]))
            return seen
        assert (response.status_code, response.content) == (200, b"kept")
        seen.append((asked, response.headers["Cache-Status"]))
        time.sleep(0.005)  # the behaviour under test is timing: ask every few ms


def test_stale_if_error_answers_through_an_outage_inside_the_window_then_503(
    start_proxy, redis_factory
) -> None:
    redis = redis_factory()
    proxy = start_proxy(redis, cache_ttl=1, cache_stale_if_error=2, redis_timeout=0.3)
    redis.client.set("cached", b"kept")
    fetched_from = time.monotonic()
    assert proxy.get("/get/cached").headers["Cache-Status"] == "redis-cache-proxy; fwd=miss; stored"
    fetched_by = time.monotonic()
    redis.stop()
    seen = answers_until_503(proxy, "/get/cached")
    statuses = [status for _, status in seen[:-1]]
    first_stale = statuses.index(STALE)
    assert set(statuses[:first_stale]) == {"redis-cache-proxy; hit"}  # fresh until the TTL
    assert set(statuses[first_stale:]) == {STALE}
    assert seen[first_stale][0] >= fetched_from + 1 - 0.05  # not stale before the TTL ended
    assert seen[-2][0] < fetched_by + 1 + 2  # no stale answer past the window
    assert seen[-1][0] >= fetched_from + 1 + 2  # and the 503 once it is over
    assert seen[-1][1] == "redis-cache-proxy; fwd=miss"
    assert proxy.metric("proxy_cache_stale_answers_total") == len(statuses) - first_stale
    assert proxy.metric("proxy_requests_total", protocol="http", outcome="stale") > 0


def test_with_tracking_a_lost_link_leaves_values_to_answer_only_an_outage(
    start_proxy, redis_factory
) -> None:
    redis = redis_factory()
    proxy = start_proxy(
        redis,
        cache_ttl=60,
        cache_stale_if_error=1,
        cache_invalidation="tracking",
        redis_timeout=0.3,
    )
    poll(lambda: proxy.metric("proxy_invalidation_link_up") == 1, 5, "the invalidation link")
    redis.client.set("cached", b"kept")
    # BCAST reports the SET too: once heard, it can no longer drop the value read below.
    poll(lambda: proxy.metric("proxy_cache_invalidations_total") == 1, 5, "the SET's report")
    assert proxy.get("/get/cached").headers["Cache-Status"].endswith("; stored")
    stopped = time.monotonic()
    redis.stop()
    seen = answers_until_503(proxy, "/get/cached")
    assert seen[-2][1] == STALE  # CACHE_TTL is 60 s: stale because the link went
    assert seen[-1][0] - stopped < 1 + 1  # the window runs from the link's loss
    assert proxy.metric("proxy_invalidation_link_up") == 0
