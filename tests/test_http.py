"""The HTTP front end: key decoding from the raw URI, the hit path, the error map, probes,
metrics and the access log, over a real cache whose Redis is a fake."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import TestResponse

from proxy import errors
from proxy.access import Access
from proxy.cache import Read, ReadThroughCache
from proxy.http import create_app
from proxy.http.app import ERROR_MAP
from proxy.http.hits import cache_status
from proxy.http.keys import MAX_KEY_BYTES
from proxy.metrics import Metrics


class RecordingFetch:
    """A fake backing store: answers from a dict, raises a chosen error, records the keys."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.error: Exception | None = None
        self.keys: list[bytes] = []

    def get(self, key: bytes) -> tuple[bytes | None, None]:
        self.keys.append(key)
        if self.error is not None:
            raise self.error
        return self.data.get(key), None

    def ping(self) -> dict[str, str]:
        if self.error is not None:
            raise self.error
        return {}


def error_code(response: TestResponse) -> str:
    """The `error` field of a JSON error body."""
    assert response.json is not None
    return str(response.json["error"])


@pytest.fixture
def fetch() -> RecordingFetch:
    return RecordingFetch()


def make_app(
    fetch: RecordingFetch,
    access_log: str = "hashed",
    access: Access | None = None,
    **options: Any,
) -> Flask:
    """The app as the composition root wires it, over `fetch` instead of Redis; `options`
    go to the cache."""
    cache = ReadThroughCache(maxsize=10000, ttl=60, load=fetch.get, **options)
    metrics = Metrics(cache)
    return create_app(
        cache,
        requests=metrics.requests["http"],
        check_ready=fetch.ping,
        exposition=metrics.exposition,
        access_log=access_log,
        access=access or Access.open(),
    )


def make_client(fetch: RecordingFetch, access_log: str = "hashed") -> FlaskClient:
    return make_app(fetch, access_log).test_client()


@pytest.fixture
def client(fetch: RecordingFetch) -> FlaskClient:
    return make_client(fetch)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/get/plain", b"plain"),
        ("/get/a%2Fb", b"a/b"),
        ("/get/a/b/c", b"a/b/c"),
        ("/get//leading", b"/leading"),
        ("/get/sp%20ace", b"sp ace"),
        ("/get/100%25", b"100%"),
        ("/get/a+b", b"a+b"),
        ("/get/caf%C3%A9", "café".encode()),
        ("/get/%FF%00x", b"\xff\x00x"),
        ("/get/line%0Abreak%0D", b"line\nbreak\r"),
        ("/get/k?ignored=1", b"k"),
        ("/get/q%3Fmark", b"q?mark"),
    ],
)
def test_key_is_percent_decoded_from_the_raw_uri(
    client: FlaskClient, fetch: RecordingFetch, path: str, key: bytes
) -> None:
    fetch.data[key] = b"value"
    response = client.get(path)
    assert response.status_code == 200
    assert fetch.keys == [key]


