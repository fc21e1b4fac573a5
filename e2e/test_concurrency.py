"""Black box: MAX_PARALLEL (sequential vs parallel) and MAX_CONNECTIONS (the client limit).

A miss is made to hang with CLIENT PAUSE on the real Redis. When the proxy took a request and
when it answered it are read from its log (Gunicorn logs "GET /path" at debug level as a thread
picks a request up; the access log, raw, writes "GET /path status=..." once the answer is
sent), so nothing here guesses with sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from e2e.clients import HttpConnection
from harness.servers import poll

PAUSE_MS = 1500


@contextmanager
def redis_paused(redis, milliseconds: int = PAUSE_MS) -> Iterator[None]:
    """Every command on the real Redis waits until the pause ends (or we unpause)."""
    redis.client.execute_command("CLIENT", "PAUSE", str(milliseconds), "ALL")
    try:
        yield
    finally:
        redis.client.execute_command("CLIENT", "UNPAUSE")


class Request(threading.Thread):
    """A GET sent now on its own connection; a thread waits for the answer."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.connection = HttpConnection(port, timeout=15)
        self.connection.send_get(path)  # sent in the caller's order: the arrival order
        self.status: int | None = None
        self.body = b""
        self.start()

    def run(self) -> None:
        self.status, _, self.body = self.connection.read_response()
        self.connection.close()


def wait_taken(proxy, path: str) -> None:
    poll(lambda: f"GET {path}\n" in proxy.log(), 5, f"the proxy to take {path}")


@pytest.fixture
def stalled_setup(redis_factory, key):
    redis = redis_factory()
    hot = [f"/get/{key(f'hot{i}')}" for i in range(5)]
    for path in hot:
        redis.client.set(path.removeprefix("/get/"), b"hot value")
    return redis, hot, f"/get/{key('cold')}"


def test_max_parallel_1_processes_one_request_at_a_time_in_arrival_order(
    start_proxy, stalled_setup
) -> None:
    redis, hot, cold = stalled_setup
    redis.client.set(cold.removeprefix("/get/"), b"cold value")
    proxy = start_proxy(redis, max_parallel=1, redis_timeout=5, log_level="debug", access_log="raw")
    for path in hot:
        assert proxy.get(path).status_code == 200  # cached now
    # An access line is written once its answer is sent: the client can have it first.
    poll(lambda: proxy.log().count(" status=200 ") == len(hot), 5, "the warm-up's access lines")
    warmed_up = len(proxy.log())
    with redis_paused(redis):
        miss = Request(proxy.port, cold)
        wait_taken(proxy, cold)
        hits = [Request(proxy.port, path) for path in hot]  # sent one after another
    miss.join(10)
    for hit in hits:
        hit.join(10)

    assert (miss.status, miss.body) == (200, b"cold value")
    assert [(hit.status, hit.body) for hit in hits] == [(200, b"hot value")] * 5

    def answered_all() -> bool:  # access lines follow the answers they log
        return bool(proxy.log()[warmed_up:].count(" status=200 ") == 1 + len(hot))

    poll(answered_all, 5, "every answer's access line")
    log = proxy.log()[warmed_up:]
    taken_order = sorted([cold, *hot], key=lambda path: log.index(f"GET {path}\n"))
    assert taken_order == [cold, *hot]
    # One at a time: the stalled miss was answered (its last byte sent, which is when its
    # access line is written) before any hit behind it, and the hits in arrival order.
    answered = sorted([cold, *hot], key=lambda path: log.index(f"GET {path} status=200"))
    assert answered == [cold, *hot]


