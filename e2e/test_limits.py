"""Black box, as an adversary would try it: descriptors run short, shutdown under arrivals."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest
import redis
import requests

from e2e.sampling import open_descriptors, peak
from harness.servers import Proxy, poll

FLOOD = 650  # connections per front end: far past MAX_CONNECTIONS and the descriptor limit
LIMIT = 100  # MAX_CONNECTIONS
BUDGET = 4 * LIMIT + 2 * 4 + 64  # the documented descriptors needed, at MAX_PARALLEL=4


def flood(port: int, request: bytes) -> list[socket.socket]:
    """FLOOD connections, each sending `request`; those the kernel refuses are skipped."""
    socks = []
    for _ in range(FLOOD):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(request)
        except OSError:
            continue
        socks.append(sock)
    return socks


def test_a_connection_flood_under_a_low_descriptor_limit_costs_no_one_the_worker(
    start_proxy, redis_server, key
) -> None:
    redis_server.client.set(key(), b"kept")
    proxy = start_proxy(redis_server, max_connections=LIMIT, open_files=(600, 600))
    assert proxy.get(f"/get/{key()}").content == b"kept"
    worker = proxy.worker_pid()
    with peak(lambda: open_descriptors(worker)) as descriptors:
        http = flood(proxy.port, f"GET /get/{key()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = flood(proxy.resp_port, f"GET {key()}\r\n".encode())
    print(f"\nworker descriptors: peak {descriptors[1]} (budget {BUDGET}, limit 600)")
    for sock in http + resp:
        sock.close()
    assert proxy.worker_pid() == worker  # the same worker: nobody lost the cache
    assert descriptors[1] <= BUDGET
    hits = proxy.metric("proxy_requests_total", protocol="http", outcome="hit")
    assert proxy.get(f"/get/{key()}").content == b"kept"
    assert proxy.metric("proxy_requests_total", protocol="http", outcome="hit") == hits + 1
    assert redis.Redis(port=proxy.resp_port, protocol=2).get(key()) == b"kept"
    assert "Too many open files" not in proxy.log()


def test_a_hard_limit_below_the_budget_refuses_to_start_naming_the_numbers(
    proxy_env, redis_server, tmp_path: Path
) -> None:
    log = tmp_path / "proxy.log"
    proxy = Proxy(proxy_env(redis_server, max_connections=LIMIT), log, open_files=(300, 300))
    assert proxy.spawn().wait(30) == 2
    assert re.search(
        rf"open files: the limit is 300 \(hard\) but .* need {BUDGET}", log.read_text()
    )


def test_a_low_soft_limit_is_raised_to_the_budget(start_proxy, redis_server) -> None:
    proxy = start_proxy(redis_server, max_connections=LIMIT, open_files=(256, 4096))
    limits = Path(f"/proc/{proxy.worker_pid()}/limits").read_text()
    [soft] = re.findall(r"Max open files\s+(\d+)\s+4096", limits)
    assert int(soft) == BUDGET


def refused_by_the_kernel(port: int) -> bool:
    """True if a connection to `port` is refused (or reset before it was established: the
    listener closed with it in the kernel's queue); False if it was accepted (and answered or
    reset)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    sock.close()
    return False


@pytest.mark.parametrize("front_end", ["http", "resp"])
def test_sigterm_closes_the_listeners_so_newcomers_are_refused_while_draining(
    start_proxy, redis_factory, front_end: str
) -> None:
    backing = redis_factory()
    backing.client.set("slow", b"worth the wait")
    proxy = start_proxy(backing, redis_timeout=5)
    answer: list[object] = []
    client = redis.Redis(port=proxy.resp_port, socket_timeout=10, protocol=2)

    def read() -> None:
        if front_end == "http":
            answer.append(requests.get(proxy.url + "/get/slow", timeout=10).content)
        else:
            answer.append(client.get("slow"))

    reader = threading.Thread(target=read)
    backing.client.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    reader.start()
    poll(lambda: proxy.metric("proxy_backend_requests_total") == 1, 5, "the read in flight")
    assert proxy.process is not None
    proxy.process.send_signal(15)
    port = proxy.port if front_end == "http" else proxy.resp_port
    poll(lambda: refused_by_the_kernel(port), 5, "the listener to close")
    assert reader.is_alive(), "the drain ended before the newcomers were tried"
    outcomes = [refused_by_the_kernel(port) for _ in range(10)]
    reader.join(10)
    assert outcomes == [True] * 10
    assert answer == [b"worth the wait"]
    assert proxy.process.wait(10) == 0


def test_a_request_cut_at_graceful_timeout_is_logged(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    backing.client.set("slow", b"never in time")
    proxy = start_proxy(backing, redis_timeout=10, graceful_timeout=1)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        backing.client.execute_command("CLIENT", "PAUSE", "4000", "ALL")
        sock.sendall(b"GET /get/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        poll(lambda: proxy.metric("proxy_backend_requests_total") == 1, 5, "the read in flight")
        assert proxy.process is not None
        proxy.process.send_signal(15)
        assert sock.recv(100) == b""  # cut: no answer
    assert re.search(
        r"HTTP connection from 127\.0\.0\.1 cut at GRACEFUL_TIMEOUT: 0 bytes sent, 0 not sent, "
        r"a request still running",
        proxy.log(),
    )
