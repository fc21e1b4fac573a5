"""Black box: hits answered on the worker's loop, slow clients, and MAX_PARALLEL's loop slot.

Which path answered a request is read from the proxy's debug log: Gunicorn logs "GET /path"
as a pool thread takes a request, and the loop's hits never reach a thread.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time

import pytest
import redis

from e2e.clients import HttpConnection
from e2e.test_concurrency import Request, redis_paused, wait_taken
from harness.servers import poll

DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
PROMPT = 1.0  # seconds: what "still answers promptly" means here


def exchange(port: int, *pieces: bytes) -> bytes:
    """Send `pieces` as separate writes, then read until the proxy closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)  # the proxy answers what it has, then closes
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return DATE.sub(b"\r\nDate: -\r\n", answer)


def taken_by_a_thread(proxy, path: str) -> int:
    """How many requests for `path` pool threads took (GET or HEAD, any query)."""
    log: str = proxy.log()
    return log.count(f" {path}\n")


@pytest.fixture
def hot(start_proxy, redis_server, key):
    """A debug-logging proxy with one cached key; its path."""
    redis_server.client.set(key(), b"hot value")
    proxy = start_proxy(redis_server, log_level="debug")
    path = f"/get/{key()}"
    assert proxy.get(path).status_code == 200  # a miss, through a thread: now cached
    return proxy, path


@pytest.mark.parametrize(
    "form",
    [
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD {} HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET {} HTTP/1.0\r\n\r\n",
        "GET {} HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET {}?q=1 HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: t\r\n\r\n",
    ],
)
def test_a_hit_on_the_loop_is_byte_for_byte_the_flask_path_s(hot, form: str) -> None:
    proxy, path = hot
    request = form.format(path).encode()
    flask_form = request.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")  # not canonical
    threads_before = taken_by_a_thread(proxy, path)
    on_loop = exchange(proxy.port, request)
    assert taken_by_a_thread(proxy, path) == threads_before  # no thread took it
    through_flask = exchange(proxy.port, flask_form)
    poll(lambda: taken_by_a_thread(proxy, path) == threads_before + 1, 5, "a thread to take it")
    assert on_loop == through_flask
    assert on_loop.startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n"))


def test_any_split_between_reads_and_pipelining_give_the_same_answers(hot) -> None:
    proxy, path = hot
    one = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    both = one + f"HEAD {path} HTTP/1.1\r\n\r\n".encode()
    whole = exchange(proxy.port, both)
    assert whole.count(b"HTTP/1.1 200 OK") == 2
    for split in (1, 4, len(one) - 2, len(one), len(one) + 3, len(both) - 1):
        assert exchange(proxy.port, both[:split], both[split:]) == whole


def test_a_pipelined_hit_waits_for_the_miss_before_it(start_proxy, redis_factory, key) -> None:
    redis = redis_factory()
    redis.client.set(key("hot"), b"hot value")
    redis.client.set(key("cold"), b"cold value")
    proxy = start_proxy(redis, log_level="debug", redis_timeout=5)
    hot, cold = f"/get/{key('hot')}", f"/get/{key('cold')}"
    assert proxy.get(hot).status_code == 200
    connection = HttpConnection(proxy.port)
    with redis_paused(redis):
        connection.sock.sendall(f"GET {cold} HTTP/1.1\r\n\r\nGET {hot} HTTP/1.1\r\n\r\n".encode())
        wait_taken(proxy, cold)
        # The hit is cached and the loop is free, but its answer must not overtake the miss.
        assert not select.select([connection.sock], [], [], 0)[0]
    assert connection.read_response()[2] == b"cold value"
    assert connection.read_response()[2] == b"hot value"


@pytest.mark.parametrize("protocol", ["http", "resp"])
def test_misses_stalled_on_every_thread_never_delay_a_hit(
    start_proxy, redis_factory, key, protocol: str
) -> None:
    redis = redis_factory()
    redis.client.set(key("hot"), b"hot value")
    proxy = start_proxy(redis, max_parallel=2, redis_timeout=5, log_level="debug")
    hot = key("hot")
    hit = _hit_reader(proxy, protocol, hot)
    assert hit() == b"hot value"  # cached now
    with redis_paused(redis, 3000):
        misses = [Request(proxy.port, f"/get/{key(f'cold{i}')}") for i in range(3)]
        wait_taken(proxy, f"/get/{key('cold0')}")  # the only miss thread is stalled
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            assert hit() == b"hot value"
            latencies.append(time.monotonic() - started)
        stalled = [miss.is_alive() for miss in misses]
    assert all(stalled)
    print(f"{protocol} hits behind 3 stalled misses: max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < PROMPT
    for miss in misses:
        miss.join(10)
        assert miss.status == 404


def _hit_reader(proxy, protocol: str, key: str):
    if protocol == "http":
        connection = HttpConnection(proxy.port)
        return lambda: connection.get(f"/get/{key}")[2]
    client = redis.Redis(port=proxy.resp_port, socket_timeout=5)
    return lambda: client.get(key)


def test_slow_clients_hold_only_their_own_connections(start_proxy, redis_server, key) -> None:
    """MAX_PARALLEL + 1 clients dribbling a request and as many that never read a 5 MB answer
    take no thread: /livez, hits and misses from other clients still answer promptly."""
    parallel = 2
    redis_server.client.set(key("big"), b"x" * 5_000_000)
    redis_server.client.set(key("hot"), b"hot value")
    proxy = start_proxy(redis_server, max_parallel=parallel, keepalive_timeout=30)
    for name in ("big", "hot"):
        assert proxy.get(f"/get/{key(name)}").status_code == 200
    dribblers = [_dribbling(proxy.port, f"/get/{key('hot')}") for _ in range(parallel + 1)]
    stuck = [_not_reading(proxy.port, f"/get/{key('big')}") for _ in range(parallel + 1)]

    latencies = {}
    for name, path in [("livez", "/livez"), ("hit", f"/get/{key('hot')}")] + [
        (f"miss{i}", f"/get/{key(f'absent{i}')}") for i in range(3)
    ]:
        started = time.monotonic()
        status = HttpConnection(proxy.port, timeout=PROMPT).get(path)[0]
        latencies[name] = (time.monotonic() - started) * 1000
        assert status in (200, 404)
    print("with slow clients connected:", {k: f"{v:.1f} ms" for k, v in latencies.items()})
    for stopper in dribblers + stuck:
        stopper.set()


def _dribbling(port: int, path: str) -> threading.Event:
    """A client that sends its request one byte at a time, slowly, until told to stop."""
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    def dribble() -> None:
        for byte in request[:-1]:
            sock.send(bytes([byte]))
            if stop.wait(0.2):  # the pace of a slow client, not a synchronisation
                break
        stop.wait()
        sock.close()

    threading.Thread(target=dribble, daemon=True).start()
    return stop


def _not_reading(port: int, path: str) -> threading.Event:
    """A client that asks for a big answer several times and never reads it."""
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\n\r\n".encode() * 4)

    def hold() -> None:
        stop.wait()
        sock.close()

    threading.Thread(target=hold, daemon=True).start()
    return stop


def test_a_request_not_sent_in_time_is_answered_408(start_proxy, redis_server) -> None:
    proxy = start_proxy(redis_server, keepalive_timeout=1)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /get/k HTTP/1.1\r\nHost:")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"error":"request_timeout"' in answer
    assert 1.0 <= waited < 2.5