@pytest.mark.parametrize("parallel", [2, 4])
def test_a_hit_is_served_while_a_miss_is_stalled(start_proxy, stalled_setup, parallel: int) -> None:
    redis, hot, cold = stalled_setup
    proxy = start_proxy(redis, max_parallel=parallel, redis_timeout=5, log_level="debug")
    connection = HttpConnection(proxy.port)
    assert connection.get(hot[0])[0] == 200  # cached, and the connection is warm

    with redis_paused(redis):
        miss = Request(proxy.port, cold)
        wait_taken(proxy, cold)
        status, _, body = connection.get(hot[0])
        miss_still_stalled = miss.is_alive()  # Redis is paused: the miss cannot have ended
    miss.join(10)

    assert (status, body) == (200, b"hot value")
    assert miss_still_stalled


@pytest.fixture
def limited_proxy(start_proxy, redis_server, key):
    redis_server.client.set(key(), b"v")
    return start_proxy(redis_server, max_connections=3, max_parallel=2), f"/get/{key()}"


def connected_clients(proxy, path: str, count: int) -> list[HttpConnection]:
    """`count` keep-alive clients that have each been answered once (so they are counted)."""
    clients = [HttpConnection(proxy.port) for _ in range(count)]
    for client in clients:
        assert client.get(path)[0] == 200
    return clients


def test_client_past_the_limit_gets_503_within_a_second_and_is_closed(limited_proxy) -> None:
    proxy, path = limited_proxy
    clients = connected_clients(proxy, path, 3)

    extra = HttpConnection(proxy.port, timeout=1.0)  # raises if the answer takes over 1 s
    started = time.monotonic()
    status, headers, body = extra.get(path)
    refused_in = time.monotonic() - started
    assert status == 503
    assert headers["retry-after"] == "1"
    assert b"too_many_clients" in body
    assert extra.closed_by_server()
    print(f"refusal answered in {refused_in * 1000:.1f} ms")

    for client in clients:  # the clients under the limit are unaffected
        assert client.get(path)[:1] == (200,)


def test_slot_freed_by_a_leaving_client_is_usable_at_once(limited_proxy) -> None:
    proxy, path = limited_proxy
    clients = connected_clients(proxy, path, 3)
    assert HttpConnection(proxy.port).get(path)[0] == 503
    clients[0].close()
    left = time.monotonic()
    answers: list[int] = []

    def newcomer_served() -> bool:
        answers.append(HttpConnection(proxy.port).get(path)[0])
        return answers[-1] == 200

    poll(newcomer_served, 0.5, "a newcomer to take the freed slot")
    print(f"freed slot reused after {(time.monotonic() - left) * 1000:.1f} ms, answers {answers}")


def test_idle_keepalive_clients_are_closed_after_keepalive_timeout(
    start_proxy, redis_server, key
) -> None:
    redis_server.client.set(key(), b"v")
    path = f"/get/{key()}"
    proxy = start_proxy(redis_server, max_connections=2, keepalive_timeout=1)
    idle = connected_clients(proxy, path, 2)
    answered = time.monotonic()
    assert HttpConnection(proxy.port).get(path)[0] == 503

    for client in idle:
        client.sock.settimeout(5)
        assert client.closed_by_server()
    freed_after = time.monotonic() - answered
    assert 1.0 <= freed_after < 2.5  # the timeout, plus the worker's 1 s housekeeping tick
    assert HttpConnection(proxy.port).get(path)[0] == 200
    print(f"idle keep-alive slots freed after {freed_after:.2f} s (KEEPALIVE_TIMEOUT=1)")


def test_silent_client_holds_a_slot_but_not_the_only_thread(start_proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"v")
    path = f"/get/{key()}"
    proxy = start_proxy(redis_server, max_parallel=1, max_connections=2, keepalive_timeout=1)
    silent = HttpConnection(proxy.port)  # connects, never sends a byte

    started = time.monotonic()
    client = HttpConnection(proxy.port)
    assert client.get(path)[0] == 200
    assert time.monotonic() - started < 0.5  # stock gthread: ~5 s behind the silent client
    assert HttpConnection(proxy.port).get(path)[0] == 503  # silent + client fill the limit

    silent.sock.settimeout(5)
    assert silent.closed_by_server()
