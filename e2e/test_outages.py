"""Black box: what clients see while the real Redis is stopped, restarted or stalled."""

from __future__ import annotations

import time

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
    finally:
        redis.client.execute_command("CLIENT", "UNPAUSE")
    assert (hit.status_code, hit.content) == (200, b"cached")
    assert hit_elapsed < 0.25
    assert miss.status_code == 504
    assert miss.json()["error"] == "backend_timeout"
    assert 0.3 <= miss_elapsed < 1.5
    assert (ready.status_code, ready.json()["error"]) == (503, "not_ready")
    assert "did not answer within 0.3 s" in ready.json()["detail"]
