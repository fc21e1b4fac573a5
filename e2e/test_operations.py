"""Black box, as an operator sees it: probes, metrics, logs, outages and graceful shutdown."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from collections import Counter

import redis
import requests

from harness.servers import GUNICORN, ROOT, poll


def status(proxy, path: str) -> int:
    return requests.get(proxy.url + path, timeout=5).status_code


def test_probes_livez_ignores_redis_readyz_follows_it(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    proxy = start_proxy(backing, redis_timeout=0.5)
    assert (status(proxy, "/livez"), status(proxy, "/readyz")) == (200, 200)
    backing.stop()
    response = requests.get(proxy.url + "/readyz", timeout=5)
    assert response.status_code == 503
    assert response.json() == {"error": "not_ready", "detail": "cannot reach Redis"}
    assert status(proxy, "/livez") == 200
    backing.start()
    poll(lambda: status(proxy, "/readyz") == 200, 1.0, "/readyz to recover")


def test_redis_killed_while_clients_read_then_back(start_proxy, redis_factory) -> None:
    """Cached keys stay 200 throughout; misses fail fast while Redis is gone and recover."""
    backing = redis_factory()
    backing.client.set("cached", b"kept")
    proxy = start_proxy(backing, redis_timeout=0.5, max_parallel=4)
    assert proxy.get("/get/cached").status_code == 200
    stop = threading.Event()
    seen: Counter[tuple[str, int]] = Counter()
    slowest_miss = [0.0]

    def reader(path: str) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                code = session.get(proxy.url + path, timeout=5).status_code
                seen[path, code] += 1
                if path != "/get/cached":
                    slowest_miss[0] = max(slowest_miss[0], time.monotonic() - started)

    readers = [threading.Thread(target=reader, args=(p,)) for p in ("/get/cached", "/get/new")]
    for thread in readers:
        thread.start()
    try:
        backing.stop(kill=True)
        killed = time.monotonic()
        poll(lambda: seen["/get/new", 503] >= 3, 5, "misses to fail while Redis is down")
        first_503 = time.monotonic() - killed
        poll(lambda: status(proxy, "/readyz") == 503, 1, "/readyz to report the outage")
        backing.start()
        backing.client.set("/get/new".removeprefix("/get/"), b"back")
        restarted = time.monotonic()
        poll(lambda: proxy.get("/get/new").status_code == 200, 1.0, "misses to recover")
        recovered = time.monotonic() - restarted
        poll(lambda: status(proxy, "/readyz") == 200, 1.0, "/readyz to recover")
    finally:
        stop.set()
        for thread in readers:
            thread.join(10)
    cached_codes = {code for (path, code) in seen if path == "/get/cached"}
    miss_codes = {code for (path, code) in seen if path == "/get/new"}
    assert cached_codes == {200}
    assert miss_codes <= {404, 503, 200}  # 404 before the key was set after the restart
    assert slowest_miss[0] < 1.0
    print(
        f"misses failed {first_503 * 1000:.0f} ms after the kill (slowest miss answer "
        f"{slowest_miss[0] * 1000:.0f} ms); misses recovered {recovered * 1000:.0f} ms after "
        "the restart"
    )


def test_metrics_cover_both_protocols_cache_and_clients(start_proxy, redis_server, key) -> None:
    proxy = start_proxy(redis_server, max_connections=3)
    redis_server.client.set(key(), b"v")
    path = f"/get/{key()}"
    assert proxy.get(path).status_code == 200  # miss
    assert proxy.get(path).status_code == 200  # hit
    resp = redis.Redis(port=proxy.resp_port, single_connection_client=True)
    assert resp.get(key()) == b"v"  # hit: HTTP cached it
    assert resp.get(key("absent")) is None  # not found
    held = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
    try:
        extra = requests.get(proxy.url + path, timeout=5)
        assert extra.status_code == 503
    finally:
        for sock in held:
            sock.close()
    poll(lambda: status(proxy, "/livez") == 200, 2, "the held connections to be released")

    assert proxy.metric("proxy_requests_total", protocol="http", outcome="miss") == 1
    assert proxy.metric("proxy_requests_total", protocol="http", outcome="hit") == 1
    assert proxy.metric("proxy_requests_total", protocol="resp", outcome="hit") == 1
    assert proxy.metric("proxy_requests_total", protocol="resp", outcome="not_found") == 1
    assert proxy.metric("proxy_request_duration_seconds_count", protocol="resp") == 2
    assert proxy.metric("proxy_backend_requests_total") == 2
    assert proxy.metric("proxy_cache_entries") == 1
    assert proxy.metric("proxy_refused_clients_total", protocol="http") == 1
    assert proxy.metric("proxy_connected_clients", protocol="resp") == 1
    assert proxy.metric("proxy_connected_clients", protocol="http") >= 1  # this scrape


def test_logs_startup_masked_hashed_access_and_rate_limited_warnings(
    start_proxy, redis_factory
) -> None:
    backing = redis_factory()
    url = backing.url.replace("redis://", "redis://default:hunter2@")
    backing.client.config_set("requirepass", "hunter2")
    backing.client = redis.Redis(port=backing.port, password="hunter2", protocol=2)
    backing.client.set("secret-name", b"v")
    proxy = start_proxy(backing, redis_url=url, redis_timeout=0.3)
    assert proxy.get("/get/secret-name").status_code == 200
    backing.stop()
    for _ in range(20):
        assert proxy.get("/get/other").status_code == 503
    log = proxy.log()
    assert "redis-cache-proxy starting: REDIS_URL=redis://default:***@" in log
    assert "hunter2" not in log
    assert re.search(r"GET /get/<key blake2b:\w{16} len=11> status=200 outcome=miss bytes=1 ", log)
    assert re.search(r"GET /get/<key blake2b:\w{16} len=5> status=503 outcome=error bytes=", log)
    assert "secret-name" not in log
    warnings = [line for line in log.splitlines() if "backend unavailable" in line]
    assert 1 <= len(warnings) <= 2  # 20 failures, one line per kind per 10 s
    assert "more like it" in warnings[0]
    assert "GET /livez" not in log


def test_a_password_in_the_url_query_is_used_and_never_logged(start_proxy, redis_factory) -> None:
    backing = redis_factory()
    backing.client.config_set("requirepass", "query-secret")
    backing.client = redis.Redis(port=backing.port, password="query-secret", protocol=2)
    backing.client.set("k", b"v")
    proxy = start_proxy(backing, redis_url=backing.url + "/0?password=query-secret")
    assert proxy.get("/get/k").content == b"v"
    assert "password=***" in proxy.log()
    assert "query-secret" not in proxy.log()


def test_an_invalid_url_is_refused_without_showing_its_password(proxy_env, redis_server) -> None:
    env = {**os.environ, **proxy_env(redis_server)}
    env["REDIS_URL"] = "redis://default:hunter2@localhost:164790/0?password=hunter3"
    done = subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"REDIS_URL='redis://default:***@localhost:164790/0?password=***'" in done.stderr
    assert b"hunter" not in done.stderr + done.stdout


def test_keys_are_hashed_in_every_log_line_and_bad_requests_are_rate_limited(
    start_proxy, redis_server
) -> None:
    proxy = start_proxy(redis_server)
    requests.post(proxy.url + "/get/secret-key", timeout=5)
    requests.options(proxy.url + "/get/secret-key", timeout=5)
    assert proxy.get("/get/secret-key" + "x" * 3000).status_code == 414
    for _ in range(20):  # a request line Gunicorn refuses, quoting it in its warning
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET /get/secret-key\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    log = proxy.log()
    assert "secret-key" not in log
    assert re.search(r"POST /get/<key blake2b:[0-9a-f]{16} len=10> status=405", log)
    assert re.search(r"OPTIONS /get/<key blake2b:[0-9a-f]{16} len=10> status=405", log)
    warnings = [line for line in log.splitlines() if "Invalid request" in line]
    assert 1 <= len(warnings) <= 2, warnings  # 20 bad requests, one line per 10 s
    assert "/get/<key blake2b:" in warnings[0]


def test_http_methods_405_with_allow_and_options_for_the_server(start_proxy, redis_server) -> None:
    proxy = start_proxy(redis_server)
    for method in ("POST", "OPTIONS", "DELETE"):
        answer = requests.request(method, proxy.url + "/get/k", timeout=5)
        assert (answer.status_code, answer.headers["Allow"]) == (405, "GET, HEAD")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(4096):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 204 NO CONTENT\r\n")  # Werkzeug's reason phrase
    assert b"\r\nAllow: GET, HEAD\r\n" in raw


def assert_clean_stop(proxy) -> None:
    """The worker ran its whole shutdown (RESP, Redis connections) without an error."""
    log = proxy.log()
    assert "redis-cache-proxy stopped" in log
    assert "Traceback" not in log
    assert "Exception" not in log


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_an_in_flight_http_request_finish_and_exits_0(
    start_proxy, redis_factory
) -> None:
    backing = redis_factory()
    backing.client.set("slow", b"worth the wait")
    proxy = start_proxy(backing, redis_timeout=5, log_level="debug")
    answer: list[requests.Response] = []
    reader = threading.Thread(
        target=lambda: answer.append(requests.get(proxy.url + "/get/slow", timeout=10))
    )
    backing.client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    reader.start()
    poll(lambda: "GET /get/slow" in proxy.log(), 5, "the HTTP request to be in flight")
    exit_code = proxy.terminate()  # returns once the proxy has exited
    reader.join(10)
    assert [(r.status_code, r.content) for r in answer] == [(200, b"worth the wait")]
    assert exit_code == 0
    assert_clean_stop(proxy)
    assert refuses_connections(proxy.port)
    assert refuses_connections(proxy.resp_port)


def test_sigterm_lets_an_in_flight_resp_request_finish_and_exits_0(
    start_proxy, redis_factory
) -> None:
    backing = redis_factory()
    backing.client.set("slow", b"worth the wait")
    proxy = start_proxy(backing, redis_timeout=5)
    client = redis.Redis(port=proxy.resp_port, socket_timeout=10, single_connection_client=True)
    assert client.ping()
    answer: list[object] = []
    reader = threading.Thread(target=lambda: answer.append(client.get("slow")))
    backing.client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    reader.start()
    poll(lambda: proxy.metric("proxy_backend_requests_total") == 1, 5, "the RESP read in flight")
    exit_code = proxy.terminate()
    reader.join(10)
    assert answer == [b"worth the wait"]
    assert exit_code == 0
    assert_clean_stop(proxy)
    assert refuses_connections(proxy.resp_port)


def test_access_durations_run_to_the_last_byte_sent(start_proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"x" * (5 * 1024 * 1024))
    proxy = start_proxy(redis_server, cache_max_item_bytes=8 * 1024 * 1024)
    for outcome in ("miss", "hit"):  # through Flask on a thread, then on the loop
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect(("127.0.0.1", proxy.port))
            sock.sendall(f"GET /get/{key()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(1)  # the behaviour under test: a client that reads nothing for 1 s
            received = 0
            while received < 5 * 1024 * 1024:
                received += len(sock.recv(1 << 20))
        assert proxy.metric("proxy_requests_total", protocol="http", outcome=outcome) == 1
    durations = [
        float(found)
        for found in re.findall(
            r"GET /get/<key [^>]*> status=200 outcome=\w+ bytes=5242880 duration_ms=([\d.]+)",
            proxy.log(),
        )
    ]
    assert len(durations) == 2
    assert min(durations) >= 900, durations  # written as the client read, not when queued