def test_value_bytes_are_returned_exactly(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.data[b"bin"] = bytes(range(256))
    response = client.get("/get/bin")
    assert response.data == bytes(range(256))
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Length"] == "256"


def test_empty_value_is_200_with_zero_length(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.data[b"empty"] = b""
    response = client.get("/get/empty")
    assert (response.status_code, response.data) == (200, b"")
    assert response.headers["Content-Length"] == "0"


def test_absent_key_is_404_with_json(client: FlaskClient) -> None:
    response = client.get("/get/missing")
    assert response.status_code == 404
    assert response.json == {"error": "not_found", "detail": "no such key in Redis"}


def test_head_has_length_and_no_body(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.data[b"k"] = b"12345"
    response = client.head("/get/k")
    assert (response.status_code, response.data) == (200, b"")
    assert response.headers["Content-Length"] == "5"


@pytest.mark.parametrize("method", ["get", "head"])
def test_a_hit_is_answered_as_the_miss_before_it_but_for_its_cache_status(
    client: FlaskClient, fetch: RecordingFetch, method: str
) -> None:
    fetch.data[b"k"] = b"12345"
    miss, hit = (getattr(client, method)("/get/k") for _ in range(2))
    assert fetch.keys == [b"k"]  # fetched once: the second answer came from the cache
    assert miss.headers["Cache-Status"] == "redis-cache-proxy; fwd=miss; stored"
    miss.headers["Cache-Status"] = "redis-cache-proxy; hit"
    assert (hit.status, hit.headers.to_wsgi_list(), hit.data) == (
        miss.status,
        miss.headers.to_wsgi_list(),
        miss.data,
    )


def test_hits_are_answered_without_flask_dispatch(fetch: RecordingFetch) -> None:
    app = make_app(fetch)
    dispatched: list[str] = []
    app.before_request(lambda: dispatched.append(request.full_path))
    client = app.test_client()
    fetch.data[b"k"] = b"v"
    for path in ("/get/k", "/get/k", "/get/k?x=1", "/get/absent", "/get/absent"):
        assert client.get(path).status_code in (200, 404)
    assert dispatched == ["/get/k?", "/get/absent?", "/get/absent?"]  # misses only


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/get/k", "/livez"])
def test_other_methods_are_405_saying_what_is_allowed(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert response.headers["Allow"] == "GET, HEAD"


def test_options_for_the_whole_server_lists_its_methods(client: FlaskClient) -> None:
    response = client.open("*", method="OPTIONS")
    assert (response.status_code, response.data) == (204, b"")
    assert response.headers["Allow"] == "GET, HEAD"
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/get/", 400, "invalid_key"),
        ("/get/?only=query", 400, "invalid_key"),
        ("/get/" + "k" * (MAX_KEY_BYTES + 1), 414, "key_too_long"),
        ("/get/" + "%41" * (MAX_KEY_BYTES + 1), 414, "key_too_long"),
    ],
)
def test_bad_keys_are_rejected_before_redis(
    client: FlaskClient, fetch: RecordingFetch, path: str, status: int, code: str
) -> None:
    response = client.get(path)
    assert (response.status_code, error_code(response)) == (status, code)
    assert fetch.keys == []


def test_key_of_exactly_the_limit_is_accepted(client: FlaskClient, fetch: RecordingFetch) -> None:
    key = b"k" * MAX_KEY_BYTES
    fetch.data[key] = b"v"
    assert client.get("/get/" + key.decode()).status_code == 200


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.BackendUnavailable("cannot reach Redis"), 503, "backend_unavailable"),
        (errors.BackendTimeout("Redis did not answer within 1 s"), 504, "backend_timeout"),
        (errors.WrongType("the key holds a non-string value"), 409, "wrong_type"),
        (errors.BackendRejected("Redis refused the read (NOPERM)"), 502, "backend_error"),
    ],
)
def test_backend_errors_map_to_statuses(
    client: FlaskClient, fetch: RecordingFetch, error: Exception, status: int, code: str
) -> None:
    fetch.error = error
    response = client.get("/get/k")
    assert response.status_code == status
    assert response.json == {"error": code, "detail": str(error)}


def test_unavailable_backend_says_when_to_retry(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.error = errors.BackendUnavailable("cannot reach Redis")
    assert client.get("/get/k").headers["Retry-After"] == "1"


CACHE = "redis-cache-proxy"


@pytest.mark.parametrize(
    ("found", "status"),
    [
        (Read(b"v", True), f"{CACHE}; hit"),
        (Read(None, True), f"{CACHE}; hit"),
        (Read(b"v", False), f"{CACHE}; fwd=miss"),
        (Read(None, False), f"{CACHE}; fwd=miss"),
        (Read(b"v", False, stored=True), f"{CACHE}; fwd=miss; stored"),
        (Read(None, False, stored=True, collapsed=True), f"{CACHE}; fwd=miss; stored; collapsed"),
        (Read(b"v", False, stale=True), f"{CACHE}; fwd=stale; detail=stale-if-error"),
        (
            Read(b"v", False, collapsed=True, stale=True),
            f"{CACHE}; fwd=stale; collapsed; detail=stale-if-error",
        ),
    ],
)
def test_cache_status_says_how_a_read_was_answered(found: Read, status: str) -> None:
    assert cache_status(found) == status


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/get/absent", None, 404, f"{CACHE}; fwd=miss"),
        ("HEAD", "/get/absent", None, 404, f"{CACHE}; fwd=miss"),
        ("GET", "/get/k", errors.BackendUnavailable("down"), 503, f"{CACHE}; fwd=miss"),
        ("GET", "/get/k", errors.WrongType("a list"), 409, f"{CACHE}; fwd=miss"),
        ("GET", "/get/", None, 400, f"{CACHE}; fwd=bypass"),
        ("GET", "/get/" + "k" * (MAX_KEY_BYTES + 1), None, 414, f"{CACHE}; fwd=bypass"),
        ("POST", "/get/k", None, 405, f"{CACHE}; fwd=bypass"),
        ("GET", "/livez", None, 200, None),
        ("POST", "/livez", None, 405, None),
    ],
)
def test_every_answer_under_get_carries_a_cache_status(
    client: FlaskClient,
    fetch: RecordingFetch,
    case: tuple[str, str, Exception | None, int, str | None],
) -> None:
    method, path, fetch.error, status, cache = case
    response = client.open(path, method=method)
    assert (response.status_code, response.headers.get("Cache-Status")) == (status, cache)


