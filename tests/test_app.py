"""The HTTP adapter: key decoding from the raw URI and the error map, over a fake fetch."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from proxy import errors
from proxy.app import ERROR_MAP, MAX_KEY_BYTES, create_app
from proxy.cache import ReadThroughCache


class RecordingFetch:
    """Answers from a dict, raises a chosen error, and records the keys asked for."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.error: Exception | None = None
        self.keys: list[bytes] = []

    def __call__(self, key: bytes) -> bytes | None:
        self.keys.append(key)
        if self.error is not None:
            raise self.error
        return self.data.get(key)


@pytest.fixture
def fetch() -> RecordingFetch:
    return RecordingFetch()


@pytest.fixture
def client(fetch: RecordingFetch) -> FlaskClient:
    cache = ReadThroughCache(maxsize=100, ttl=60, fetch=fetch)
    return create_app(cache=cache).test_client()


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


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_other_methods_are_405(client: FlaskClient, method: str) -> None:
    response = getattr(client, method)("/get/k")
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"


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
    assert (response.status_code, response.json["error"]) == (status, code)
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


def _subclasses(cls: type) -> set[type]:
    direct = set(cls.__subclasses__())
    return direct.union(*(_subclasses(sub) for sub in direct))


def test_every_proxy_error_has_a_row_in_the_error_map() -> None:
    for cls in _subclasses(errors.ProxyError):
        assert any(base in ERROR_MAP for base in cls.__mro__), cls


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nowhere")
    assert (response.status_code, response.json["error"]) == (404, "not_found")
