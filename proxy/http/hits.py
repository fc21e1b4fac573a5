"""The HTTP hit path: `GET /get/<key>` cache hits answered in front of Flask.

A hit needs one locked map lookup; Flask would wrap it in a request context, a Request,
Werkzeug's routing and a Response, which cost far more than the lookup. So hits are answered
here, with the view's exact status, headers and body. Misses, absent keys, bad keys and every
other route and method go on to Flask, where the fetching view and the one error map are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from proxy.access import Access
from proxy.cache import Read, ReadThroughCache
from proxy.errors import ProxyError
from proxy.http.accounting import KEY, OUTCOME
from proxy.http.keys import GET_PREFIX, key_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

VALUE_TYPE = "application/octet-stream"
HIT_METHODS = frozenset(("GET", "HEAD"))  # the methods the /get/ route answers
# RFC 9211 Cache-Status, on every /get/ answer: how the cache handled the read
# (the README's "HTTP interface" lists every value).
CACHE_STATUS = "Cache-Status"
CACHE_NAME = "redis-cache-proxy"
HIT_STATUS = f"{CACHE_NAME}; hit"  # answered from the cache (a value, or a key known absent)
MISS_STATUS = f"{CACHE_NAME}; fwd=miss"  # asked Redis, which failed: an error answer
BYPASS_STATUS = f"{CACHE_NAME}; fwd=bypass"  # never reached the cache: a bad key or method


def cache_status(found: Read) -> str:
    """The Cache-Status of an answer from `found`: a hit, or forwarded to Redis (a miss, or a
    stale entry answered because Redis failed), and whether it was stored and collapsed."""
    if found.hit:
        return HIT_STATUS
    params = [CACHE_NAME, "fwd=stale" if found.stale else "fwd=miss"]
    if found.stored:
        params.append("stored")
    if found.collapsed:
        params.append("collapsed")
    if found.stale:
        params.append("detail=stale-if-error")
    return "; ".join(params)


def value_headers(value: bytes, status: str = HIT_STATUS) -> list[tuple[str, str]]:
    """The headers of a 200 answer carrying `value`, with its Cache-Status."""
    return [
        ("Content-Type", VALUE_TYPE),
        ("Content-Length", str(len(value))),
        (CACHE_STATUS, status),
    ]


class HitPath:
    """WSGI middleware: answers `/get/<key>` cache hits itself, and the rest through Flask.

    It decodes the key once and leaves it in the environ (KEY) for the view and the access
    log; a key that does not decode is left to the view, which raises the error again.
    """

    def __init__(self, flask_app: WSGIApplication, cache: ReadThroughCache, access: Access) -> None:
        self.flask_app = flask_app
        self.cache = cache
        self.access = access

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method in HIT_METHODS and environ.get("PATH_INFO", "").startswith(GET_PREFIX):
            value = self._peek(environ)
            if value is not None:
                environ[OUTCOME] = "hit"
                start_response("200 OK", value_headers(value))
                return (value,) if method == "GET" else ()
        return self.flask_app(environ, start_response)

    def _peek(self, environ: WSGIEnvironment) -> bytes | None:
        """The cached value, if the request may read it; None leaves it to Flask."""
        access = self.access
        if access.required and not access.authorizes(environ.get("HTTP_AUTHORIZATION")):
            return None  # Flask's guard answers 401
        try:
            key = environ[KEY] = key_of(environ)
        except ProxyError:
            return None  # Flask's view raises it again, and the error map answers
        if access.key_allowed is not None and not access.key_allowed(key):
            return None  # Flask's view raises ForbiddenKey
        return self.cache.peek(key)