def test_a_key_remembered_as_absent_is_a_404_hit(fetch: RecordingFetch) -> None:
    client = make_app(fetch, negative_ttl=30).test_client()
    first, second = client.get("/get/absent"), client.get("/get/absent")
    assert (first.status_code, first.headers["Cache-Status"]) == (404, f"{CACHE}; fwd=miss; stored")
    assert (second.status_code, second.headers["Cache-Status"]) == (404, f"{CACHE}; hit")
    assert fetch.keys == [b"absent"]


def test_a_stale_answer_is_a_200_that_says_it_is_stale(fetch: RecordingFetch) -> None:
    now = [0.0]
    client = make_app(fetch, timer=lambda: now[0], stale_if_error=30).test_client()
    fetch.data[b"k"] = b"last known"
    client.get("/get/k")
    now[0] = 61.0  # past CACHE_TTL (60 s), inside the stale window
    fetch.error = errors.BackendTimeout("slow")
    response = client.get("/get/k")
    assert (response.status_code, response.data) == (200, b"last known")
    assert response.headers["Cache-Status"] == f"{CACHE}; fwd=stale; detail=stale-if-error"


def _subclasses(cls: type) -> set[type]:
    direct: set[type] = set(cls.__subclasses__())
    return direct.union(*(_subclasses(sub) for sub in direct))


def test_every_proxy_error_has_a_row_in_the_error_map() -> None:
    for cls in _subclasses(errors.ProxyError):
        assert any(base in ERROR_MAP for base in cls.__mro__), cls


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nowhere")
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_livez_is_200_even_when_redis_is_down(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.error = errors.BackendUnavailable("cannot reach Redis")
    assert client.get("/livez").status_code == 200


def test_readyz_follows_redis(client: FlaskClient, fetch: RecordingFetch) -> None:
    assert client.get("/readyz").json == {"status": "ready"}
    fetch.error = errors.BackendTimeout("Redis did not answer within 1 s")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json == {"error": "not_ready", "detail": "Redis did not answer within 1 s"}


def metric(client: FlaskClient, name: str, **labels: str) -> float:
    """One sample's value from /metrics, parsed as Prometheus would."""
    text = client.get("/metrics").get_data(as_text=True)
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    [value] = [s.value for s in samples if s.name == name and s.labels == labels]
    return value


def test_metrics_count_reads_by_outcome(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.data[b"k"] = b"v"
    for path in ("/get/k", "/get/k", "/get/absent", "/get/"):
        client.get(path)
    for outcome in ("miss", "hit", "not_found", "error"):
        assert metric(client, "proxy_requests_total", protocol="http", outcome=outcome) == 1
    assert metric(client, "proxy_request_duration_seconds_count", protocol="http") == 4
    assert metric(client, "proxy_backend_requests_total") == 2
    assert metric(client, "proxy_cache_entries") == 1
    assert metric(client, "proxy_cache_capacity") == 10000


def test_metrics_count_backend_errors_by_kind(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.error = errors.BackendTimeout("slow")
    client.get("/get/k")
    assert metric(client, "proxy_backend_errors_total", kind="timeout") == 1
    assert metric(client, "proxy_backend_errors_total", kind="unavailable") == 0


def test_metrics_never_use_keys_as_labels(client: FlaskClient, fetch: RecordingFetch) -> None:
    fetch.data[b"secret-key-name"] = b"v"
    client.get("/get/secret-key-name")
    assert "secret-key-name" not in client.get("/metrics").get_data(as_text=True)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "proxy.access"]


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/get/absent", None, "not_found"),
        ("GET", "/get/k", errors.BackendUnavailable("down"), "error"),
        ("GET", "/get/", None, "error"),
        ("POST", "/get/k", None, "-"),
    ],
)
def test_the_access_line_names_the_outcome(
    client, fetch, caplog, case: tuple[str, str, Exception | None, str]
) -> None:
    method, path, fetch.error, outcome = case
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        client.open(path, method=method)
    [line] = access_lines(caplog)
    assert f" outcome={outcome} " in line


