"""HTTP front end: `GET /get/<key>` answered from the shared read-through cache."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes, urlsplit

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from proxy.backend import Backend
from proxy.cache import ReadThroughCache
from proxy.config import Settings
from proxy.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidKey,
    KeyTooLong,
    ProxyError,
    WrongType,
)

MAX_KEY_BYTES = 2048  # fully percent-encoded it still fits Gunicorn's 8190-byte request line
GET_PREFIX = "/get/"
CACHE_EXTENSION = "redis_cache_proxy.cache"

# The error map: a typed error -> (HTTP status, short code for the JSON body). Looked up along
# the exception's MRO, so the most specific row wins.
ERROR_MAP: dict[type[ProxyError], tuple[int, str]] = {
    KeyTooLong: (414, "key_too_long"),
    InvalidKey: (400, "invalid_key"),
    WrongType: (409, "wrong_type"),
    BackendTimeout: (504, "backend_timeout"),
    BackendUnavailable: (503, "backend_unavailable"),
    BackendError: (502, "backend_error"),
}
RETRY_AFTER_SECONDS = "1"


class _AnyPath(BaseConverter):
    """Matches anything, even empty or with leading slashes; the key comes from the raw URI."""

    regex = r"[\s\S]*"  # "." would stop at a %0A that Werkzeug already decoded to "\n"
    part_isolating = False


def key_from_uri(raw_uri: str) -> bytes:
    """The key bytes from a raw request target such as `/get/a%2Fb?x` (-> b"a/b")."""
    if not raw_uri.startswith("/"):  # absolute-form target: http://host/get/...
        raw_uri = urlsplit(raw_uri).path
    encoded = raw_uri.partition("?")[0][len(GET_PREFIX) :]
    if len(encoded) > 3 * MAX_KEY_BYTES:  # too long even if every byte were %XX
        raise KeyTooLong(f"the key is longer than {MAX_KEY_BYTES} bytes")
    key = unquote_to_bytes(encoded)
    if not key:
        raise InvalidKey("the key is empty")
    if len(key) > MAX_KEY_BYTES:
        raise KeyTooLong(f"the key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _error_body(status: int, code: str, detail: str) -> tuple[Response, int]:
    response = jsonify(error=code, detail=detail)
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response, status


def _proxy_error(exc: ProxyError) -> tuple[Response, int]:
    status, code = next(ERROR_MAP[cls] for cls in type(exc).__mro__ if cls in ERROR_MAP)
    return _error_body(status, code, str(exc))


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    return _error_body(status, exc.name.lower().replace(" ", "_"), exc.description or exc.name)


def cache_of(app: Flask) -> ReadThroughCache:
    """The cache an app built by create_app() reads through (the RESP front end shares it)."""
    return app.extensions[CACHE_EXTENSION]


def create_app(settings: Settings | None = None, cache: ReadThroughCache | None = None) -> Flask:
    """Wire the HTTP app over one cache (built from `settings` unless given)."""
    if cache is None:
        settings = settings or Settings.load()
        backend = Backend(settings.redis_url, settings.redis_timeout)
        cache = ReadThroughCache(settings.cache_maxsize, settings.cache_ttl, backend.get)
    app = Flask(__name__)
    app.extensions[CACHE_EXTENSION] = cache
    # Keys may contain "//" and leading "/": never merge slashes or redirect.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.converters["anypath"] = _AnyPath
    app.register_error_handler(ProxyError, _proxy_error)
    app.register_error_handler(HTTPException, _http_error)

    @app.get(GET_PREFIX + "<anypath:_path>")
    def get_key(_path: str) -> Response | tuple[Response, int]:
        # Werkzeug has already decoded %2F and replaced invalid UTF-8 in `_path`.
        environ = request.environ
        key = key_from_uri(environ.get("RAW_URI") or environ.get("REQUEST_URI", ""))
        value = cache.lookup(key)
        if value is None:
            return _error_body(404, "not_found", "no such key in Redis")
        return Response(value, mimetype="application/octet-stream")

    return app
