"""HTTP front end: `GET /get/<key>` answered from the shared read-through cache."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

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
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import Recorder, read_outcome
from proxy.runtime import BackingStore, Runtime

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_KEY_BYTES = 2048  # fully percent-encoded it still fits Gunicorn's 8190-byte request line
GET_PREFIX = "/get/"
VALUE_TYPE = "application/octet-stream"
HIT_METHODS = frozenset(("GET", "HEAD"))  # the methods the /get/ route answers
RUNTIME_EXTENSION = "redis_cache_proxy.runtime"
OUTCOME = "redis_cache_proxy.outcome"  # WSGI environ keys the view leaves for Accounting
KEY = "redis_cache_proxy.key"
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


def key_of(environ: WSGIEnvironment) -> bytes:
    """The key a `/get/` request names, from its raw request target (see key_from_uri)."""
    return key_from_uri(environ.get("RAW_URI") or environ.get("REQUEST_URI", ""))


def value_headers(value: bytes) -> list[tuple[str, str]]:
    """The headers of a 200 answer carrying `value`."""
    return [("Content-Type", VALUE_TYPE), ("Content-Length", str(len(value)))]


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
    app = Flask(__name__, static_folder=None)  # no /static route to match on every request
    app.extensions[RUNTIME_EXTENSION] = runtime
    # Keys may contain "//" and leading "/": never merge slashes or redirect.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.converters["anypath"] = _AnyPath
    app.register_error_handler(ProxyError, _proxy_error)
    app.register_error_handler(HTTPException, _http_error)
    app.wsgi_app = Accounting(  # type: ignore[method-assign]
        HitPath(app.wsgi_app, runtime.cache), runtime.metrics.requests["http"], settings.access_log
    )

    @app.get(GET_PREFIX + "<anypath:_path>")
    def get_key(_path: str) -> Response | tuple[Response, int]:
        # Werkzeug has already decoded %2F and replaced invalid UTF-8 in `_path`.
        environ = request.environ
        environ[OUTCOME] = "error"  # until the lookup says otherwise
        key = environ[KEY] = key_of(environ)
        value, hit = runtime.cache.lookup(key)  # hit: another request stored it since HitPath
        environ[OUTCOME] = read_outcome(value, hit)
        if value is None:
            return _error_body(404, "not_found", "no such key in Redis")
        return Response(value, headers=value_headers(value))

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


class HitPath:
    """WSGI middleware: answers `GET /get/<key>` cache hits itself, and the rest through Flask.

    A hit is one locked dict lookup (~5 µs in-process with everything around it), yet Flask
    wrapped it in a request context, a Request, Werkzeug's routing and a Response (~95 µs),
    which made hits slower than a minimal Flask app answering a constant. Misses, absent keys,
    bad keys and every other route and method still go through Flask, where the error map and
    the fetching view are.
    """

    def __init__(self, flask_app: WSGIApplication, cache: ReadThroughCache) -> None:
        self.flask_app = flask_app
        self.cache = cache

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method in HIT_METHODS and environ.get("PATH_INFO", "").startswith(GET_PREFIX):
            value = self._cached(environ)
            if value is not None:
                environ[OUTCOME] = "hit"
                start_response("200 OK", value_headers(value))
                return (value,) if method == "GET" else ()
        return self.flask_app(environ, start_response)

    def _cached(self, environ: WSGIEnvironment) -> bytes | None:
        try:
            key = environ[KEY] = key_of(environ)
        except ProxyError:
            return None  # Flask's view raises it again, and the error map answers
        return self.cache.cached(key)


class Accounting:
    """WSGI middleware: times each request, counts reads by outcome, writes the access line.

    Plain WSGI rather than Flask hooks: it sees the hits HitPath answers, which never reach
    Flask, and per request it costs a closure, not Flask's hook dispatch and a dozen
    context-local lookups.
    """

    def __init__(self, wsgi_app: WSGIApplication, stats: Recorder, access_log: str) -> None:
        self.wsgi_app = wsgi_app
        self.stats = stats
        self.access_log = access_log

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        sent: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info=None):
            sent.append((status, headers))
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, capture)
        seconds = time.perf_counter() - started
        outcome = environ.get(OUTCOME)
        if outcome is not None:
            self.stats.record(outcome, seconds)
        quiet = self.access_log == "off" or environ.get("PATH_INFO") in QUIET_PATHS
        if sent and not quiet and access.isEnabledFor(logging.INFO):
            self._log(environ, *sent[-1], seconds)
        return body

    def _log(
        self, environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]], seconds: float
    ) -> None:
        size = next((value for name, value in headers if name.lower() == "content-length"), "0")
        access.info(
            "%s %s status=%s bytes=%s duration_ms=%.2f",
            environ.get("REQUEST_METHOD"),
            _logged_target(self.access_log, environ),
            status.split(" ", 1)[0],
            size,
            seconds * 1000,
        )


def _logged_target(access_log: str, environ: WSGIEnvironment) -> str:
    """The request target as the access log shows it: keys hashed unless ACCESS_LOG=raw."""
    key = environ.get(KEY)
    if access_log == "raw" or key is None:
        return environ.get("RAW_URI") or environ.get("PATH_INFO", "")
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
