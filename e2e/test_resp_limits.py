"""Black box over RESP, as a hostile or careless client would use it: deep pipelines, huge
replies, clients that never read or never speak. Each prints what it measured."""

from __future__ import annotations

import socket
import threading
import time

import redis

from e2e.sampling import peak, rss
from harness.servers import poll

MB = 1024 * 1024


def dropped(proxy, reason: str) -> float:
    """RESP clients the proxy disconnected for `reason` (0 before the first)."""
    try:
        return float(proxy.metric("proxy_dropped_clients_total", protocol="resp", reason=reason))
    except ValueError:  # no such sample yet
        return 0


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def drain(sock: socket.socket, size: int) -> int:
    """Read and discard `size` bytes (or until the server closes); how many came."""
    got = 0
    while got < size:
        try:
            chunk = sock.recv(4 * MB)
        except ConnectionResetError:  # disconnected by the proxy
            break
        if not chunk:
            break
        got += len(chunk)
    return got


def test_a_deep_pipeline_leaves_other_clients_answered_meanwhile(
    start_proxy, redis_server, key
) -> None:
    redis_server.client.set(key(), b"v" * 100)
    proxy = start_proxy(redis_server)
    command = f"*2\r\n$3\r\nGET\r\n${len(key())}\r\n{key()}\r\n".encode()
    reply_size = len(b"$100\r\n") + 100 + 2
    probe = connect(proxy.resp_port)
    probe.sendall(command)
    assert drain(probe, reply_size) == reply_size  # cached now
    deep = connect(proxy.resp_port)
    pipeline = 200_000
    latencies: list[float] = []
    finished = threading.Event()

    def read_the_pipeline() -> None:
        assert drain(deep, pipeline * reply_size) == pipeline * reply_size
        finished.set()

    reader = threading.Thread(target=read_the_pipeline)
    reader.start()
    deep.sendall(command * pipeline)
    while not finished.is_set():
        started = time.perf_counter()
        probe.sendall(command)
        assert drain(probe, reply_size) == reply_size
        latencies.append(time.perf_counter() - started)
    reader.join()
    latencies.sort()
    print(
        f"\n{pipeline:,}-GET pipeline: {len(latencies)} probe GETs answered meanwhile, "
        f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"worst {latencies[-1] * 1000:.1f} ms"
    )
    # Answered in turns with the pipeline, not after it: before batching, the probe got
    # a handful of answers in all.
    assert len(latencies) >= 20


def test_huge_replies_are_not_copied_and_a_limitless_one_disconnects(
    start_proxy, redis_server, key
) -> None:
    value = b"x" * (100 * 1024)
    redis_server.client.set(key(), value)
    proxy = start_proxy(redis_server, redis_timeout=10)
    client = redis.Redis(port=proxy.resp_port, protocol=2)
    assert client.get(key()) == value  # cached
    worker = proxy.worker_pid()
    name = key().encode()
    request = b"*%d\r\n$4\r\nMGET\r\n" % 5001 + b"$%d\r\n%s\r\n" % (len(name), name) * 5000
    expected = len(b"*5000\r\n") + 5000 * (len(b"$102400\r\n") + len(value) + 2)
    with peak(lambda: rss(worker)) as memory:
        sock = connect(proxy.resp_port)
        sock.sendall(request)
        assert drain(sock, expected) == expected
        sock.close()
    grew = (memory[1] - memory[0]) / MB
    print(f"\nMGET of a 100 KB value x5,000 (a 488 MB reply): worker grew {grew:.0f} MB at peak")
    assert grew < 100  # copied, it took 1.5 GB
    # Asked for 6.4 GB of reply: disconnected (output limit), counted; everyone else served.
    sock = connect(proxy.resp_port)
    sock.sendall(b"*%d\r\n$4\r\nMGET\r\n" % 65536 + b"$%d\r\n%s\r\n" % (len(name), name) * 65535)
    assert drain(sock, 1 << 40) < 65535 * len(value)
    poll(lambda: dropped(proxy, "output_limit") == 1, 5, "the disconnection to be counted")
    assert client.get(key()) == value


def test_concurrent_reads_of_a_large_value_share_it(start_proxy, redis_server, key) -> None:
    value = b"y" * (100 * MB)
    redis_server.client.set(key(), value)
    proxy = start_proxy(
        redis_server, redis_timeout=30, cache_max_item_bytes=200 * MB, cache_maxbytes=400 * MB
    )
    name = key().encode()
    command = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(name), name)
    expected = len(b"$%d\r\n" % len(value)) + len(value) + 2
    first = connect(proxy.resp_port)
    first.sendall(command)
    assert drain(first, expected) == expected  # cached: the worker holds it once
    readers = [connect(proxy.resp_port) for _ in range(5)]
    with peak(lambda: rss(proxy.worker_pid())) as memory:
        for sock in readers:
            sock.sendall(command)
        time.sleep(0.2)  # all five replies queued before anyone reads
        for sock in readers:
            assert drain(sock, expected) == expected
    grew = (memory[1] - memory[0]) / MB
    print(f"\n5 concurrent GETs of a cached 100 MB value: worker grew {grew:.0f} MB at peak")
    assert grew < 50  # a copy per reply would be 500 MB


def test_a_client_that_never_reads_holds_a_bounded_backlog(start_proxy, redis_server, key) -> None:
    value = b"z" * (100 * 1024)
    redis_server.client.set(key(), value)
    proxy = start_proxy(redis_server)
    client = redis.Redis(port=proxy.resp_port, protocol=2)
    assert client.get(key()) == value
    name = key().encode()
    command = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(name), name)
    worker = proxy.worker_pid()
    with peak(lambda: rss(worker)) as memory:
        silent = connect(proxy.resp_port)
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        silent.settimeout(2)
        try:
            while sent < 100_000:  # until the proxy stops reading from it
                silent.sendall(command * 1000)
                sent += 1000
        except TimeoutError:
            pass
        assert client.get(key()) == value  # others are served meanwhile
        held = (memory[1] - memory[0]) / MB
        silent.close()
    poll(lambda: proxy.metric("proxy_connected_clients", protocol="resp") == 1, 5, "the close")
    after = (rss(worker) - memory[0]) / MB
    print(
        f"\nA client sending {sent:,} GETs of 100 KB without reading: worker grew "
        f"{held:.0f} MB at peak, {after:.0f} MB after it left"
    )
    assert held < 100  # by count alone it reached 1 GB


def test_silent_clients_are_disconnected_and_free_their_slots(start_proxy, redis_server) -> None:
    proxy = start_proxy(redis_server, max_connections=5, keepalive_timeout=1, resp_idle_timeout=2)
    speaking = redis.Redis(port=proxy.resp_port, protocol=2, single_connection_client=True)
    assert speaking.ping()
    silent = [connect(proxy.resp_port) for _ in range(4)]  # with `speaking`: the limit
    refused = connect(proxy.resp_port)
    assert refused.recv(100) == b"-ERR max number of clients reached\r\n"
    for sock in silent:  # never sent a command: dropped after KEEPALIVE_TIMEOUT
        assert sock.recv(100) == b""
    assert speaking.ping()  # it has spoken: RESP_IDLE_TIMEOUT applies
    newcomer = connect(proxy.resp_port)
    newcomer.sendall(b"PING\r\n")
    assert newcomer.recv(100) == b"+PONG\r\n"
    assert dropped(proxy, "request_timeout") == 4
    poll(lambda: dropped(proxy, "idle_timeout") >= 1, 10, "a client silent past RESP_IDLE_TIMEOUT")
    assert newcomer.recv(100) == b""