def test_access_log_hashes_keys_by_default(client, fetch, caplog) -> None:
    fetch.data[b"private"] = b"12345"
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        client.get("/get/private")
        client.get("/livez")
    [line] = access_lines(caplog)
    assert line.startswith("GET /get/<key blake2b:")
    assert "len=7> status=200 outcome=miss bytes=5 duration_ms=" in line
    assert "private" not in line


def test_access_log_shows_a_hit_as_it_showed_the_miss(client, fetch, caplog) -> None:
    fetch.data[b"private"] = b"12345"
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        client.get("/get/private")
        client.get("/get/private")
    miss, hit = (line.partition(" duration_ms=")[0] for line in access_lines(caplog))
    assert hit == miss.replace("outcome=miss", "outcome=hit")
    assert miss.endswith("status=200 outcome=miss bytes=5")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/get/private"),
        ("OPTIONS", "/get/private"),
        ("GET", "/get/private" + "x" * MAX_KEY_BYTES),  # 414: the view decoded no key
        ("GET", "/get/private?with=query"),
    ],
)
def test_access_log_hashes_keys_on_every_method_and_status(
    client, caplog, method: str, path: str
) -> None:
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        client.open(path, method=method)
    [line] = access_lines(caplog)
    assert line.startswith(f"{method} /get/<key blake2b:")
    assert "private" not in line


def test_access_log_raw_keys_when_asked(fetch, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        make_client(fetch, access_log="raw").get("/get/visible%2Fkey")
    assert access_lines(caplog)[0].startswith("GET /get/visible%2Fkey status=404")


def test_access_log_off(fetch, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        make_client(fetch, access_log="off").get("/get/k")
    assert access_lines(caplog) == []


SECURED = {"password": "s3cret", "patterns": ("user:*", "k")}
BEARER = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def secured(fetch: RecordingFetch) -> FlaskClient:
    access = Access(SECURED["password"], SECURED["patterns"], protected=False)  # type: ignore[arg-type]
    return make_app(fetch, access=access).test_client()


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "auth_required"), ({"Authorization": "Bearer wrong"}, "wrong_password")],
)
@pytest.mark.parametrize("path", ["/get/k", "/metrics", "/nowhere"])
def test_without_the_password_every_route_but_the_probes_is_401(
    secured, fetch, headers, code, path
) -> None:
    fetch.data[b"k"] = b"v"
    response = secured.get(path, headers=headers)
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="redis-cache-proxy"')
    assert ("Cache-Status" in response.headers) is path.startswith("/get/")
    assert fetch.keys == []


def test_the_probes_need_no_password(secured) -> None:
    assert secured.get("/livez").status_code == 200
    assert secured.get("/readyz").status_code == 200


def test_with_the_password_a_key_is_read_and_then_hit(secured, fetch) -> None:
    fetch.data[b"k"] = b"v"
    for status in ("fwd=miss; stored", "hit"):
        response = secured.get("/get/k", headers=BEARER)
        assert (response.status_code, response.data) == (200, b"v")
        assert response.headers["Cache-Status"].endswith(status)
    basic = {"Authorization": "Basic " + base64.b64encode(b"default:s3cret").decode()}
    assert secured.get("/get/k", headers=basic).status_code == 200
    assert secured.get("/metrics", headers=BEARER).status_code == 200


@pytest.mark.parametrize("key", ["secret", "user", "users:1", "k2"])
def test_a_key_outside_key_patterns_is_403_and_never_fetched(secured, fetch, key) -> None:
    response = secured.get(f"/get/{key}", headers=BEARER)
    assert (response.status_code, error_code(response)) == (403, "forbidden_key")
    assert response.headers["Cache-Status"] == "redis-cache-proxy; fwd=bypass"
    assert fetch.keys == []


def test_a_cached_key_is_403_too_when_patterns_exclude_it(fetch) -> None:
    cache_all = make_app(fetch, access=Access("", ("*",), protected=False)).test_client()
    fetch.data[b"secret"] = b"v"
    assert cache_all.get("/get/secret").status_code == 200
    narrowed = Access("", ("user:*",), protected=False)
    assert make_app(fetch, access=narrowed).test_client().get("/get/secret").status_code == 403


def test_refusals_are_counted_in_the_metrics(fetch) -> None:
    access = Access("s3cret", ("k",), protected=False)
    client = make_app(fetch, access=access).test_client()
    client.get("/get/k")
    client.get("/get/k", headers={"Authorization": "Bearer nope"})
    client.get("/get/other", headers=BEARER)
    assert access.refusals == {
        ("http", "no_password"): 1,
        ("http", "wrong_password"): 1,
        ("http", "forbidden_key"): 1,
    }
