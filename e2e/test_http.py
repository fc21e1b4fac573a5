"""Black box: HTTP client on one side, the production proxy and a real Redis on the other."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote_from_bytes

import pytest
import requests

from harness.servers import poll

pytestmark = pytest.mark.usefixtures("redis_server")


@pytest.fixture
def proxy(start_proxy, redis_server):
    return start_proxy(redis_server)


def path_for(key: bytes | str) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return "/get/" + quote_from_bytes(raw, safe="")


def test_round_trip(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"hello")
    response = proxy.get(path_for(key()))
    assert response.status_code == 200
    assert response.content == b"hello"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_absent_key_is_404_json(proxy, key) -> None:
    response = proxy.get(path_for(key("never-set")))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert response.headers["Cache-Status"] == "redis-cache-proxy; fwd=miss"  # not remembered


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff\x80binary\r\n", "многобайтовый ✓ 値".encode(), bytes(range(256)) * 20480],
    ids=["empty", "binary", "multibyte", "5MB"],
)
def test_values_come_back_byte_for_byte(proxy, redis_server, key, value: bytes) -> None:
    redis_server.client.set(key(), value)
    response = proxy.get(path_for(key()))
    assert response.status_code == 200
    assert response.content == value
    assert response.headers["Content-Length"] == str(len(value))


@pytest.mark.parametrize(
    "suffix",
    [b"a/b", b"with space", b"100%", b"/leading", b"caf\xc3\xa9", b"\xff\x00x", b"q?#&="],
    ids=["slash", "space", "percent", "leading-slash", "utf8", "non-utf8", "reserved"],
)
def test_keys_are_binary_safe(proxy, redis_server, key, suffix: bytes) -> None:
    full_key = key().encode() + suffix
    redis_server.client.set(full_key, b"value of " + full_key)
    response = proxy.get(path_for(full_key), allow_redirects=False)
    assert (response.status_code, response.content) == (200, b"value of " + full_key)


def test_leading_slash_key_does_not_redirect(proxy, redis_server) -> None:
    redis_server.client.set(b"/rooted", b"no redirect")
    response = proxy.get("/get//rooted", allow_redirects=False)
    assert (response.status_code, response.content) == (200, b"no redirect")


def test_head_returns_length_without_body(proxy, redis_server, key) -> None:
    redis_server.client.set(key(), b"12345")
    response = requests.head(proxy.url + path_for(key()), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "5"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_hit_is_answered_as_the_miss_before_it_but_for_its_cache_status(
    proxy, redis_server, key, method
) -> None:
    redis_server.client.set(key(), b"first")
    miss = requests.request(method, proxy.url + path_for(key()), timeout=10)
    redis_server.client.set(key(), b"second!")  # only a cached answer is 5 bytes long
    hit = requests.request(method, proxy.url + path_for(key()), timeout=10)
    del miss.headers["Date"], hit.headers["Date"]
    assert miss.headers["Cache-Status"] == "redis-cache-proxy; fwd=miss; stored"
    assert hit.headers["Cache-Status"] == "redis-cache-proxy; hit"
    miss.headers["Cache-Status"] = hit.headers["Cache-Status"]
    assert (hit.status_code, hit.headers, hit.content) == (
        miss.status_code,
        miss.headers,
        miss.content,
    )
    assert hit.headers["Content-Length"] == "5"  # len("first"), so from the cache


def test_other_methods_are_405(proxy, key) -> None:
    response = requests.post(proxy.url + path_for(key()), timeout=10)
    assert response.status_code == 405
    assert response.headers["Cache-Status"] == "redis-cache-proxy; fwd=bypass"


def test_empty_key_is_400(proxy) -> None:
    assert proxy.get("/get/").status_code == 400


def test_key_over_the_limit_is_414_and_the_limit_itself_works(proxy, redis_server) -> None:
    longest = bytes(range(256)) * 8  # 2048 bytes, every one of them %-encoded on the wire
    redis_server.client.set(longest, b"long key ok")
    assert proxy.get(path_for(longest)).content == b"long key ok"
    assert proxy.get(path_for(longest + b"x")).status_code == 414


def test_request_line_beyond_gunicorn_limit_is_414(proxy) -> None:
    assert proxy.get("/get/" + "k" * 9000).status_code == 414


def send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_raw_non_ascii_in_the_url_is_400_and_the_proxy_keeps_serving(
    proxy, redis_server, key
) -> None:
    answer = send_raw(proxy.port, b"GET /get/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    redis_server.client.set(key(), b"still here")
    assert proxy.get(path_for(key())).content == b"still here"


def test_key_holding_a_list_is_409_naming_the_problem(proxy, redis_server, key) -> None:
    redis_server.client.rpush(key(), b"item")
    response = proxy.get(path_for(key()))
    assert response.status_code == 409
    assert response.json()["error"] == "wrong_type"
    assert "non-string" in response.json()["detail"]


def test_cached_value_survives_a_change_until_ttl_then_the_new_value_shows(
    start_proxy, redis_server, key
) -> None:
    ttl = 1.0
    proxy = start_proxy(redis_server, cache_ttl=ttl)
    redis_server.client.set(key(), b"old")
    inserted_no_earlier_than = time.monotonic()
    assert proxy.get(path_for(key())).content == b"old"
    redis_server.client.set(key(), b"new")
    seen: list[tuple[float, bytes]] = []

    def new_value_visible() -> bool:
        seen.append((time.monotonic(), proxy.get(path_for(key())).content))
        return seen[-1][1] == b"new"

    poll(new_value_visible, deadline=ttl + 2, what="the new value after the TTL")
    first_new = seen[-1][0]
    assert first_new - inserted_no_earlier_than >= ttl
    assert all(value == b"old" for _, value in seen[:-1])
    assert len(seen) > 1  # the old value was served at least once after the change


def read_is_hit(proxy, redis_server, name: str) -> bool:
    """Read through the proxy; a hit is a read that caused no GET on Redis."""
    before = redis_server.get_calls()
    assert proxy.get(path_for(name)).status_code == 200
    return bool(redis_server.get_calls() == before)


def test_eviction_is_least_recently_read_not_first_in(start_proxy, redis_server, key) -> None:
    proxy = start_proxy(redis_server, cache_maxsize=3)
    for name in ("a", "b", "c", "d"):
        redis_server.client.set(key(name), name)
    for name in ("a", "b", "c", "a", "d"):  # reading a again makes b the least recent
        proxy.get(path_for(key(name)))
    # Hits first (they evict nothing), then the one expected miss.
    assert read_is_hit(proxy, redis_server, key("a"))
    assert read_is_hit(proxy, redis_server, key("c"))
    assert read_is_hit(proxy, redis_server, key("d"))
    assert not read_is_hit(proxy, redis_server, key("b"))


def test_capacity_in_keys_is_held(start_proxy, redis_server, key) -> None:
    proxy = start_proxy(redis_server, cache_maxsize=5)
    names = [key(str(i)) for i in range(10)]
    for name in names:
        redis_server.client.set(name, name)
        proxy.get(path_for(name))
    assert all(read_is_hit(proxy, redis_server, name) for name in names[5:])
    assert not any(read_is_hit(proxy, redis_server, name) for name in names[:5])


def test_fifty_concurrent_clients_all_get_correct_values(start_proxy, redis_server, key) -> None:
    proxy = start_proxy(redis_server, cache_maxsize=40, max_connections=60)
    names = [key(str(i)) for i in range(120)]
    for name in names:
        redis_server.client.set(name, b"v:" + name.encode())

    def client(offset: int) -> list[str]:
        wrong = []
        with requests.Session() as session:
            for i in range(40):
                name = names[(offset * 7 + i) % len(names)]
                response = session.get(proxy.url + path_for(name), timeout=30)
                if (response.status_code, response.content) != (200, b"v:" + name.encode()):
                    wrong.append(f"{name}: {response.status_code} {response.content[:40]!r}")
        return wrong

    with ThreadPoolExecutor(max_workers=50) as pool:
        problems = [p for wrong in pool.map(client, range(50)) for p in wrong]
    assert problems == []
