"""HTTP front end: `GET /get/<key>` answered from the shared read-through cache."""

from __future__ import annotations

import hashlib
import logging
import time
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

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
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import RequestStats
from proxy.runtime import BackingStore, Runtime

MAX_KEY_BYTES = 2048  # fully percent-encoded it still fits Gunicorn's 8190-byte request line
GET_PREFIX = "/get/"
RUNTIME_EXTENSION = "redis_cache_proxy.runtime"
QUIET_PATHS = frozenset(("/livez", "/readyz", "/metrics"))  # probes: no access-log noise

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
access = logging.getLogger("proxy.access")


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


def runtime_of(app: Flask) -> Runtime:
    """The runtime an app built by create_app() serves from (gunicorn.conf.py's hooks use it)."""
    return app.extensions[RUNTIME_EXTENSION]


def create_app(settings: Settings | None = None, backend: BackingStore | None = None) -> Flask:
    """Wire the HTTP app and the worker's runtime (a real Backend unless one is given)."""
    settings = settings or Settings.load()
    _send_logs_where_gunicorn_does(settings.log_level)
    runtime = Runtime.build(settings, backend)
    app = Flask(__name__)
    app.extensions[RUNTIME_EXTENSION] = runtime
    # Keys may contain "//" and leading "/": never merge slashes or redirect.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.converters["anypath"] = _AnyPath
    app.register_error_handler(ProxyError, _proxy_error)
    app.register_error_handler(HTTPException, _http_error)
    _add_accounting(app, runtime.metrics.requests["http"], settings.access_log)

    @app.get(GET_PREFIX + "<anypath:_path>")
    def get_key(_path: str) -> Response | tuple[Response, int]:
        # Werkzeug has already decoded %2F and replaced invalid UTF-8 in `_path`.
        g.outcome = "error"  # until the lookup says otherwise
        environ = request.environ
        g.key = key_from_uri(environ.get("RAW_URI") or environ.get("REQUEST_URI", ""))
        value, hit = runtime.cache.lookup(g.key)
        if value is None:
            g.outcome = "not_found"
            return _error_body(404, "not_found", "no such key in Redis")
        g.outcome = "hit" if hit else "miss"
        return Response(value, mimetype="application/octet-stream")

    @app.get("/livez")
    def livez() -> Response:
        # Never touches Redis: a Redis blip must not get every proxy restarted.
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> Response | tuple[Response, int]:
        try:
            runtime.backend.ping()
        except BackendError as exc:
            return _error_body(503, "not_ready", str(exc))
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(runtime.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)

    return app


def _add_accounting(app: Flask, stats: RequestStats, access_log: str) -> None:
    """Time every request; count reads by outcome; write one access line (probes excepted)."""

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def account(response: Response) -> Response:
        seconds = time.perf_counter() - g.started
        if "outcome" in g:
            stats.record(g.outcome, seconds)
        if access_log != "off" and request.path not in QUIET_PATHS:
            target = _logged_target(access_log, g.get("key"))
            size = response.content_length or 0
            access.info(
                "%s %s status=%d bytes=%d duration_ms=%.2f",
                request.method,
                target,
                response.status_code,
                size,
                seconds * 1000,
            )
        return response


def _logged_target(access_log: str, key: bytes | None) -> str:
    """The request target as the access log shows it: keys hashed unless ACCESS_LOG=raw."""
    if access_log == "raw" or key is None:
        return request.environ.get("RAW_URI") or request.path
    digest = hashlib.blake2b(key, digest_size=8).hexdigest()
    return f"{GET_PREFIX}<key blake2b:{digest} len={len(key)}>"


def _send_logs_where_gunicorn_does(level: str) -> None:
    """The proxy's loggers use Gunicorn's handlers (format, stream) at LOG_LEVEL."""
    proxy_log = logging.getLogger("proxy")
    proxy_log.setLevel(level.upper())
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers and not proxy_log.handlers:
        for handler in gunicorn_log.handlers:
            proxy_log.addHandler(handler)
        proxy_log.propagate = False
