"""The HTTP app: `GET /get/<key>` from the shared read-through cache, probes and /metrics.

create_app() receives built parts (the composition root, proxy/service.py, builds them) and
only wires routes, the error map and the two middlewares around Flask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter

from proxy.access import Access
from proxy.cache import ReadThroughCache
from proxy.errors import (
    AccessDenied,
    AuthRequired,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ForbiddenKey,
    InvalidKey,
    KeyTooLong,
    ProxyError,
    WrongPassword,
    WrongType,
)
from proxy.http.accounting import KEY, OUTCOME, Accounting
from proxy.http.hits import (
    BYPASS_STATUS,
    CACHE_STATUS,
    MISS_STATUS,
    HitPath,
    cache_status,
    value_headers,
)
from proxy.http.keys import GET_PREFIX, key_of
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import Recorder

# The error map: a typed error -> (HTTP status, short code for the JSON body, Cache-Status).
# Looked up along the exception's MRO, so the most specific row wins.
ERROR_MAP: dict[type[ProxyError], tuple[int, str, str]] = {
    AuthRequired: (401, "auth_required", BYPASS_STATUS),
    WrongPassword: (401, "wrong_password", BYPASS_STATUS),
    ForbiddenKey: (403, "forbidden_key", BYPASS_STATUS),
    AccessDenied: (403, "forbidden", BYPASS_STATUS),
    KeyTooLong: (414, "key_too_long", BYPASS_STATUS),
    InvalidKey: (400, "invalid_key", BYPASS_STATUS),
    WrongType: (409, "wrong_type", MISS_STATUS),
    BackendTimeout: (504, "backend_timeout", MISS_STATUS),
    BackendUnavailable: (503, "backend_unavailable", MISS_STATUS),
    BackendError: (502, "backend_error", MISS_STATUS),
}
RETRY_AFTER_SECONDS = "1"
# What a 401 asks for: the password as a Bearer token, or as Basic's password.
CHALLENGE = 'Bearer realm="redis-cache-proxy", Basic realm="redis-cache-proxy"'
# Routes open without the password: probes must work for whatever runs them.
OPEN_PATHS = frozenset(("/livez", "/readyz"))
ALLOWED_METHODS = "GET, HEAD"  # on every route; anything else (OPTIONS too) is a 405
Answer = Response | tuple[Response, int]


class _AnyPath(BaseConverter):
    """Matches anything, even empty or with leading slashes; the key comes from the raw URI."""

    regex = r"[\s\S]*"  # "." would stop at a %0A that Werkzeug already decoded to "\n"
    part_isolating = False


def _error_body(
    status: int, code: str, detail: str, cache: str | None = None
) -> tuple[Response, int]:
    """A JSON error answer; `cache` is its Cache-Status, on /get/ answers."""
    response = jsonify(error=code, detail=detail)
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    elif status == 401:
        response.headers["WWW-Authenticate"] = CHALLENGE
    if cache is not None:
        response.headers[CACHE_STATUS] = cache
    return response, status


def _proxy_error(exc: ProxyError) -> tuple[Response, int]:
    status, code, cache = next(ERROR_MAP[cls] for cls in type(exc).__mro__ if cls in ERROR_MAP)
    on_get = request.path.startswith(GET_PREFIX)  # not a 401 for /metrics
    return _error_body(status, code, str(exc), cache if on_get else None)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    on_get = request.path.startswith(GET_PREFIX)  # e.g. a POST to /get/<key>
    response, _ = _error_body(
        status,
        exc.name.lower().replace(" ", "_"),
        exc.description or exc.name,
        BYPASS_STATUS if on_get else None,
    )
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # RFC 9110 requires `Allow`
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # a stable order
    return response, status


def _options_for_the_server() -> Response | None:
    """`OPTIONS *` asks what the server as a whole allows: the methods of its routes."""
    if request.method == "OPTIONS" and request.environ.get("RAW_URI") == "*":
        answer = Response(status=204, headers={"Allow": ALLOWED_METHODS})
        del answer.headers["Content-Type"]  # no body, so no type
        return answer
    return None


def create_app(
    cache: ReadThroughCache,
    *,
    requests: Recorder,
    check_ready: Callable[[], Mapping[str, str]],
    exposition: Callable[[], bytes],
    access_log: str,
    access: Access,
) -> Flask:
    """The HTTP front end over `cache`. `check_ready` raises BackendError when Redis does not
    answer, else returns what /readyz adds to its answer; `exposition` renders /metrics;
    reads are recorded into `requests`; `access` says who may read what."""
    app = Flask(__name__, static_folder=None)  # no /static route to match on every request
    # OPTIONS is a 405 with `Allow` like any method the proxy does not serve, not Flask's
    # automatic empty 200 (text/html).
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    @app.before_request
    def guard() -> None:
        if access.required and request.path not in OPEN_PATHS:
            access.check_http(request.headers.get("Authorization"))

    def refused(exc: AccessDenied) -> tuple[Response, int]:
        access.refused("http", exc.reason, request.remote_addr)
        return _proxy_error(exc)

    app.before_request(_options_for_the_server)
    # Keys may contain "//" and leading "/": never merge slashes or redirect.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.converters["anypath"] = _AnyPath
    app.register_error_handler(ProxyError, _proxy_error)
    app.register_error_handler(AccessDenied, refused)
    app.register_error_handler(HTTPException, _http_error)
    # Flask's documented way to add WSGI middleware; mypy sees a method being replaced.
    front = Accounting(HitPath(app.wsgi_app, cache, access), requests, access_log)
    app.wsgi_app = front  # type: ignore[method-assign]

    @app.get(GET_PREFIX + "<anypath:_path>")
    def get_key(_path: str) -> Answer:
        # The hit path missed: look the key up (this may wait on Redis).
        environ = request.environ
        environ[OUTCOME] = "error"  # until the lookup says otherwise
        key = environ[KEY] if KEY in environ else key_of(environ)
        access.check_key(key)
        found = cache.lookup(key)
        environ[OUTCOME] = found.outcome
        status = cache_status(found)
        if found.value is None:
            return _error_body(404, "not_found", "no such key in Redis", status)
        return Response(found.value, headers=value_headers(found.value, status))

    @app.get("/livez")
    def livez() -> Response:
        # Never touches Redis: a Redis blip must not get every proxy restarted.
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> Answer:
        try:
            state = check_ready()
        except BackendError as exc:
            return _error_body(503, "not_ready", str(exc))
        return jsonify(status="ready", **state)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(), content_type=METRICS_CONTENT_TYPE)

    return app
